// The wasm build against the native one, in Node: prefill logits (rel <= 1e-5 of the largest
// logit, against the native build at its detected level and at the scalar level) and a
// greedy reply streamed through Session.next (same text, same tokens).
//
// node check.mjs PKG_DIR IDS PROMPT NATIVE.safetensors NATIVE_SCALAR.safetensors NATIVE_GEN.json
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';

const [pkgDir, idsArg, prompt, nativePath, scalarPath, genPath] = process.argv.slice(2);
const require = createRequire(import.meta.url);
const { Session } = require(`${pkgDir}/web.js`);

function safetensorsF32(path, name) {
  const b = readFileSync(path);
  const n = Number(b.readBigUInt64LE(0));
  const header = JSON.parse(b.subarray(8, 8 + n).toString('utf8'));
  const t = header[name];
  if (!t || t.dtype !== 'F32') throw new Error(`${path}: no F32 tensor ${name}`);
  const [s, e] = t.data_offsets;
  const raw = b.subarray(8 + n + s, 8 + n + e);
  return new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.length));
}

let failed = false;
const check = (ok, what) => {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}`);
  if (!ok) failed = true;
};

const t0 = performance.now();
const s = new Session();
console.log(`session: level ${s.level()}, vocab ${s.vocabSize()}, loaded in ${(performance.now() - t0).toFixed(0)} ms`);

const ids = Uint32Array.from(idsArg.split(',').map(Number));
const got = s.logits(ids);
// the SIMD128 kernels against the portable ones, inside the same module
const scalar = new Session('scalar');
const gotScalar = scalar.logits(ids);
{
  let maxAbs = 0, maxDiff = 0;
  for (let i = 0; i < gotScalar.length; i++) {
    maxAbs = Math.max(maxAbs, Math.abs(gotScalar[i]));
    maxDiff = Math.max(maxDiff, Math.abs(got[i] - gotScalar[i]));
  }
  check(maxDiff / maxAbs <= 1e-5, `wasm ${s.level()} vs wasm scalar: ${(maxDiff / maxAbs).toExponential(2)} (<= 1e-5)`);
}
for (const [label, path] of [['native', nativePath], ['native scalar', scalarPath]]) {
  const want = safetensorsF32(path, 'logits');
  check(got.length === want.length, `${label}: ${want.length} logits (${ids.length} positions)`);
  let maxAbs = 0, maxDiff = 0;
  for (let i = 0; i < want.length; i++) {
    maxAbs = Math.max(maxAbs, Math.abs(want[i]));
    maxDiff = Math.max(maxDiff, Math.abs(got[i] - want[i]));
  }
  const rel = maxDiff / maxAbs;
  check(rel <= 1e-5, `${label}: max |wasm - native| / max |native| = ${rel.toExponential(2)} (<= 1e-5)`);
}

const gen = JSON.parse(readFileSync(genPath, 'utf8'));
const t1 = performance.now();
const n = s.start(prompt, false, gen.completion_tokens, 0, 1n);
check(n === gen.prompt_tokens, `prompt tokens ${n} = ${gen.prompt_tokens}`);
let text = '';
let steps = 0;
for (let piece = s.next(); piece !== undefined; piece = s.next()) {
  text += piece;
  steps++;
}
const secs = (performance.now() - t1) / 1000;
const tokens = Array.from(s.generated());
check(JSON.stringify(tokens) === JSON.stringify(gen.token_ids), `greedy tokens equal native (${tokens.length})`);
check(text === gen.text, `streamed text equals native: ${JSON.stringify(text)}`);
console.log(`wasm (Node, one thread): ${steps} tokens in ${secs.toFixed(2)} s, ${(steps / secs).toFixed(1)} tok/s including the prompt`);

// decode speed, each level: 128 tokens after a short prompt, the prompt's step excluded
for (const sess of [s, scalar]) {
  sess.start(prompt, false, 129, 0, 1n);
  sess.next();
  const t = performance.now();
  let k = 0;
  while (sess.next() !== undefined) k++;
  const dt = (performance.now() - t) / 1000;
  console.log(`decode in Node at ${sess.level()}: ${k} tokens, ${(k / dt).toFixed(1)} tok/s`);
}
process.exit(failed ? 1 : 0);
