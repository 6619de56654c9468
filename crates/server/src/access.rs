//! API keys and rate limits. Keys are compared in constant time; limits are per key, or per
//! client address when the server has no keys: requests and tokens per minute (fixed
//! one-minute windows) and requests in flight.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::error::ApiError;

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Limits {
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub concurrent: Option<u64>,
}

#[derive(Clone, Debug, Default)]
pub struct AccessConfig {
    /// Accepted keys with their own limits (None: the server's defaults).
    pub keys: Vec<(String, Option<Limits>)>,
    pub defaults: Limits,
}

impl AccessConfig {
    /// Read a keys file: one key a line, optionally followed by `rpm=N tpm=N concurrent=N`;
    /// blank lines and `#` comments are skipped.
    pub fn read_keys_file(path: &Path) -> Result<Vec<(String, Option<Limits>)>, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut out = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.split_whitespace();
            let key = parts.next().unwrap().to_string();
            let mut limits = None;
            for p in parts {
                let l: &mut Limits = limits.get_or_insert_with(Limits::default);
                let (k, v) = p.split_once('=').ok_or_else(|| {
                    format!("{}:{}: `{p}` is not name=value", path.display(), n + 1)
                })?;
                let v: u64 = v
                    .parse()
                    .map_err(|_| format!("{}:{}: `{v}` is not a number", path.display(), n + 1))?;
                match k {
                    "rpm" => l.rpm = Some(v),
                    "tpm" => l.tpm = Some(v),
                    "concurrent" => l.concurrent = Some(v),
                    _ => {
                        return Err(format!(
                            "{}:{}: unknown limit `{k}` (rpm, tpm, concurrent)",
                            path.display(),
                            n + 1
                        ));
                    }
                }
            }
            out.push((key, limits));
        }
        Ok(out)
    }
}

/// Byte-wise comparison whose time does not depend on where the strings differ.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() != b.len()) as u8;
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff);
    }
    diff == 0
}

#[derive(Default)]
struct Window {
    start: Option<Instant>,
    requests: u64,
    tokens: u64,
    in_flight: u64,
}

/// Usage windows by identity (a key's index, or a client address).
#[derive(Default)]
pub struct Limiter {
    windows: Mutex<HashMap<String, Window>>,
}

const MINUTE: Duration = Duration::from_secs(60);

/// Who a request is, for limits and token accounting after it finishes.
#[derive(Clone, Debug)]
pub struct Identity {
    pub id: String,
    pub limits: Limits,
    limiter: Arc<Limiter>,
}

impl Identity {
    /// Count tokens a finished request used.
    pub fn charge(&self, tokens: u64) {
        let mut w = self.limiter.windows.lock().unwrap();
        let win = w.entry(self.id.clone()).or_default();
        win.tokens += tokens;
    }
}

/// Ends an in-flight request when dropped (however the response ends).
struct InFlight(Identity);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut w = self.0.limiter.windows.lock().unwrap();
        if let Some(win) = w.get_mut(&self.0.id) {
            win.in_flight = win.in_flight.saturating_sub(1);
        }
    }
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Limiter")
    }
}

fn header(h: &mut HeaderMap, k: &'static str, v: String) {
    if let Ok(v) = HeaderValue::from_str(&v) {
        h.insert(k, v);
    }
}

