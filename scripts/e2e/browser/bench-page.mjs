// tok/s of the page (web/) in headless Chromium: a greedy reply of MAX_TOKENS after a short
// prompt, as the page reports it (wall time in the Worker from the first step, prompt
// included), median of RUNS. Usage:
//   node bench-page.mjs http://HOST/web/ MAX_TOKENS RUNS [cpu|gpu] [MODEL_DIR]
import { launch } from "./launch.mjs";

const [base, maxTokens, runs, mode = "cpu", model] = process.argv.slice(2);
const query = new URLSearchParams({ backend: mode });
if (model) query.set("model", model);
const browser = await launch({ webgpu: mode === "gpu" });
try {
  const page = await browser.newPage();
  page.on("pageerror", (e) => { console.error("page error:", e); process.exitCode = 1; });
  await page.goto(`${base}?${query}`);
  await page.waitForFunction(() => /model loaded|error/.test(document.getElementById("status").textContent),
    null, { timeout: 600000 });
  console.log("status:", await page.textContent("#status"));
  const rates = [];
  for (let i = 0; i < Number(runs); i++) {
    await page.fill("#prompt", "Once upon a time");
    await page.fill("#max", String(maxTokens));
    await page.fill("#temp", "0");
    await page.click("#go");
    await page.waitForFunction(() => document.getElementById("output").dataset.done === "1", null, { timeout: 600000 });
    const speed = await page.textContent("#speed");
    console.log("run", i + 1, speed);
    rates.push(Number(/([\d.]+) tok\/s/.exec(speed)[1]));
  }
  rates.sort((a, b) => a - b);
  console.log(`median: ${rates[Math.floor(rates.length / 2)]} tok/s (${mode}${model ? `, ${model}` : ""})`);
} finally {
  await browser.close();
}
