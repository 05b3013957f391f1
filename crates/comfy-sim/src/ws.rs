//! The `/ws` endpoint.
//!
//! A socket's sid is its `clientId` or a fresh uuid4 hex. Registration replaces any socket with
//! the same sid and closing removes the sid's entry whoever owns it now, exactly the rules that
//! make ComfyUI's duplicate-client-id and reconnect hazards observable. The first frame is
//! `status` with the sid; a client of the running prompt then gets `executing{node}` without a
//! prompt id. Only the first text frame from the client may negotiate feature flags.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::ws::{Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::pyjson;
use crate::state::{Backlog, Client, Frame, SharedRef};

/// Serves one upgraded socket until either side closes or the node stops.
pub async fn serve_socket(
    shared: SharedRef,
    socket: WebSocket,
    client_id: Option<String>,
    cancel: CancellationToken,
) {
    let sid = client_id
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let conn_id = shared.counters.next_conn.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = mpsc::unbounded_channel::<Frame>();
    let backlog = Arc::new(Backlog::new(shared.config.ws_backlog_bytes));
    {
        let mut g = shared.lock();
        let mut status = g.status_data();
        status["sid"] = Value::String(sid.clone());
        queue(
            &tx,
            &backlog,
            Frame::Text(pyjson::to_string(
                &json!({"type": "status", "data": status}),
            )),
        );
        let running_client = g.running.as_ref().and_then(|r| r.client_id());
        if running_client.as_deref() == Some(sid.as_str())
            && let Some(node) = &g.running_node
        {
            queue(
                &tx,
                &backlog,
                Frame::Text(pyjson::to_string(
                    &json!({"type": "executing", "data": {"node": node}}),
                )),
            );
        }
        g.clients.insert(
            sid.clone(),
            Client {
                conn_id,
                tx: tx.clone(),
                preview_metadata: false,
                backlog: backlog.clone(),
            },
        );
    }
    tracing::debug!(node = %shared.config.name, %sid, conn_id, "websocket connected");

    let (mut sink, mut stream) = socket.split();
    let mut first_text_seen = false;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = backlog.overflowed() => {
                warn_overflow(&shared, &sid, conn_id, &backlog);
                break;
            }
            frame = rx.recv() => {
                if let Some(f) = &frame {
                    backlog.release(f.len());
                }
                let (msg, last) = match frame {
                    Some(Frame::Text(t)) => (Message::Text(t.into()), false),
                    Some(Frame::Binary(b)) => (Message::Binary(b.into()), false),
                    Some(Frame::Close) | None => (Message::Close(None), true),
                };
                // A client that stops reading blocks this write; the backlog watch and the
                // node's shutdown must still be able to end the socket.
                let sent = tokio::select! {
                    r = sink.send(msg) => r.is_ok(),
                    _ = cancel.cancelled() => false,
                    _ = backlog.overflowed() => {
                        warn_overflow(&shared, &sid, conn_id, &backlog);
                        false
                    }
                };
                if !sent || last {
                    break;
                }
            }
            incoming = stream.next() => {
                match incoming {
                    Some(Ok(Message::Text(text))) => {
                        if first_text_seen {
                            continue;
                        }
                        first_text_seen = true;
                        handle_first_text(&shared, &sid, conn_id, &tx, &backlog, text.as_str());
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => {}
                }
            }
        }
    }

    // ComfyUI's cleanup pops the sid whoever registered it last.
    shared.lock().clients.remove(&sid);
    tracing::debug!(node = %shared.config.name, %sid, conn_id, "websocket closed");
}

fn warn_overflow(shared: &SharedRef, sid: &str, conn_id: u64, backlog: &Backlog) {
    tracing::warn!(node = %shared.config.name, %sid, conn_id, queued_bytes = backlog.queued(),
        limit = shared.config.ws_backlog_bytes, "websocket client is not reading; closing it");
}

fn handle_first_text(
    shared: &SharedRef,
    sid: &str,
    conn_id: u64,
    tx: &mpsc::UnboundedSender<Frame>,
    backlog: &Backlog,
    text: &str,
) {
    let Ok(msg) = serde_json::from_str::<Value>(text) else {
        return;
    };
    if msg.get("type").and_then(Value::as_str) != Some("feature_flags") {
        return;
    }
    let wants_meta = msg
        .get("data")
        .and_then(|d| d.get("supports_preview_metadata"))
        .is_some_and(pyjson::truthy);
    let mut g = shared.lock();
    if let Some(c) = g.clients.get_mut(sid)
        && c.conn_id == conn_id
    {
        c.preview_metadata = wants_meta;
    }
    let reply =
        json!({"type": "feature_flags", "data": crate::http::features_json(&shared.config)});
    queue(tx, backlog, Frame::Text(pyjson::to_string(&reply)));
}

// Frames sent by the socket task itself go through the same backlog accounting as broadcasts.
fn queue(tx: &mpsc::UnboundedSender<Frame>, backlog: &Backlog, frame: Frame) {
    if backlog.admit(frame.len()) {
        let _ = tx.send(frame);
    }
}