/// Middleware: authenticate (when keys are set), then apply the identity's limits.
pub async fn guard(State(s): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let cfg = &s.access;
    let (id, limits) = if cfg.keys.is_empty() {
        let addr = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or("local".to_string(), |c| c.0.ip().to_string());
        (addr, cfg.defaults)
    } else {
        let given = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            // Browsers cannot set headers on a WebSocket: the key may come as a query parameter there.
            .or_else(|| {
                req.uri()
                    .query()
                    .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("api_key=")))
            })
            .unwrap_or("");
        let mut found = None;
        for (i, (k, l)) in cfg.keys.iter().enumerate() {
            if ct_eq(given.as_bytes(), k.as_bytes()) && found.is_none() {
                found = Some((format!("key{i}"), l.unwrap_or(cfg.defaults)));
            }
        }
        match found {
            Some(f) => f,
            None => {
                let msg = if given.is_empty() {
                    "You didn't provide an API key. Provide it as `Authorization: Bearer KEY`."
                } else {
                    "Incorrect API key provided."
                };
                return ApiError {
                    status: StatusCode::UNAUTHORIZED,
                    message: msg.into(),
                    kind: "invalid_request_error",
                    param: None,
                    code: Some("invalid_api_key"),
                }
                .into_response();
            }
        }
    };
    let ident = Identity {
        id: id.clone(),
        limits,
        limiter: s.limiter.clone(),
    };
    // Check and count in one critical section.
    let (verdict, snapshot) = {
        let mut w = s.limiter.windows.lock().unwrap();
        let win = w.entry(id).or_default();
        let now = Instant::now();
        if win.start.is_none_or(|t| now.duration_since(t) >= MINUTE) {
            win.start = Some(now);
            win.requests = 0;
            win.tokens = 0;
        }
        let reset = MINUTE.saturating_sub(now.duration_since(win.start.unwrap()));
        let over = limits.rpm.is_some_and(|r| win.requests >= r)
            || limits.tpm.is_some_and(|t| win.tokens >= t)
            || limits.concurrent.is_some_and(|c| win.in_flight >= c);
        if !over {
            win.requests += 1;
            win.in_flight += 1;
        }
        (over, (win.requests, win.tokens, reset))
    };
    let (requests, tokens, reset) = snapshot;
    let mut resp = if verdict {
        let mut r = ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: "Rate limit reached: too many requests, tokens or requests in flight for this key. Retry after the reset.".into(),
            kind: "requests",
            param: None,
            code: Some("rate_limit_exceeded"),
        }
        .into_response();
        header(
            r.headers_mut(),
            "retry-after",
            reset.as_secs().max(1).to_string(),
        );
        r
    } else {
        let guard = InFlight(ident.clone());
        req.extensions_mut().insert(ident);
        let r = next.run(req).await;
        // Streams keep the request in flight until their body ends.
        let (parts, body) = r.into_parts();
        let body = axum::body::Body::from_stream(futures_util::StreamExt::map(
            body.into_data_stream(),
            move |c| {
                let _keep = &guard;
                c
            },
        ));
        Response::from_parts(parts, body)
    };
    let h = resp.headers_mut();
    if let Some(r) = limits.rpm {
        header(h, "x-ratelimit-limit-requests", r.to_string());
        header(
            h,
            "x-ratelimit-remaining-requests",
            r.saturating_sub(requests).to_string(),
        );
        header(
            h,
            "x-ratelimit-reset-requests",
            format!("{}s", reset.as_secs()),
        );
    }
    if let Some(t) = limits.tpm {
        header(h, "x-ratelimit-limit-tokens", t.to_string());
        header(
            h,
            "x-ratelimit-remaining-tokens",
            t.saturating_sub(tokens).to_string(),
        );
        header(
            h,
            "x-ratelimit-reset-tokens",
            format!("{}s", reset.as_secs()),
        );
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_equality() {
        assert!(ct_eq(b"sk-abc", b"sk-abc"));
        assert!(!ct_eq(b"sk-abc", b"sk-abd"));
        assert!(!ct_eq(b"sk-abc", b"sk-ab"));
        assert!(!ct_eq(b"", b"x"));
        assert!(ct_eq(b"", b""));
    }

    #[test]
    fn keys_file() {
        let dir = std::env::temp_dir().join(format!("deeprust-keys-{}", std::process::id()));
        std::fs::write(&dir, "# team keys\nsk-one rpm=10 tpm=1000\n\nsk-two\n").unwrap();
        let keys = AccessConfig::read_keys_file(&dir).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(
            keys[0].1,
            Some(Limits {
                rpm: Some(10),
                tpm: Some(1000),
                concurrent: None
            })
        );
        assert_eq!(keys[1], ("sk-two".to_string(), None));
        std::fs::write(&dir, "sk-one speed=3\n").unwrap();
        assert!(
            AccessConfig::read_keys_file(&dir)
                .unwrap_err()
                .contains("unknown limit `speed`")
        );
        std::fs::remove_file(&dir).unwrap();
    }
}
