//! Two interleaved requests on one WebSocket, one of them cancelled.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use engine::{EngineConfig, EngineHandle};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use server::{AppState, app};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread")]
async fn interleaved_requests_and_a_cancellation() {
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
    let state = Arc::new(AppState::new(
        engine.clone(),
        tok,
        "deeprust-embedded".into(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app(state)).await.unwrap() });

    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    let send = |v: Value| Message::Text(v.to_string().into());
    ws.send(send(json!({"type": "request", "id": "a", "endpoint": "chat",
        "body": {"messages": [{"role": "user", "content": "Tell me a story."}], "max_tokens": 40, "temperature": 0}}))).await.unwrap();
    ws.send(send(json!({"type": "request", "id": "b", "endpoint": "completions",
        "body": {"prompt": "Once upon a time", "max_tokens": 400, "ignore_eos": true, "temperature": 0}}))).await.unwrap();
    ws.send(send(json!({"type": "bogus", "id": "c"})))
        .await
        .unwrap();

    let (mut a_text, mut a_done, mut b_deltas, mut b_cancelled, mut b_done, mut errors) =
        (String::new(), None, 0, false, false, 0);
    let mut a_interleaved_with_b = false;
    while !(a_done.is_some() && b_cancelled) {
        let msg = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .expect("a message")
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_str(msg.to_text().unwrap()).unwrap();
        match (v["type"].as_str().unwrap(), v["id"].as_str()) {
            ("delta", Some("a")) => {
                a_text.push_str(v["content"].as_str().unwrap());
                a_interleaved_with_b |= b_deltas > 0;
            }
            ("done", Some("a")) => a_done = Some(v),
            ("delta", Some("b")) => {
                b_deltas += 1;
                if b_deltas == 3 {
                    ws.send(send(json!({"type": "cancel", "id": "b"})))
                        .await
                        .unwrap();
                }
            }
            ("cancelled", Some("b")) => b_cancelled = true,
            ("done", Some("b")) => b_done = true,
            ("error", Some("c")) => errors += 1,
            ("end", _) => {}
            other => panic!("unexpected {other:?}: {v}"),
        }
    }
    let done = a_done.unwrap();
    assert_eq!(done["usage"]["completion_tokens"], 40);
    assert!(!a_text.is_empty());
    assert!(a_interleaved_with_b, "both requests streamed at once");
    assert!(!b_done, "a cancelled request does not finish");
    assert_eq!(errors, 1, "an unknown message type is a typed error");
    // the cancelled request's blocks go back to the pool
    for _ in 0..200 {
        if engine.stats().kv_blocks_used.load(Ordering::Relaxed) == 0
            && engine.stats().running.load(Ordering::Relaxed) == 0
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("blocks still in use: {:?}", engine.stats());
}
