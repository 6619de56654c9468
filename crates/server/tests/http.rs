//! The server on a real socket (port 0), read the way clients read it.

use std::sync::Arc;

use engine::{EngineConfig, EngineHandle};
use serde_json::{Value, json};
use server::{AppState, app};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn start() -> std::net::SocketAddr {
    start_with(server::AccessConfig::default()).await
}

async fn start_with(access: server::AccessConfig) -> std::net::SocketAddr {
    start_engine(access).await.0
}

async fn start_engine(access: server::AccessConfig) -> (std::net::SocketAddr, EngineHandle) {
    let model = Arc::new(model::Model::load(&embedded::checkpoint().unwrap()).unwrap());
    let tok = Arc::new(embedded::tokenizer().unwrap());
    let cfg = EngineConfig {
        kv_blocks: 512,
        block_size: 16,
        max_batch_tokens: 256,
        max_running: 16,
        ctx_size: 1024,
    };
    let engine = EngineHandle::start(model, Some(tok.clone()), cfg);
    let state = Arc::new(
        AppState::new(engine.clone(), tok, "deeprust-embedded".into()).with_access(access),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app(state)).await.unwrap() });
    (addr, engine)
}

/// A minimal HTTP/1.1 exchange: status and body (de-chunked).
async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, String) {
    let (st, _, b) = http_full(addr, method, path, body, "").await;
    (st, b)
}

