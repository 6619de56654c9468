//! `GET /ws`: several requests at once over one WebSocket, each with a client-chosen id;
//! any of them can be cancelled. The protocol is in docs/websocket.md.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use engine::EngineEvent;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};
use tokio::task::JoinHandle;

use crate::error::ApiError;
use crate::openai::{ChatRequest, CompletionRequest};
use crate::{AppState, chat_request, completion_request, finish_str};

pub async fn upgrade(State(s): State<Arc<AppState>>, up: WebSocketUpgrade) -> Response {
    up.on_upgrade(move |socket| session(s, socket))
}

fn error(id: Option<&str>, e: &ApiError) -> Value {
    json!({"type": "error", "id": id, "status": e.status.as_u16(), "error": e.body()["error"]})
}

/// Build and submit one request; its events go to `out` until it ends.
fn start(
    s: &Arc<AppState>,
    id: String,
    v: &Value,
    out: UnboundedSender<Value>,
) -> Result<JoinHandle<()>, ApiError> {
    let body = v.get("body").cloned().unwrap_or(Value::Null);
    let parse_err = |e: serde_json::Error| {
        ApiError::bad_request(format!("Invalid request body: {e}"), Some("body"))
    };
    let req = match v.get("endpoint").and_then(Value::as_str).unwrap_or("chat") {
        "chat" => {
            chat_request(
                s,
                &serde_json::from_value::<ChatRequest>(body).map_err(parse_err)?,
            )?
            .0
        }
        "completions" => completion_request(
            s,
            &serde_json::from_value::<CompletionRequest>(body).map_err(parse_err)?,
        )?,
        other => {
            return Err(ApiError::bad_request(
                format!("unknown endpoint `{other}` (chat, completions)"),
                Some("endpoint"),
            ));
        }
    };
    let prompt_tokens = req.prompt.len();
    let mut events = s.engine.submit(req)?;
    Ok(tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            let msg = match ev {
                EngineEvent::Token { index, token, text } => {
                    json!({"type": "delta", "id": id, "index": index, "content": text, "token_id": token.id, "logprob": token.logprob})
                }
                EngineEvent::Done {
                    index,
                    reason,
                    usage,
                } => json!({
                    "type": "done", "id": id, "index": index, "finish_reason": finish_str(reason),
                    "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": usage.completion_tokens,
                              "total_tokens": prompt_tokens + usage.completion_tokens},
                }),
                EngineEvent::Error(e) => {
                    json!({"type": "error", "id": id, "status": 500, "error": {"message": e, "type": "server_error", "param": null, "code": null}})
                }
            };
            if out.send(msg).is_err() {
                return; // the connection is gone: dropping `events` cancels the request
            }
        }
        let _ = out.send(json!({"type": "end", "id": id}));
    }))
}

async fn session(s: Arc<AppState>, socket: WebSocket) {
    let (mut sink, mut incoming) = socket.split();
    let (out, mut queue) = unbounded_channel::<Value>();
    let writer = tokio::spawn(async move {
        while let Some(v) = queue.recv().await {
            if sink
                .send(Message::Text(v.to_string().into()))
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let mut running: HashMap<String, JoinHandle<()>> = HashMap::new();
    while let Some(Ok(msg)) = incoming.next().await {
        let text = match msg {
            Message::Text(t) => t.to_string(),
            Message::Close(_) => break,
            _ => continue,
        };
        running.retain(|_, h| !h.is_finished());
        let v: Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => {
                let _ = out.send(error(
                    None,
                    &ApiError::bad_request(format!("not valid JSON: {e}"), None),
                ));
                continue;
            }
        };
        let Some(id) = v.get("id").and_then(Value::as_str).map(str::to_string) else {
            let _ = out.send(error(
                None,
                &ApiError::bad_request("every message needs a string `id`", Some("id")),
            ));
            continue;
        };
        match v.get("type").and_then(Value::as_str) {
            Some("request") => {
                if running.contains_key(&id) {
                    let _ = out.send(error(
                        Some(&id),
                        &ApiError::bad_request(
                            format!("request `{id}` is still running"),
                            Some("id"),
                        ),
                    ));
                    continue;
                }
                match start(&s, id.clone(), &v, out.clone()) {
                    Ok(h) => {
                        running.insert(id, h);
                    }
                    Err(e) => {
                        let _ = out.send(error(Some(&id), &e));
                    }
                }
            }
            Some("cancel") => match running.remove(&id) {
                Some(h) => {
                    h.abort(); // drops the event stream: the engine frees the request's blocks
                    let _ = out.send(json!({"type": "cancelled", "id": id}));
                }
                None => {
                    let _ = out.send(error(
                        Some(&id),
                        &ApiError::not_found(
                            format!("no running request `{id}`"),
                            Some("id"),
                            "not_found",
                        ),
                    ));
                }
            },
            other => {
                let e = ApiError::bad_request(
                    format!("unknown message type {other:?} (request, cancel)"),
                    Some("type"),
                );
                let _ = out.send(error(Some(&id), &e));
            }
        }
    }
    for h in running.values() {
        h.abort();
    }
    drop(out);
    let _ = writer.await;
}
