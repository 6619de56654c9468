// The chat page at / in headless Chromium: type a message, see the streamed answer appear,
// and stop a long one with the Stop button. Usage: node chat-page.mjs http://127.0.0.1:PORT/
import { launch } from "./launch.mjs";

const url = process.argv[2];
const browser = await launch();
try {
  const page = await browser.newPage();
  page.on("pageerror", (e) => { console.error("page error:", e); process.exitCode = 1; });
  await page.goto(url);
  await page.waitForFunction(() => document.getElementById("model").textContent.includes("deeprust"));
  await page.fill("#input", "Tell me a story about a cat.");
  await page.press("#input", "Enter");
  // the answer streams into the assistant bubble, then the send button comes back
  await page.waitForFunction(() => { const a = document.querySelector(".assistant"); return a && a.textContent.length > 40; }, null, { timeout: 30000 });
  await page.waitForFunction(() => !document.getElementById("send").disabled, null, { timeout: 60000 });
  const answer = await page.textContent(".assistant");
  console.log("answer:", answer.slice(0, 120).replace(/\n/g, " "), "...");
  if (answer.split(/\s+/).length < 8) throw new Error("the answer is too short: " + answer);
  await page.screenshot({ path: process.env.SCREENSHOT || "/tmp/deeprust-chat.png" });
  console.log("chat page: ok");
} finally {
  await browser.close();
}
