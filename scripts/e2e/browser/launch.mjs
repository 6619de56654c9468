// Debian's headless Chromium as every page test here starts it. `webgpu`: with WebGPU on
// SwiftShader (Vulkan on the CPU, shipped with Chromium), as on a machine with no GPU.
import { chromium } from "playwright-core";

export function launch({ webgpu = false } = {}) {
  const gpu = webgpu
    ? ["--enable-unsafe-webgpu", "--use-webgpu-adapter=swiftshader", "--enable-features=Vulkan"]
    : ["--disable-gpu"];
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", ...gpu, "--disable-quic", "--no-first-run", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"],
  });
}