/// Status, raw head and body; `extra` adds header lines.
async fn http_full(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    extra: &str,
) -> (u16, String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    (status, head.to_string(), body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n").unwrap();
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// The `data:` payloads of an SSE body, up to and including `[DONE]`.
fn sse(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn models_health_and_errors() {
    let addr = start().await;
    let (st, b) = http(addr, "GET", "/health", None).await;
    assert_eq!((st, json(&b)["status"].as_str()), (200, Some("ok")));
    let (st, b) = http(addr, "GET", "/v1/models", None).await;
    assert_eq!(st, 200);
    assert_eq!(json(&b)["data"][0]["id"], "deeprust-embedded");
    let (st, b) = http(addr, "GET", "/v1/models/nope", None).await;
    assert_eq!(st, 404);
    assert_eq!(json(&b)["error"]["code"], "model_not_found");

    let chat = |body: Value| body.to_string();
    let (st, b) = http(addr, "POST", "/v1/chat/completions", Some("{not json")).await;
    assert_eq!(st, 400);
    assert!(
        json(&b)["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );
    let (st, b) = http(
        addr,
        "POST",
        "/v1/chat/completions",
        Some(&chat(
            json!({"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]}),
        )),
    )
    .await;
    assert_eq!(st, 404);
    assert_eq!(json(&b)["error"]["param"], "model");
    let (st, b) = http(
        addr,
        "POST",
        "/v1/chat/completions",
        Some(&chat(
            json!({"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}),
        )),
    )
    .await;
    assert_eq!(st, 400, "{b}");
    let (st, b) = http(
        addr,
        "POST",
        "/v1/chat/completions",
        Some(&chat(
            json!({"messages": [{"role": "user", "content": "hi"}], "top_p": 3.0}),
        )),
    )
    .await;
    assert_eq!(
        (st, json(&b)["error"]["param"].as_str()),
        (400, Some("top_p"))
    );
    let (st, b) = http(
        addr,
        "POST",
        "/v1/chat/completions",
        Some(&chat(
            json!({"messages": [{"role": "user", "content": "word ".repeat(2000)}]}),
        )),
    )
    .await;
    assert_eq!(
        (st, json(&b)["error"]["code"].as_str()),
        (400, Some("context_length_exceeded"))
    );
    let big = format!(
        "{{\"messages\": [{{\"role\": \"user\", \"content\": \"{}\"}}]}}",
        "x".repeat(5 << 20)
    );
    let (st, b) = http(addr, "POST", "/v1/chat/completions", Some(&big)).await;
    assert_eq!(st, 413, "{b}");
    assert!(json(&b)["error"]["message"].is_string());
    let (st, page) = http(addr, "GET", "/", None).await;
    assert_eq!(st, 200);
    assert!(
        page.contains("v1/chat/completions") && page.contains("AbortController"),
        "the chat page streams and can stop"
    );
    let (st, spec) = http(addr, "GET", "/openapi.json", None).await;
    assert_eq!(st, 200);
    let spec = json(&spec);
    for p in [
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/models",
        "/ws",
        "/metrics",
        "/health",
    ] {
        assert!(spec["paths"][p].is_object(), "openapi.json lacks {p}");
    }
    let (st, _) = http(addr, "GET", "/v2/nothing", None).await;
    assert_eq!(st, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn chat_and_completions_streaming_and_not() {
    let addr = start().await;
    let req = json!({"model": "deeprust-embedded", "messages": [{"role": "user", "content": "Tell me a story about a cat."}],
                     "max_tokens": 24, "temperature": 0.8, "seed": 7, "n": 2, "logprobs": true, "top_logprobs": 2});
    let (st, b) = http(addr, "POST", "/v1/chat/completions", Some(&req.to_string())).await;
    assert_eq!(st, 200, "{b}");
    let v = json(&b);
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"].as_array().unwrap().len(), 2);
    assert!(v["system_fingerprint"].is_string());
    let text0 = v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!text0.is_empty());
    assert_eq!(
        v["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let u = &v["usage"];
    assert_eq!(
        u["total_tokens"],
        u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap()
    );
    // the same seed again: the same text
    let (_, b2) = http(addr, "POST", "/v1/chat/completions", Some(&req.to_string())).await;
    assert_eq!(json(&b2)["choices"][0]["message"]["content"], text0);

    // streamed: role first, content deltas, a finish reason, usage, [DONE]
    let mut sreq = req.clone();
    sreq["stream"] = json!(true);
    sreq["stream_options"] = json!({"include_usage": true});
    let (st, b) = http(
        addr,
        "POST",
        "/v1/chat/completions",
        Some(&sreq.to_string()),
    )
    .await;
    assert_eq!(st, 200);
    let data = sse(&b);
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1].iter().map(|d| json(d)).collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let streamed: String = chunks
        .iter()
        .filter(|c| {
            c["choices"].as_array().is_some_and(|a| !a.is_empty()) && c["choices"][0]["index"] == 0
        })
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(
        streamed, text0,
        "streamed text equals the non-streamed text"
    );
    assert_eq!(
        chunks
            .iter()
            .filter(|c| c["choices"]
                .as_array()
                .is_some_and(|a| !a.is_empty() && !a[0]["finish_reason"].is_null()))
            .count(),
        2
    );
    assert_eq!(
        chunks.last().unwrap()["usage"]["completion_tokens"],
        v["usage"]["completion_tokens"]
    );

    // text completions
    let (st, b) = http(addr, "POST", "/v1/completions", Some(&json!({"prompt": "Once upon a time", "max_tokens": 16, "temperature": 0, "logprobs": 1}).to_string())).await;
    assert_eq!(st, 200, "{b}");
    let v = json(&b);
    assert_eq!(v["object"], "text_completion");
    assert!(v["choices"][0]["text"].as_str().unwrap().len() > 10);
    assert_eq!(
        v["choices"][0]["logprobs"]["tokens"]
            .as_array()
            .unwrap()
            .len(),
        16
    );
    let (st, b) = http(addr, "POST", "/v1/completions", Some(&json!({"prompt": "Once upon a time", "max_tokens": 16, "temperature": 0, "stream": true}).to_string())).await;
    assert_eq!(st, 200);
    let data = sse(&b);
    assert_eq!(data.last().unwrap(), "[DONE]");
    let streamed: String = data[..data.len() - 1]
        .iter()
        .filter_map(|d| json(d)["choices"][0]["text"].as_str().map(str::to_string))
        .collect();
    assert_eq!(streamed, v["choices"][0]["text"].as_str().unwrap());
    // tokenize / detokenize round trip
    let (_, b) = http(
        addr,
        "POST",
        "/tokenize",
        Some(&json!({"prompt": "Once upon a time"}).to_string()),
    )
    .await;
    let ids = json(&b)["tokens"].clone();
    let (_, b) = http(
        addr,
        "POST",
        "/detokenize",
        Some(&json!({"tokens": ids}).to_string()),
    )
    .await;
    assert_eq!(json(&b)["prompt"], "Once upon a time");

    // what happened shows in the metrics
    let (st, m) = http(addr, "GET", "/metrics", None).await;
    assert_eq!(st, 200);
    assert!(
        m.contains("deeprust_requests_total{endpoint=\"/v1/chat/completions\",status=\"200\"} 3"),
        "{m}"
    );
    let count = |name: &str| -> f64 {
        m.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(count("deeprust_time_to_first_token_seconds_count"), 5.0);
    assert!(count("deeprust_inter_token_latency_seconds_count") > 50.0);
    assert!(count("deeprust_generated_tokens_total") >= 32.0);
    for g in [
        "deeprust_queue_length",
        "deeprust_running_sequences",
        "deeprust_kv_blocks_used",
        "deeprust_kv_blocks_free",
        "deeprust_prefix_cache_hit_rate",
    ] {
        assert!(m.contains(&format!("# TYPE {g} gauge")), "{g}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn api_keys_and_rate_limits() {
    let access = server::AccessConfig {
        keys: vec![
            ("sk-good".into(), None),
            (
                "sk-tight".into(),
                Some(server::Limits {
                    rpm: Some(2),
                    tpm: None,
                    concurrent: None,
                }),
            ),
        ],
        defaults: server::Limits {
            rpm: Some(100),
            tpm: Some(100_000),
            concurrent: Some(4),
        },
    };
    let addr = start_with(access).await;
    let body =
        json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}).to_string();
    // no key, a wrong key: 401 with OpenAI's body; the probes stay open
    let (st, _, b) = http_full(addr, "POST", "/v1/chat/completions", Some(&body), "").await;
    assert_eq!(
        (st, json(&b)["error"]["code"].as_str()),
        (401, Some("invalid_api_key"))
    );
    let (st, _, _) = http_full(
        addr,
        "GET",
        "/v1/models",
        None,
        "Authorization: Bearer sk-bad\r\n",
    )
    .await;
    assert_eq!(st, 401);
    assert_eq!(http(addr, "GET", "/health", None).await.0, 200);
    // a good key, with the limit headers
    let (st, head, _) = http_full(
        addr,
        "POST",
        "/v1/chat/completions",
        Some(&body),
        "Authorization: Bearer sk-good\r\n",
    )
    .await;
    assert_eq!(st, 200);
    let head = head.to_ascii_lowercase();
    assert!(head.contains("x-ratelimit-limit-requests: 100"), "{head}");
    assert!(
        head.contains("x-ratelimit-remaining-requests: 99"),
        "{head}"
    );
    assert!(head.contains("x-ratelimit-limit-tokens: 100000"), "{head}");
    // the tight key: two requests a minute, then 429 with Retry-After
    for _ in 0..2 {
        assert_eq!(
            http_full(
                addr,
                "GET",
                "/v1/models",
                None,
                "Authorization: Bearer sk-tight\r\n"
            )
            .await
            .0,
            200
        );
    }
    let (st, head, b) = http_full(
        addr,
        "GET",
        "/v1/models",
        None,
        "Authorization: Bearer sk-tight\r\n",
    )
    .await;
    assert_eq!(st, 429);
    assert_eq!(json(&b)["error"]["code"], "rate_limit_exceeded");
    let head = head.to_ascii_lowercase();
    assert!(head.contains("retry-after: "), "{head}");
    assert!(head.contains("x-ratelimit-remaining-requests: 0"), "{head}");
    // other keys are not affected
    assert_eq!(
        http_full(
            addr,
            "GET",
            "/v1/models",
            None,
            "Authorization: Bearer sk-good\r\n"
        )
        .await
        .0,
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_disconnects_mid_stream_frees_its_blocks() {
    use std::sync::atomic::Ordering::Relaxed;
    let (addr, engine) = start_engine(server::AccessConfig::default()).await;
    let body = json!({"prompt": "Once upon a time", "max_tokens": 900, "ignore_eos": true, "stream": true}).to_string();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST /v1/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = 0;
    while got < 2000 {
        got += s.read(&mut buf).await.unwrap();
    }
    assert!(
        engine.stats().kv_blocks_used.load(Relaxed) > 0,
        "the request is running"
    );
    drop(s);
    for _ in 0..300 {
        if engine.stats().kv_blocks_used.load(Relaxed) == 0
            && engine.stats().running.load(Relaxed) == 0
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!(
        "the disconnected request still holds blocks: {:?}",
        engine.stats()
    );
}

/// The in-browser page's static files at /local/: types the browser needs (wasm as
/// application/wasm, or streaming compilation refuses it), no way out of the directory, and
/// a clear 404 when no page is served.
#[tokio::test]
async fn the_local_page_is_served_as_static_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("pkg")).unwrap();
    std::fs::write(dir.path().join("index.html"), "<title>page</title>").unwrap();
    std::fs::write(dir.path().join("pkg/web.js"), "export {}").unwrap();
    std::fs::write(dir.path().join("pkg/web_bg.wasm"), b"\0asm\x01\0\0\0").unwrap();
    std::fs::write(dir.path().join("secret.txt"), "no").unwrap();
    let serve = |page: Option<std::path::PathBuf>| async move {
        let model = Arc::new(model::Model::load(&embedded::checkpoint().unwrap()).unwrap());
        let tok = Arc::new(embedded::tokenizer().unwrap());
        let cfg = EngineConfig {
            kv_blocks: 64,
            block_size: 16,
            max_batch_tokens: 64,
            max_running: 2,
            ctx_size: 256,
        };
        let engine = EngineHandle::start(model, Some(tok.clone()), cfg);
        let state = Arc::new(AppState::new(engine, tok, "m".into()).with_local_page(page));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app(state)).await.unwrap() });
        addr
    };
    let addr = serve(Some(dir.path().to_path_buf())).await;
    let (st, head, _) = http_full(addr, "GET", "/local", None, "").await;
    assert_eq!(st, 308, "{head}");
    assert!(
        head.to_ascii_lowercase().contains("location: /local/"),
        "{head}"
    );
    let (st, head, body) = http_full(addr, "GET", "/local/", None, "").await;
    assert_eq!((st, body.as_str()), (200, "<title>page</title>"));
    assert!(head.contains("text/html"), "{head}");
    let (st, head, _) = http_full(addr, "GET", "/local/pkg/web.js", None, "").await;
    assert!(st == 200 && head.contains("text/javascript"), "{head}");
    let (st, head, _) = http_full(addr, "GET", "/local/pkg/web_bg.wasm", None, "").await;
    assert!(st == 200 && head.contains("application/wasm"), "{head}");
    for bad in [
        "/local/pkg/../secret.txt",
        "/local/..%2fsecret.txt",
        "/local//etc/passwd",
        "/local/nothing.js",
    ] {
        let (st, body) = http(addr, "GET", bad, None).await;
        assert_eq!(st, 404, "{bad}: {body}");
        assert_ne!(body, "no", "{bad} reached a file outside the page");
    }
    let addr = serve(None).await;
    let (st, body) = http(addr, "GET", "/local/", None).await;
    assert_eq!(st, 404);
    assert!(body.contains("build-wasm.sh"), "{body}");
}
