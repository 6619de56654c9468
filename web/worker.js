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

const want = new URL(import.meta.url).searchParams.get("backend") || "auto"; // auto | cpu | gpu
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
  session = new Session();
  let backend = "cpu";
  let note = "";
  if (want !== "cpu") {
    const why = !("gpu" in navigator) ? "no navigator.gpu" : !jspi ? "no JSPI" : "";
    if (!why) {
      const useGpu = WebAssembly.promising(raw.session_useGpu);
      const ok = await useGpu(session.__wbg_ptr);
      note = session.takeMessage();
      if (ok === 1) {
        backend = "webgpu";
        advance = WebAssembly.promising(raw.session_advance);
      }
    } else {
      note = why;
    }
    if (want === "gpu" && backend !== "webgpu") throw new Error(`WebGPU was asked for: ${note}`);
  }
  postMessage({ type: "ready", backend, level: session.level(), note, ms: performance.now() - t0 });
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
