//! The OpenAI-compatible HTTP server. `app(state)` builds the router; `main` lives in the
//! CLI. Handlers turn requests into engine requests and engine events into OpenAI's JSON and
//! server-sent events; they never see sequences or tensors.

mod access;
mod error;
mod metrics;
mod openai;
mod think;
mod ws;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Request, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as Sse, KeepAlive};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json};
use engine::{EngineEvent, EngineHandle, EventStream, FinishReason, Sampled};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokenizer::Tokenizer;

pub use access::{AccessConfig, Identity, Limits};
pub use error::ApiError;
use openai::{ChatRequest, CompletionRequest};

/// Everything the handlers share.
pub struct AppState {
    pub engine: EngineHandle,
    pub tokenizer: Arc<Tokenizer>,
    /// The name clients use in `model`.
    pub model_id: String,
    pub created: u64,
    /// Default max_tokens when a request gives none.
    pub default_max_tokens: usize,
    pub access: AccessConfig,
    limiter: Arc<access::Limiter>,
    metrics: metrics::Metrics,
    next_id: AtomicU64,
    /// The in-browser page's files (web/ as scripts/build-wasm.sh leaves it), served at
    /// `/local/`.
    pub local_page: Option<std::path::PathBuf>,
}

impl AppState {
    pub fn new(engine: EngineHandle, tokenizer: Arc<Tokenizer>, model_id: String) -> AppState {
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        AppState {
            engine,
            tokenizer,
            model_id,
            created,
            default_max_tokens: 256,
            access: AccessConfig::default(),
            limiter: Arc::default(),
            metrics: metrics::Metrics::default(),
            next_id: AtomicU64::new(1),
            local_page: None,
        }
    }

    /// Serve the in-browser page (a directory of static files) at `/local/`.
    pub fn with_local_page(mut self, dir: Option<std::path::PathBuf>) -> AppState {
        self.local_page = dir;
        self
    }

    pub fn with_access(mut self, access: AccessConfig) -> AppState {
        self.access = access;
        self
    }

    fn fingerprint(&self) -> String {
        format!("fp_deeprust_{}", env!("CARGO_PKG_VERSION").replace('.', ""))
    }

    fn check_model(&self, model: &Option<String>) -> Result<(), ApiError> {
        match model {
            Some(m) if m != &self.model_id => Err(ApiError::not_found(
                format!(
                    "The model `{m}` does not exist (this server serves `{}`)",
                    self.model_id
                ),
                Some("model"),
                "model_not_found",
            )),
            _ => Ok(()),
        }
    }
}

/// Largest request body accepted (413 beyond).
pub const MAX_BODY: usize = 4 << 20;

pub fn app(state: Arc<AppState>) -> Router {
    // Everything but the probes needs a key (when keys are set) and counts against limits.
    let guarded = Router::new()
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .route("/ws", get(ws::upgrade))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            access::guard,
        ));
    Router::new()
        .route(
            "/",
            get(|| async { axum::response::Html(include_str!("chat.html")) }),
        )
        .route(
            "/local",
            get(|| async { axum::response::Redirect::permanent("/local/") }),
        )
        .route("/local/", get(local_page))
        .route("/local/{*path}", get(local_page))
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics::render))
        .route(
            "/openapi.json",
            get(|| async {
                (
                    [("content-type", "application/json")],
                    include_str!("openapi.json"),
                )
            }),
        )
        .merge(guarded)
        .fallback(|| async { ApiError::not_found("Unknown endpoint", None, "not_found") })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::count,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// A file of the in-browser page. The page runs the model itself (WebAssembly in a Web
/// Worker), so nothing here touches the engine, and it needs no API key.
async fn local_page(State(state): State<Arc<AppState>>, path: Option<Path<String>>) -> Response {
    let Some(dir) = &state.local_page else {
        return ApiError::not_found(
            "The in-browser page is not served here: build it with scripts/build-wasm.sh and \
             start `deeprust serve --web-dir web`",
            None,
            "not_found",
        )
        .into_response();
    };
    let rel = path.map(|p| p.0).unwrap_or_default();
    let rel = if rel.is_empty() {
        "index.html".to_string()
    } else {
        rel
    };
    // plain relative names only: no parent, root or empty components
    let safe = rel
        .split('/')
        .all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains('\\'));
    let missing = || ApiError::not_found(format!("No file `{rel}` in the page"), None, "not_found");
    if !safe {
        return missing().into_response();
    }
    let kind = match rel.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") | Some("mjs") => "text/javascript; charset=utf-8",
        Some("wasm") => "application/wasm",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    };
    let file = dir.join(&rel);
    match tokio::task::spawn_blocking(move || std::fs::read(file)).await {
        Ok(Ok(bytes)) => ([("content-type", kind)], bytes).into_response(),
        _ => missing().into_response(),
    }
}

