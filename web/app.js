// The page: everything heavy happens in worker.js, so typing and scrolling never wait for
// the model; text arrives piece by piece and Stop is honoured between tokens.
const $ = (id) => document.getElementById(id);
// ?backend=cpu|gpu forces one; by default the worker takes WebGPU where the browser has it
const backend = new URLSearchParams(location.search).get("backend") || "auto";
const worker = new Worker(new URL(`./worker.js?backend=${encodeURIComponent(backend)}`, import.meta.url),
  { type: "module" });
let running = false;

function setRunning(on) {
  running = on;
  $("go").disabled = on;
  $("stop").disabled = !on;
}

worker.onmessage = ({ data: m }) => {
  switch (m.type) {
    case "ready":
      $("status").textContent = m.backend === "webgpu"
        ? `model loaded in ${m.ms.toFixed(0)} ms (WebAssembly + WebGPU, ${m.note})`
        : `model loaded in ${m.ms.toFixed(0)} ms (WebAssembly, kernels: ${m.level}${m.note ? `; no WebGPU: ${m.note}` : ""})`;
      $("go").disabled = false;
      break;
    case "text":
      $("output").textContent += m.text;
      $("speed").textContent = `${m.tokens} tokens, ${m.tokPerSec.toFixed(1)} tok/s`;
      break;
    case "done":
      $("speed").textContent = `${m.tokens} tokens in ${m.secs.toFixed(2)} s: ${m.tokPerSec.toFixed(1)} tok/s` +
        (m.stopped ? " (stopped)" : "");
      $("output").dataset.done = "1";
      setRunning(false);
      break;
    case "error":
      $("status").textContent = `error: ${m.message}`;
      $("output").dataset.done = "1";
      setRunning(false);
      break;
  }
};

$("go").onclick = () => {
  if (running) return;
  $("output").textContent = "";
  delete $("output").dataset.done;
  setRunning(true);
  worker.postMessage({
    type: "generate",
    prompt: $("prompt").value,
    chat: $("chat").checked,
    maxTokens: Number($("max").value) || 128,
    temperature: Number($("temp").value) || 0,
    seed: Math.floor(Math.random() * 2 ** 32),
  });
};
$("stop").onclick = () => worker.postMessage({ type: "stop" });
