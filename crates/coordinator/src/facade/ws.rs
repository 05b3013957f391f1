//! `/ws?clientId=`: a ComfyUI WebSocket session over the fleet.
//!
//! Each socket registers under its session id (`clientId`, or a fresh 32-hex id) in
//! [`Clients`]; relays ([`super::relay`]) publish that client's messages there. The socket
//! sends the first `status` with `sid`, answers a `feature_flags` first frame, and encodes
//! previews as binary event 1 (`PREVIEW_IMAGE`) or, for clients that announced
//! `supports_preview_metadata`, event 4 (`PREVIEW_IMAGE_WITH_METADATA`).
//!
//! NOTE: only messages of the client's own prompts reach a socket (plus its first `status`);
//! ComfyUI also broadcasts every `status` change and the `progress` of prompts without a
//! client to all sockets, which the facade does not, so a client that relies on broadcast
//! `status` to track the queue sees it only when its own prompts move.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tracing::debug;

use super::Facade;

/// Messages buffered per client before a slow socket starts losing them.
const CLIENT_BUFFER: usize = 1024;

/// One message for a client's sockets.
#[derive(Debug, Clone)]
pub(crate) enum Outgoing {
    /// A JSON text frame.
    Json {
        /// The message `type` (kept for tests and logs).
        #[cfg_attr(not(test), allow(dead_code))]
        kind: String,
        /// The whole frame text.
        text: String,
    },
    /// An image preview, encoded per socket.
    Preview {
        /// The graph node that produced it.
        node_id: Option<String>,
        /// The facade prompt id.
        prompt_id: String,
        /// `image/jpeg` or `image/png`.
        content_type: String,
        /// The encoded image.
        bytes: Bytes,
    },
}

impl Outgoing {
    /// A `{type, data}` text frame.
    pub(crate) fn json(kind: &str, data: Value) -> Self {
        Self::Json {
            kind: kind.to_owned(),
            text: json!({"type": kind, "data": data}).to_string(),
        }
    }

    fn frame(&self, metadata: bool) -> Message {
        match self {
            Self::Json { text, .. } => Message::Text(text.clone().into()),
            Self::Preview {
                node_id,
                prompt_id,
                content_type,
                bytes,
            } => {
                let mut out = Vec::with_capacity(bytes.len() + 128);
                if metadata {
                    let meta = json!({
                        "node_id": node_id, "prompt_id": prompt_id, "display_node_id": node_id,
                        "parent_node_id": null, "real_node_id": node_id,
                        "image_type": content_type,
                    })
                    .to_string();
                    out.extend_from_slice(&4u32.to_be_bytes());
                    out.extend_from_slice(&(meta.len() as u32).to_be_bytes());
                    out.extend_from_slice(meta.as_bytes());
                } else {
                    let format: u32 = if content_type == "image/png" { 2 } else { 1 };
                    out.extend_from_slice(&1u32.to_be_bytes());
                    out.extend_from_slice(&format.to_be_bytes());
                }
                out.extend_from_slice(bytes);
                Message::Binary(out.into())
            }
        }
    }
}

/// Connected sessions by client id.
#[derive(Default)]
pub(crate) struct Clients {
    by_id: Mutex<HashMap<String, broadcast::Sender<Arc<Outgoing>>>>,
}

impl Clients {
    fn subscribe(&self, client: &str) -> broadcast::Receiver<Arc<Outgoing>> {
        let mut map = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(client.to_owned())
            .or_insert_with(|| broadcast::channel(CLIENT_BUFFER).0)
            .subscribe()
    }

    /// Sends to every socket of `client`; dropped when it has none, as in ComfyUI.
    pub(crate) fn publish(&self, client: &str, message: Outgoing) {
        let map = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sender) = map.get(client) {
            let _ = sender.send(Arc::new(message));
        }
    }

    fn release(&self, client: &str) {
        let mut map = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(client).is_some_and(|s| s.receiver_count() == 0) {
            map.remove(client);
        }
    }
}

/// `GET /ws`.
pub(crate) async fn websocket(
    State(facade): State<Arc<Facade>>,
    Query(query): Query<HashMap<String, String>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let sid = query
        .get("clientId")
        .filter(|id| !id.is_empty())
        .cloned()
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    upgrade.on_upgrade(move |socket| serve(facade, sid, socket))
}

async fn serve(facade: Arc<Facade>, sid: String, mut socket: WebSocket) {
    let mut rx = facade.clients.subscribe(&sid);
    let remaining = super::relay::queue_remaining_of(&facade).await;
    let first = json!({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": remaining}}, "sid": sid}});
    if socket
        .send(Message::Text(first.to_string().into()))
        .await
        .is_err()
    {
        facade.clients.release(&sid);
        return;
    }
    let mut metadata = false;
    let mut first_frame = true;
    loop {
        tokio::select! {
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    // Only the first text frame is examined, as in ComfyUI.
                    if std::mem::take(&mut first_frame) {
                        let parsed: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                        if parsed.get("type").and_then(Value::as_str) == Some("feature_flags") {
                            metadata = parsed["data"]["supports_preview_metadata"] == json!(true);
                            let reply = json!({"type": "feature_flags", "data": super::discovery::feature_flags()});
                            if socket.send(Message::Text(reply.to_string().into())).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            outgoing = rx.recv() => match outgoing {
                Ok(message) => {
                    if socket.send(message.frame(metadata)).await.is_err() {
                        break;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    debug!(client_id = %sid, missed, "facade socket too slow; messages dropped");
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
        }
    }
    drop(rx);
    facade.clients.release(&sid);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn preview() -> Outgoing {
        Outgoing::Preview {
            node_id: Some("3".into()),
            prompt_id: "p".into(),
            content_type: "image/png".into(),
            bytes: Bytes::from_static(b"IMG"),
        }
    }

    #[test]
    fn previews_are_event_1_without_metadata_and_event_4_with_it() {
        let Message::Binary(plain) = preview().frame(false) else {
            panic!("binary frame")
        };
        assert_eq!(
            &plain[..8],
            &[0, 0, 0, 1, 0, 0, 0, 2],
            "event 1, format png"
        );
        assert_eq!(&plain[8..], b"IMG");

        let Message::Binary(rich) = preview().frame(true) else {
            panic!("binary frame")
        };
        assert_eq!(&rich[..4], &[0, 0, 0, 4]);
        let len = u32::from_be_bytes([rich[4], rich[5], rich[6], rich[7]]) as usize;
        let meta: Value = serde_json::from_slice(&rich[8..8 + len]).expect("metadata json");
        assert_eq!(meta["prompt_id"], "p");
        assert_eq!(meta["node_id"], "3");
        assert_eq!(meta["image_type"], "image/png");
        assert_eq!(&rich[8 + len..], b"IMG");
    }
}