/// A JSON body whose every rejection (too large, not JSON, wrong types) is OpenAI's error.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError {
                status: e.status(),
                ..ApiError::bad_request(
                    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                        format!("The request body is larger than {MAX_BODY} bytes")
                    } else {
                        e.body_text()
                    },
                    None,
                )
            })?;
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::bad_request(format!("The body is not valid JSON: {e}"), None))?;
        serde_json::from_value(value).map(Body).map_err(|e| {
            let m = e.to_string();
            // serde names the field for missing ones; wrong types name the expected type
            let param = m.split('`').nth(1).map(str::to_string);
            ApiError {
                param,
                ..ApiError::bad_request(format!("Invalid request: {m}"), None)
            }
        })
    }
}

async fn ready(State(s): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({"status": "ready", "model": s.model_id}))
}

fn model_card(s: &AppState) -> Value {
    json!({"id": s.model_id, "object": "model", "created": s.created, "owned_by": "deeprust"})
}

async fn models(State(s): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({"object": "list", "data": [model_card(&s)]}))
}

async fn model(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    s.check_model(&Some(id))?;
    Ok(Json(model_card(&s)))
}

async fn tokenize(
    State(s): State<Arc<AppState>>,
    Body(b): Body<Value>,
) -> Result<Json<Value>, ApiError> {
    let ids = if let Some(m) = b.get("messages") {
        let gen_prompt = b
            .get("add_generation_prompt")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        s.tokenizer
            .encode_chat(m, b.get("tools"), gen_prompt)
            .map_err(|e| ApiError::bad_request(e.to_string(), Some("messages")))?
    } else if let Some(p) = b.get("prompt").and_then(Value::as_str) {
        let special = b
            .get("add_special_tokens")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        s.tokenizer
            .encode(p, special)
            .map_err(|e| ApiError::bad_request(e.to_string(), Some("prompt")))?
    } else {
        return Err(ApiError::bad_request(
            "give `prompt` (a string) or `messages`",
            Some("prompt"),
        ));
    };
    Ok(Json(
        json!({"tokens": ids, "count": ids.len(), "max_model_len": s.engine.config().ctx_size}),
    ))
}

async fn detokenize(
    State(s): State<Arc<AppState>>,
    Body(b): Body<Value>,
) -> Result<Json<Value>, ApiError> {
    let ids: Vec<u32> = b
        .get("tokens")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().map(|x| x.as_u64().map(|x| x as u32)).collect())
        .ok_or_else(|| {
            ApiError::bad_request("`tokens` must be an array of token ids", Some("tokens"))
        })?;
    let text = s
        .tokenizer
        .decode(&ids, true)
        .map_err(|e| ApiError::bad_request(e.to_string(), Some("tokens")))?;
    Ok(Json(json!({"prompt": text})))
}

/// Chat or text completion: what differs in the JSON they produce.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// `thinking`: the prompt opened an R1-style reasoning block.
    Chat {
        thinking: bool,
    },
    Text,
}

struct Job {
    kind: Kind,
    id: String,
    n: usize,
    prompt_tokens: usize,
    include_usage: bool,
    logprobs: bool,
    /// Charged with the tokens used when the request ends.
    who: Option<Identity>,
}

type Ident = Option<Extension<Identity>>;

/// A chat request as the engine request it asks for.
/// Also says whether the prompt opened a reasoning block (R1's template ends with `<think>`).
fn chat_request(s: &AppState, r: &ChatRequest) -> Result<(engine::Request, bool), ApiError> {
    s.check_model(&r.common.model)?;
    let bad = |e: tokenizer::TokenizerError| ApiError::bad_request(e.to_string(), Some("messages"));
    let text = s
        .tokenizer
        .apply_chat_template(&r.messages, r.tools.as_ref(), true)
        .map_err(bad)?;
    let thinking = text.trim_end().ends_with("<think>");
    let prompt = s.tokenizer.encode(&text, false).map_err(bad)?;
    let top = match (r.logprobs.unwrap_or(false), r.top_logprobs) {
        (false, Some(_)) => {
            return Err(ApiError::bad_request(
                "top_logprobs needs logprobs: true",
                Some("top_logprobs"),
            ));
        }
        (true, n) => Some(n.unwrap_or(0)),
        (false, None) => None,
    };
    Ok((
        r.common.request(prompt, top, s.default_max_tokens)?,
        thinking,
    ))
}

