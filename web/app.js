// The page: everything heavy happens in worker.js, so typing and scrolling never wait for
// the model; text arrives piece by piece and Stop is honoured between tokens.
const $ = (id) => document.getElementById(id);
// ?backend=cpu|gpu forces one; by default the worker takes WebGPU where the browser has it
// ?model=DIR loads a checkpoint directory from this host instead of the embedded model
const query = new URLSearchParams(location.search);
const workerOptions = new URLSearchParams({ backend: query.get("backend") || "auto" });
if (query.get("model")) workerOptions.set("model", new URL(query.get("model"), location.href).href);
const worker = new Worker(new URL(`./worker.js?${workerOptions}`, import.meta.url), { type: "module" });
let running = false;

function setRunning(on) {
  running = on;
  $("go").disabled = on;
  $("stop").disabled = !on;
}

worker.onmessage = ({ data: m }) => {
  switch (m.type) {
    case "ready": {
      const what = `${m.model}, ${(m.params / 1e6).toFixed(1)}M parameters`;
      $("status").textContent = m.backend === "webgpu"
        ? `model loaded in ${m.ms.toFixed(0)} ms (${what}; WebAssembly + WebGPU, ${m.note})`
        : `model loaded in ${m.ms.toFixed(0)} ms (${what}; WebAssembly, kernels: ${m.level}${m.note ? `; no WebGPU: ${m.note}` : ""})`;
      $("go").disabled = false;
      break;
    }
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
