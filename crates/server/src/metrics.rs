//! Prometheus metrics: `GET /metrics` in the text exposition format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::AppState;

/// A latency histogram in seconds.
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_us: AtomicU64,
    count: AtomicU64,
}

const LATENCY: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_us: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, secs: f64) {
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            if secs <= *b {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sum_us
            .fetch_add((secs * 1e6) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{b}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
        let n = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {n}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {n}");
    }
}

pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    pub prompt_tokens: AtomicU64,
    pub generated_tokens: AtomicU64,
    pub ttft: Histogram,
    pub itl: Histogram,
    pub e2e: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Mutex::default(),
            prompt_tokens: AtomicU64::new(0),
            generated_tokens: AtomicU64::new(0),
            ttft: Histogram::new(LATENCY),
            itl: Histogram::new(LATENCY),
            e2e: Histogram::new(LATENCY),
        }
    }
}

/// Per-request timing that feeds the histograms as events arrive.
pub struct Timer {
    start: Instant,
    last: Option<Instant>,
}

impl Timer {
    pub fn new() -> Timer {
        Timer {
            start: Instant::now(),
            last: None,
        }
    }

    pub fn token(&mut self, m: &Metrics) {
        let now = Instant::now();
        match self.last {
            None => m.ttft.observe((now - self.start).as_secs_f64()),
            Some(t) => m.itl.observe((now - t).as_secs_f64()),
        }
        self.last = Some(now);
    }

    pub fn done(&self, m: &Metrics, prompt: usize, generated: usize) {
        m.e2e.observe(self.start.elapsed().as_secs_f64());
        m.prompt_tokens.fetch_add(prompt as u64, Ordering::Relaxed);
        m.generated_tokens
            .fetch_add(generated as u64, Ordering::Relaxed);
    }
}

/// Middleware: count every request by route and status.
pub async fn count(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched".to_string(), |p| p.as_str().to_string());
    let resp = next.run(req).await;
    *s.metrics
        .requests
        .lock()
        .unwrap()
        .entry((path, resp.status().as_u16()))
        .or_default() += 1;
    resp
}

pub async fn render(State(s): State<Arc<AppState>>) -> ([(&'static str, &'static str); 1], String) {
    let m = &s.metrics;
    let e = s.engine.stats();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP deeprust_requests_total HTTP requests by route and status.\n# TYPE deeprust_requests_total counter"
    );
    for ((path, status), n) in m.requests.lock().unwrap().iter() {
        let _ = writeln!(
            out,
            "deeprust_requests_total{{endpoint=\"{path}\",status=\"{status}\"}} {n}"
        );
    }
    let counter = |out: &mut String, name: &str, help: &str, v: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
        );
    };
    let gauge = |out: &mut String, name: &str, help: &str, v: f64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    };
    counter(
        &mut out,
        "deeprust_prompt_tokens_total",
        "Prompt tokens of finished requests.",
        m.prompt_tokens.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "deeprust_generated_tokens_total",
        "Generated tokens of finished requests.",
        m.generated_tokens.load(Ordering::Relaxed),
    );
    m.ttft.render(
        &mut out,
        "deeprust_time_to_first_token_seconds",
        "Time from request to its first token.",
    );
    m.itl.render(
        &mut out,
        "deeprust_inter_token_latency_seconds",
        "Time between consecutive tokens of a request.",
    );
    m.e2e.render(
        &mut out,
        "deeprust_request_duration_seconds",
        "Time from request to its last token.",
    );
    let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let ru = |a: &std::sync::atomic::AtomicUsize| a.load(Ordering::Relaxed) as f64;
    gauge(
        &mut out,
        "deeprust_queue_length",
        "Sequences waiting to run.",
        ru(&e.waiting),
    );
    gauge(
        &mut out,
        "deeprust_running_sequences",
        "Sequences in the running batch.",
        ru(&e.running),
    );
    gauge(
        &mut out,
        "deeprust_kv_blocks_used",
        "KV-cache blocks held by sequences.",
        ru(&e.kv_blocks_used),
    );
    gauge(
        &mut out,
        "deeprust_kv_blocks_free",
        "KV-cache blocks free or evictable.",
        ru(&e.kv_blocks_total) - ru(&e.kv_blocks_used),
    );
    let (q, h) = (r(&e.prefix_queried), r(&e.prefix_hit));
    gauge(
        &mut out,
        "deeprust_prefix_cache_hit_rate",
        "Share of prompt tokens served from the prefix cache.",
        if q == 0 { 0.0 } else { h as f64 / q as f64 },
    );
    counter(
        &mut out,
        "deeprust_preemptions_total",
        "Sequences preempted for lack of KV blocks.",
        r(&e.preemptions),
    );
    ([("content-type", "text/plain; version=0.0.4")], out)
}