async fn chat(
    State(s): State<Arc<AppState>>,
    who: Ident,
    Body(r): Body<ChatRequest>,
) -> Result<Response, ApiError> {
    let (req, thinking) = chat_request(&s, &r)?;
    let usage = r.common.stream_options.is_some_and(|o| o.include_usage);
    run(s, who, Kind::Chat { thinking }, req, r.common.stream, usage).await
}

/// A text-completion request as the engine request it asks for.
fn completion_request(s: &AppState, r: &CompletionRequest) -> Result<engine::Request, ApiError> {
    s.check_model(&r.common.model)?;
    let prompt = match &r.prompt {
        Value::String(p) => s
            .tokenizer
            .encode(p, true)
            .map_err(|e| ApiError::bad_request(e.to_string(), Some("prompt")))?,
        Value::Array(a) if !a.is_empty() && a.iter().all(Value::is_u64) => {
            a.iter().map(|x| x.as_u64().unwrap() as u32).collect()
        }
        Value::Array(a) if a.len() == 1 && a[0].is_string() => s
            .tokenizer
            .encode(a[0].as_str().unwrap(), true)
            .map_err(|e| ApiError::bad_request(e.to_string(), Some("prompt")))?,
        _ => {
            return Err(ApiError::bad_request(
                "`prompt` must be a string, one string in an array, or token ids",
                Some("prompt"),
            ));
        }
    };
    if r.echo {
        return Err(ApiError::bad_request("echo is not supported", Some("echo")));
    }
    r.common.request(prompt, r.logprobs, s.default_max_tokens)
}

async fn completions(
    State(s): State<Arc<AppState>>,
    who: Ident,
    Body(r): Body<CompletionRequest>,
) -> Result<Response, ApiError> {
    let req = completion_request(&s, &r)?;
    let usage = r.common.stream_options.is_some_and(|o| o.include_usage);
    run(s, who, Kind::Text, req, r.common.stream, usage).await
}

async fn run(
    s: Arc<AppState>,
    who: Ident,
    kind: Kind,
    req: engine::Request,
    stream: bool,
    include_usage: bool,
) -> Result<Response, ApiError> {
    let seq = s.next_id.fetch_add(1, Ordering::Relaxed);
    let job = Job {
        kind,
        id: format!(
            "{}-{seq}",
            if matches!(kind, Kind::Chat { .. }) {
                "chatcmpl"
            } else {
                "cmpl"
            }
        ),
        n: req.n,
        prompt_tokens: req.prompt.len(),
        include_usage,
        logprobs: req.sampling.logprobs.is_some(),
        who: who.map(|w| w.0),
    };
    let events = s.engine.submit(req)?;
    if stream {
        Ok(stream_response(s, job, events))
    } else {
        collect(s, job, events).await
    }
}

fn finish_str(r: FinishReason) -> &'static str {
    match r {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::Cancelled => "stop",
    }
}

fn token_str(t: &Tokenizer, id: u32) -> String {
    t.decode(&[id], false).unwrap_or_default()
}

/// One token's logprobs in the chat format.
fn chat_logprob(t: &Tokenizer, tok: &Sampled) -> Value {
    let entry = |id: u32, lp: f32| {
        let s = token_str(t, id);
        json!({"token": s, "logprob": lp, "bytes": s.as_bytes()})
    };
    let mut e = entry(tok.id, tok.logprob.unwrap_or(0.0));
    e["top_logprobs"] = tok
        .top_logprobs
        .iter()
        .map(|&(id, lp)| entry(id, lp))
        .collect();
    e
}

fn usage(prompt: usize, completion: usize) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

