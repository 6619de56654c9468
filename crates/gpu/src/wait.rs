//! How the host waits for the GPU: natively by blocking, in the browser by suspending the
//! WebAssembly stack between turns of the event loop.

/// Block until the queue's work is done and `done()` holds (the read-backs asked for have
/// landed). Natively a blocking poll; in the browser WebGPU answers only between turns of
/// the event loop, so this suspends the WebAssembly stack until it has had one
/// (JavaScript Promise Integration: see `web`).
pub(crate) fn wait(device: &wgpu::Device, done: &dyn Fn() -> bool) {
    #[cfg(not(target_arch = "wasm32"))]
    {
        device
            .poll(wgpu::PollType::wait_indefinitely())
            .expect("the GPU stopped responding");
        debug_assert!(done());
    }
    #[cfg(target_arch = "wasm32")]
    {
        let _ = device;
        while !done() {
            web::yield_turn();
        }
    }
}

/// Run a future to completion from synchronous code (the adapter and device requests).
pub(crate) fn block_on<F: std::future::Future>(f: F) -> F::Output {
    #[cfg(not(target_arch = "wasm32"))]
    {
        pollster::block_on(f)
    }
    #[cfg(target_arch = "wasm32")]
    {
        // the browser's promises settle between turns of its event loop; a settled one
        // makes the future ready at its next poll
        let mut f = std::pin::pin!(f);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        loop {
            if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
            web::yield_turn();
        }
    }
}

#[cfg(target_arch = "wasm32")]
mod web {
    use wasm_bindgen::prelude::wasm_bindgen;

    #[wasm_bindgen]
    extern "C" {
        /// Suspends until the event loop has turned once. The page supplies it as a
        /// `WebAssembly.Suspending` import (web/worker.js), and calls the exports that reach
        /// the GPU through `WebAssembly.promising`, so this synchronous code can wait for
        /// WebGPU without the model's code becoming async.
        #[wasm_bindgen(js_name = deeprustYieldTurn)]
        pub fn yield_turn();
    }
}
