// The model in a Web Worker: one token per turn of the event loop, so a "stop" message is
// seen between any two tokens. Turns are yielded through a MessageChannel, not setTimeout,
// which browsers clamp to 4 ms once nested (250 tokens/s at most).
import init, { Session } from "./pkg/web.js";

let session = null;
let stop = false;
const tick = new MessageChannel();
let onTick = null;
tick.port1.onmessage = () => onTick && onTick();
const yieldThen = (f) => { onTick = f; tick.port2.postMessage(null); };

const t0 = performance.now();
init().then(() => {
  session = new Session();
  postMessage({ type: "ready", level: session.level(), ms: performance.now() - t0 });
}).catch((e) => postMessage({ type: "error", message: String(e) }));

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
  const step = () => {
    try {
      if (stop) {
        finish(true);
        return;
      }
      const piece = session.next();
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