async fn collect(
    s: Arc<AppState>,
    job: Job,
    mut events: EventStream,
) -> Result<Response, ApiError> {
    struct Choice {
        text: String,
        tokens: Vec<Sampled>,
        finish: Option<FinishReason>,
    }
    let mut choices: Vec<Choice> = (0..job.n)
        .map(|_| Choice {
            text: String::new(),
            tokens: vec![],
            finish: None,
        })
        .collect();
    let mut completion = 0;
    let mut timer = metrics::Timer::new();
    while let Some(ev) = events.recv().await {
        match ev {
            EngineEvent::Token { index, token, text } => {
                timer.token(&s.metrics);
                choices[index].text.push_str(&text);
                choices[index].tokens.push(token);
            }
            EngineEvent::Done {
                index,
                reason,
                usage,
            } => {
                choices[index].finish = Some(reason);
                completion += usage.completion_tokens;
            }
            EngineEvent::Error(e) => {
                return Err(ApiError {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    kind: "server_error",
                    ..ApiError::bad_request(e, None)
                });
            }
        }
    }
    if let Some(w) = &job.who {
        w.charge((job.prompt_tokens + completion) as u64);
    }
    timer.done(&s.metrics, job.prompt_tokens, completion);
    let t = &s.tokenizer;
    let choices: Vec<Value> = choices
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let finish = c.finish.map(finish_str);
            match job.kind {
                Kind::Chat { .. } => json!({
                    "index": i,
                    "message": message(job.kind, &c.text),
                    "logprobs": job.logprobs.then(|| json!({"content": c.tokens.iter().map(|tk| chat_logprob(t, tk)).collect::<Vec<_>>()})),
                    "finish_reason": finish,
                }),
                Kind::Text => json!({
                    "index": i,
                    "text": c.text,
                    "logprobs": job.logprobs.then(|| json!({
                        "tokens": c.tokens.iter().map(|tk| token_str(t, tk.id)).collect::<Vec<_>>(),
                        "token_logprobs": c.tokens.iter().map(|tk| tk.logprob).collect::<Vec<_>>(),
                        "top_logprobs": c.tokens.iter().map(|tk| tk.top_logprobs.iter().map(|&(id, lp)| (token_str(t, id), json!(lp))).collect::<serde_json::Map<_, _>>()).collect::<Vec<_>>(),
                    })),
                    "finish_reason": finish,
                }),
            }
        })
        .collect();
    let object = if matches!(job.kind, Kind::Chat { .. }) {
        "chat.completion"
    } else {
        "text_completion"
    };
    Ok(Json(json!({
        "id": job.id,
        "object": object,
        "created": now(),
        "model": s.model_id,
        "system_fingerprint": s.fingerprint(),
        "choices": choices,
        "usage": usage(job.prompt_tokens, completion),
    }))
    .into_response())
}

/// The assistant message, with R1-style reasoning apart from the answer.
fn message(kind: Kind, text: &str) -> Value {
    let mut split = think::ThinkSplitter::new(matches!(kind, Kind::Chat { thinking: true }));
    let (mut r, mut c) = split.push(text);
    let (r2, c2) = split.flush();
    r.push_str(&r2);
    c.push_str(&c2);
    let mut m = json!({"role": "assistant", "content": c});
    if !r.is_empty() {
        m["reasoning_content"] = r.into();
    }
    m
}

