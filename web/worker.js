// The model in a Web Worker: one token per turn of the event loop, so a "stop" message is
// seen between any two tokens. Turns are yielded through a MessageChannel, not setTimeout,
// which browsers clamp to 4 ms once nested (250 tokens/s at most).
//
// WebGPU: where navigator.gpu gives an adapter (and unless ?backend=cpu), the model runs on
// the GPU backend. WebGPU answers only between turns of the event loop, while the model's
// code is synchronous; JavaScript Promise Integration (JSPI) joins the two: the module's
// `deeprustYieldTurn` import becomes a WebAssembly.Suspending function that awaits one turn,
// and the exports that may wait for the GPU are called through WebAssembly.promising, so the
// WebAssembly stack is suspended, not the thread blocked.
import init, { Session } from "./pkg/web.js";

const turn = () => new Promise((resolve) => {
  const c = new MessageChannel();
  c.port1.onmessage = () => { c.port1.close(); resolve(); };
  c.port2.postMessage(null);
});
const jspi = typeof WebAssembly.Suspending === "function" && typeof WebAssembly.promising === "function";
const instantiate = WebAssembly.instantiate;
WebAssembly.instantiate = (source, imports) => {
  for (const ns of Object.values(imports || {})) {
    for (const name of Object.keys(ns)) {
      if (name.includes("deeprustYieldTurn")) {
        ns[name] = jspi ? new WebAssembly.Suspending(turn)
          : () => { throw new Error("this browser lacks JavaScript Promise Integration (JSPI)"); };
      }
    }
  }
  return instantiate.call(WebAssembly, source, imports);
};

const options = new URL(import.meta.url).searchParams;
const want = options.get("backend") || "auto"; // auto | cpu | gpu
// a checkpoint directory to fetch (config.json, model.safetensors, tokenizer.json and
// optionally tokenizer_config.json) instead of the model built into the module
const modelUrl = options.get("model");
let session = null;
let advance = null; // the promising `advance` export, when the GPU backend is in use
let stop = false;
const tick = new MessageChannel();
let onTick = null;
tick.port1.onmessage = () => onTick && onTick();
const yieldThen = (f) => { onTick = f; tick.port2.postMessage(null); };

async function load() {
  const t0 = performance.now();
  // compiled here so that the glue instantiates it through the function patched above
  const bytes = await (await fetch(new URL("./pkg/web_bg.wasm", import.meta.url))).arrayBuffer();
  const raw = await init({ module_or_path: await WebAssembly.compile(bytes) });
  let name = "the embedded model";
  if (modelUrl) {
    const base = new URL(modelUrl.endsWith("/") ? modelUrl : `${modelUrl}/`);
    const get = async (file, optional = false) => {
      const r = await fetch(new URL(file, base));
      if (r.ok) return r;
      if (optional) return null;
      throw new Error(`${new URL(file, base)}: HTTP ${r.status}`);
    };
    const [config, weights, tok, tc] = await Promise.all([
      get("config.json"), get("model.safetensors"), get("tokenizer.json"), get("tokenizer_config.json", true)]);
    session = Session.fromBytes(await config.text(), new Uint8Array(await weights.arrayBuffer()),
      new Uint8Array(await tok.arrayBuffer()), tc ? await tc.text() : undefined);
    name = base.pathname;
  } else {
    session = new Session();
  }
  let backend = "cpu";
  let note = "";
  if (want !== "cpu") {
    const why = !("gpu" in navigator) ? "no navigator.gpu" : !jspi ? "no JSPI" : "";
    if (!why) {
      const useGpu = WebAssembly.promising(raw.session_useGpu);
      const ok = await useGpu(session.__wbg_ptr);
      note = session.takeMessage();
      if (ok !== 1 && note.includes("no GPU adapter")) note = "the browser offers no adapter";
      if (ok === 1) {
        backend = "webgpu";
        advance = WebAssembly.promising(raw.session_advance);
      }
    } else {
      note = why;
    }
    if (want === "gpu" && backend !== "webgpu") throw new Error(`WebGPU was asked for: ${note}`);
  }
  postMessage({
    type: "ready", backend, level: session.level(), note, ms: performance.now() - t0,
    model: name, params: session.params(),
  });
}
load().catch((e) => postMessage({ type: "error", message: String(e) }));

// The next piece of text, or undefined once the reply has ended.
async function next() {
  if (!advance) return session.next();
  const r = await advance(session.__wbg_ptr);
  const m = session.takeMessage();
  if (r < 0) throw new Error(m);
  return r === 0 ? undefined : m;
}

onmessage = ({ data: m }) => {
  if (m.type === "stop") {
    stop = true;
    return;
  }
  if (m.type !== "generate" || !session) return;
  stop = false;
  let tokens = 0;
  const start = performance.now();
  const rate = () => tokens / Math.max((performance.now() - start) / 1000, 1e-9);
  try {
    session.start(m.prompt, m.chat, m.maxTokens, m.temperature, BigInt(m.seed));
  } catch (e) {
    postMessage({ type: "error", message: String(e) });
    return;
  }
  const step = async () => {
    try {
      if (stop) {
        finish(true);
        return;
      }
      const piece = await next();
      if (piece === undefined) {
        finish(false);
        return;
      }
      tokens++;
      if (piece) postMessage({ type: "text", text: piece, tokens, tokPerSec: rate() });
      yieldThen(step);
    } catch (e) {
      postMessage({ type: "error", message: String(e) });
    }
  };
  const finish = (stopped) => postMessage({
    type: "done", stopped, tokens, secs: (performance.now() - start) / 1000, tokPerSec: rate(),
    ids: Array.from(session.generated()),
  });
  step();
};
