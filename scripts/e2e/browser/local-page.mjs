// The in-browser page (web/, WebAssembly in a Web Worker) in headless Chromium: the model
// loads, a greedy reply streams in and equals the native build's text, and Stop ends a long
// reply early. Usage: node local-page.mjs http://127.0.0.1:PORT/ NATIVE_GREEDY_TEXT MAX_TOKENS [cpu|gpu] [MODEL_DIR]
// `gpu`: Chromium with WebGPU on SwiftShader and the page at ?backend=gpu, so the model runs
// on the WGSL backend; `cpu` (the default): WebGPU off, so the page falls back to the CPU.
import { launch } from "./launch.mjs";

// MODEL_DIR: the page fetches that checkpoint directory (relative to the page) as bytes.
const [base, want, maxTokens, mode = "cpu", model] = process.argv.slice(2);
const query = new URLSearchParams();
if (mode === "gpu") query.set("backend", "gpu");
if (model) query.set("model", model);
const url = query.size ? `${base}?${query}` : base;
const browser = await launch({ webgpu: mode === "gpu" });
try {
  const page = await browser.newPage();
  page.on("pageerror", (e) => { console.error("page error:", e); process.exitCode = 1; });
  page.on("console", (m) => { if (m.type() === "error") console.error("console:", m.text()); });
  await page.goto(url);
  await page.waitForFunction(() => /model loaded|error/.test(document.getElementById("status").textContent),
    null, { timeout: 60000 });
  const status = await page.textContent("#status");
  console.log("status:", status);
  if ((mode === "gpu") !== status.includes("+ WebGPU")) throw new Error(`not the ${mode} backend: ${status}`);
  if (model && !status.includes(model.replace(/^(\.\.\/)+/, ""))) throw new Error(`not the model at ${model}: ${status}`);

  // a greedy reply equals the native build's
  await page.fill("#prompt", "Once upon a time");
  await page.fill("#max", String(maxTokens));
  await page.fill("#temp", "0");
  await page.click("#go");
  await page.waitForFunction(() => document.getElementById("output").dataset.done === "1", null, { timeout: 60000 });
  const got = await page.textContent("#output");
  console.log("reply:", JSON.stringify(got));
  console.log("speed:", await page.textContent("#speed"));
  if (got !== want) throw new Error(`the page's reply differs from the native build's: ${JSON.stringify(want)}`);

  // Stop ends a long reply between tokens
  await page.fill("#max", "2000");
  await page.fill("#temp", "0.8");
  await page.click("#go");
  await page.waitForFunction(() => document.getElementById("output").textContent.length > 20, null, { timeout: 30000 });
  await page.click("#stop");
  await page.waitForFunction(() => document.getElementById("output").dataset.done === "1", null, { timeout: 30000 });
  const speed = await page.textContent("#speed");
  console.log("after stop:", speed);
  if (!speed.includes("(stopped)")) throw new Error("Stop did not end the reply: " + speed);
  await page.screenshot({ path: process.env.SCREENSHOT || `/tmp/deeprust-local-${mode}.png` });
  console.log(`local page (${mode}): ok`);
} finally {
  await browser.close();
}