/// A streamed chat delta, reasoning apart from content.
fn delta(reasoning: String, content: String) -> Value {
    let mut d = json!({"content": content});
    if !reasoning.is_empty() {
        d["reasoning_content"] = reasoning.into();
    }
    d
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Server-sent events: a chunk per token, a final chunk per choice, usage if asked, `[DONE]`.
fn stream_response(s: Arc<AppState>, job: Job, events: EventStream) -> Response {
    let (job_n, thinking) = (job.n, matches!(job.kind, Kind::Chat { thinking: true }));
    struct St {
        s: Arc<AppState>,
        job: Job,
        events: EventStream,
        queue: VecDeque<Sse>,
        completion: usize,
        ended: bool,
        created: u64,
        timer: metrics::Timer,
        /// Per choice: reasoning apart from content (chat only).
        split: Vec<think::ThinkSplitter>,
    }
    let chunk = |st: &St, choice: Value| -> Sse {
        let object = if matches!(st.job.kind, Kind::Chat { .. }) {
            "chat.completion.chunk"
        } else {
            "text_completion"
        };
        let mut v = json!({"id": st.job.id, "object": object, "created": st.created, "model": st.s.model_id, "system_fingerprint": st.s.fingerprint(), "choices": [choice]});
        if st.job.include_usage {
            v["usage"] = Value::Null;
        }
        Sse::default().data(v.to_string())
    };
    let mut st = St {
        s,
        job,
        events,
        queue: VecDeque::new(),
        completion: 0,
        ended: false,
        created: now(),
        timer: metrics::Timer::new(),
        split: (0..job_n)
            .map(|_| think::ThinkSplitter::new(thinking))
            .collect(),
    };
    if matches!(st.job.kind, Kind::Chat { .. }) {
        for i in 0..st.job.n {
            let c = chunk(
                &st,
                json!({"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}),
            );
            st.queue.push_back(c);
        }
    }
    let stream = futures_util::stream::unfold(st, move |mut st| async move {
        loop {
            if let Some(e) = st.queue.pop_front() {
                return Some((Ok::<_, Infallible>(e), st));
            }
            if st.ended {
                return None;
            }
            match st.events.recv().await {
                Some(EngineEvent::Token { index, token, text }) => {
                    st.timer.token(&st.s.metrics);
                    let lp = st
                        .job
                        .logprobs
                        .then(|| json!({"content": [chat_logprob(&st.s.tokenizer, &token)]}));
                    let choice = match st.job.kind {
                        Kind::Chat { .. } => {
                            let (r, c) = st.split[index].push(&text);
                            json!({"index": index, "delta": delta(r, c), "logprobs": lp, "finish_reason": null})
                        }
                        Kind::Text => {
                            json!({"index": index, "text": text, "logprobs": lp, "finish_reason": null})
                        }
                    };
                    let c = chunk(&st, choice);
                    st.queue.push_back(c);
                }
                Some(EngineEvent::Done {
                    index,
                    reason,
                    usage: u,
                }) => {
                    st.completion += u.completion_tokens;
                    let choice = match st.job.kind {
                        Kind::Chat { .. } => {
                            let (r, c) = st.split[index].flush();
                            if !r.is_empty() || !c.is_empty() {
                                let held = json!({"index": index, "delta": delta(r, c), "logprobs": null, "finish_reason": null});
                                let e = chunk(&st, held);
                                st.queue.push_back(e);
                            }
                            json!({"index": index, "delta": {}, "logprobs": null, "finish_reason": finish_str(reason)})
                        }
                        Kind::Text => {
                            json!({"index": index, "text": "", "logprobs": null, "finish_reason": finish_str(reason)})
                        }
                    };
                    let c = chunk(&st, choice);
                    st.queue.push_back(c);
                }
                Some(EngineEvent::Error(e)) => {
                    let body = ApiError {
                        status: StatusCode::INTERNAL_SERVER_ERROR,
                        kind: "server_error",
                        ..ApiError::bad_request(e, None)
                    }
                    .body();
                    st.queue
                        .push_back(Sse::default().event("error").data(body.to_string()));
                    st.queue.push_back(Sse::default().data("[DONE]"));
                    st.ended = true;
                }
                None => {
                    if let Some(w) = &st.job.who {
                        w.charge((st.job.prompt_tokens + st.completion) as u64);
                    }
                    st.timer
                        .done(&st.s.metrics, st.job.prompt_tokens, st.completion);
                    if st.job.include_usage {
                        let object = if matches!(st.job.kind, Kind::Chat { .. }) {
                            "chat.completion.chunk"
                        } else {
                            "text_completion"
                        };
                        let v = json!({"id": st.job.id, "object": object, "created": st.created, "model": st.s.model_id, "system_fingerprint": st.s.fingerprint(), "choices": [], "usage": usage(st.job.prompt_tokens, st.completion)});
                        st.queue.push_back(Sse::default().data(v.to_string()));
                    }
                    st.queue.push_back(Sse::default().data("[DONE]"));
                    st.ended = true;
                }
            }
        }
    });
    axum::response::sse::Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Serve `app` on `listener` until SIGINT/SIGTERM; in-flight requests get `grace` to finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    grace: std::time::Duration,
) -> std::io::Result<()> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
    let server = axum::serve(listener, service).with_graceful_shutdown(async move {
        shutdown_signal().await;
        let _ = tx.send(());
    });
    tokio::select! {
        r = server => r,
        _ = async { let _ = rx.await; tokio::time::sleep(grace).await; } => Ok(()),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
