//! The long-lived WebSocket to one node: connect, decode, watch for silence, reconnect.
//!
//! Problem: ComfyUI never pings and sends nothing while idle, so a dead connection looks like
//! an idle node; and reconnecting with the same client id while the old socket is still open
//! silently unregisters the new socket once the server cleans up the old one (protocol §4.1).
//!
//! Approach: a background task owns the socket and sends [`WsItem`]s into a bounded channel
//! (backpressure instead of dropped events). After `idle_timeout` without any frame it reports
//! [`WsItem::Idle`] and sends a ping (the server answers pings); if another `idle_timeout`
//! passes without even a pong, the socket is declared dead. Before every reconnect the old
//! socket is closed fully (close handshake awaited, else the TCP connection dropped) and the
//! task waits at least `backoff_min`, so the server has run its cleanup of the old session
//! before the new one registers under the same client id. After any
//! [`WsItem::Disconnected`], events may have been lost: the owner reconciles through `/queue`
//! and `/history`.
//!
//! NOTE: when the TCP connection died silently (network partition), the node may notice the
//! old socket only after the new one registered, and its cleanup then unregisters the new
//! session (the node never pings). The stream cannot detect that; the idle watchdog and the
//! owner's periodic `/queue` + `/history` reconciliation are the safety net.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{FutureExt, SinkExt, Stream, StreamExt};
use serde_json::{Map, Value};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tracing::{debug, info, warn};

use super::events::WsEvent;
use crate::error::{Error, ErrorKind};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Settings of an [`EventStream`].
#[derive(Debug, Clone)]
pub struct WsConfig {
    /// Silence after which [`WsItem::Idle`] is reported and a ping sent; twice this without any
    /// frame declares the socket dead. Default 30 s.
    pub idle_timeout: Duration,
    /// Deadline of the WebSocket handshake. Default 10 s.
    pub connect_timeout: Duration,
    /// How long to wait for the close handshake before dropping the TCP connection. Default 5 s.
    pub close_timeout: Duration,
    /// First reconnect delay, also the minimum pause between closing a socket and opening the
    /// next. Default 500 ms.
    pub backoff_min: Duration,
    /// Largest reconnect delay. Default 30 s.
    pub backoff_max: Duration,
    /// Client flags sent as the first text frame (`feature_flags` handshake); `None` sends
    /// nothing (the node then uses binary event 1 for previews). Default
    /// `{"supports_preview_metadata": true}`.
    pub feature_flags: Option<Map<String, Value>>,
    /// Capacity of the channel to the owner. Default 1024.
    pub channel_capacity: usize,
}

impl Default for WsConfig {
    fn default() -> Self {
        let mut flags = Map::new();
        flags.insert("supports_preview_metadata".into(), Value::Bool(true));
        Self {
            idle_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            feature_flags: Some(flags),
            channel_capacity: 1024,
        }
    }
}

/// What an [`EventStream`] yields.
#[derive(Debug)]
pub enum WsItem {
    /// A socket was opened. `reconnect` is true for every socket after the first: events may
    /// have been lost in between, reconcile in-flight prompts through `/queue` and `/history`.
    Connected {
        /// Whether an earlier socket of this stream existed.
        reconnect: bool,
    },
    /// A decoded message.
    Event(WsEvent),
    /// A frame that could not be decoded (kind [`ErrorKind::BadFrame`]); the stream goes on.
    BadFrame(Error),
    /// No frame for this long; a ping was sent. An idle node is silent too, so this is a hint
    /// to reconcile, not a failure.
    Idle {
        /// Time since the last frame.
        silent_for: Duration,
    },
    /// The socket failed or could not be opened; the next attempt follows after `retry_in`.
    Disconnected {
        /// Why.
        error: Error,
        /// Delay before the next attempt.
        retry_in: Duration,
    },
}

/// The event stream of one node's WebSocket (see the module docs).
///
/// Dropping it stops the background task, which closes the socket.
pub struct EventStream {
    client_id: String,
    /// Items from the background task; closed when the task ends.
    items_rx: mpsc::Receiver<WsItem>,
    /// Dropping or firing it asks the task to close the socket and stop.
    shutdown_tx: Option<oneshot::Sender<()>>,
    /// The background task; owned so [`EventStream::close`] can await it.
    task: Option<JoinHandle<()>>,
    /// Cuts the wait before the next connection attempt short (see
    /// [`EventStream::retry_now`]).
    retry: Arc<Notify>,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream")
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl EventStream {
    /// Starts the background task for `ws_url` (which must already carry `?clientId=`).
    /// Must be called within a Tokio runtime.
    pub(crate) fn spawn(
        node: String,
        ws_url: url::Url,
        client_id: String,
        config: WsConfig,
    ) -> Self {
        let (items_tx, items_rx) = mpsc::channel(config.channel_capacity.max(1));
        let (shutdown_tx, shutdown_rx) = oneshot::channel();
        let retry = Arc::new(Notify::new());
        let worker = Worker {
            node,
            url: ws_url,
            config,
            items_tx,
            retry: Arc::clone(&retry),
        };
        let task = tokio::spawn(worker.run(shutdown_rx));
        Self {
            client_id,
            items_rx,
            shutdown_tx: Some(shutdown_tx),
            task: Some(task),
            retry,
        }
    }

    /// Tries to connect again without waiting out the backoff, when the socket is down: the
    /// caller knows the node is back (its HTTP answers again), and after a long outage the
    /// backoff could otherwise keep the socket closed for many seconds while the node already
    /// takes work. At least `backoff_min` still passes after the failure, so a server that
    /// is cleaning up the old session is not raced. Does nothing while connected.
    pub fn retry_now(&self) {
        self.retry.notify_one();
    }

    /// The client id (session id) this stream connects with.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// Waits for the next item; `None` once the stream was closed. Cancel-safe.
    pub async fn next(&mut self) -> Option<WsItem> {
        self.items_rx.recv().await
    }

    /// Closes the socket (awaiting the close handshake) and stops the background task.
    pub async fn close(mut self) {
        if let Some(tx) = self.shutdown_tx.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Stream for EventStream {
    type Item = WsItem;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<WsItem>> {
        self.items_rx.poll_recv(cx)
    }
}

/// Why a session ended.
enum SessionEnd {
    /// The owner asked to stop, or dropped the stream.
    Stop,
    /// The socket failed; reconnect.
    Failed(Error),
}

struct Worker {
    node: String,
    url: url::Url,
    config: WsConfig,
    items_tx: mpsc::Sender<WsItem>,
    retry: Arc<Notify>,
}

impl Worker {
    async fn run(self, mut shutdown_rx: oneshot::Receiver<()>) {
        let mut failures: u32 = 0;
        let mut opened_before = false;
        loop {
            // Open a socket; a failure counts towards the backoff like a dropped session.
            let opened = tokio::select! {
                _ = &mut shutdown_rx => return,
                r = tokio::time::timeout(self.config.connect_timeout,
                        tokio_tungstenite::connect_async(self.url.as_str())) => r,
            };
            let error = match opened {
                Ok(Ok((socket, _))) => {
                    info!(node = %self.node, reconnect = opened_before, "websocket connected");
                    let reconnect = std::mem::replace(&mut opened_before, true);
                    failures = 0;
                    match self.session(socket, reconnect, &mut shutdown_rx).await {
                        SessionEnd::Stop => return,
                        SessionEnd::Failed(e) => e,
                    }
                }
                Ok(Err(e)) => self.error(ErrorKind::WebSocket(format!("connect: {e}"))),
                Err(_) => self.error(ErrorKind::WebSocket(format!(
                    "connect: no handshake within {:?}",
                    self.config.connect_timeout
                ))),
            };

            // Report, then wait before the next attempt (always at least backoff_min, so the
            // server has cleaned up the old session before the client id registers again).
            let retry_in = self.backoff(failures);
            failures = failures.saturating_add(1);
            warn!(node = %self.node, error = %error, ?retry_in, "websocket lost");
            if self
                .items_tx
                .send(WsItem::Disconnected { error, retry_in })
                .await
                .is_err()
            {
                return;
            }
            let failed_at = tokio::time::Instant::now();
            // A call to retry while the socket was up says nothing about this failure.
            let _ = self.retry.notified().now_or_never();
            tokio::select! {
                _ = &mut shutdown_rx => return,
                () = tokio::time::sleep(retry_in) => {}
                () = async {
                    self.retry.notified().await;
                    tokio::time::sleep_until(failed_at + self.config.backoff_min).await;
                } => {
                    debug!(node = %self.node, "websocket retried before its backoff ran out");
                }
            }
        }
    }

    fn error(&self, kind: ErrorKind) -> Error {
        Error::new(self.node.clone(), kind)
    }

    fn backoff(&self, failures: u32) -> Duration {
        // NOTE: no jitter: fleets reconnecting to one node at once are not a concern here
        // (one coordinator, one socket per node), so determinism wins.
        let factor = 2u32.saturating_pow(failures.min(16));
        self.config
            .backoff_min
            .saturating_mul(factor)
            .min(self.config.backoff_max)
            .max(self.config.backoff_min)
    }

    /// Runs one socket until it fails or the owner stops; always closes it fully.
    async fn session(
        &self,
        mut socket: Socket,
        reconnect: bool,
        shutdown_rx: &mut oneshot::Receiver<()>,
    ) -> SessionEnd {
        let end = self.pump(&mut socket, reconnect, shutdown_rx).await;
        self.close_fully(socket).await;
        end
    }

    async fn pump(
        &self,
        socket: &mut Socket,
        reconnect: bool,
        shutdown_rx: &mut oneshot::Receiver<()>,
    ) -> SessionEnd {
        // The handshake must be the first text frame the client sends, or the node ignores it.
        if let Some(flags) = &self.config.feature_flags {
            let hello = serde_json::json!({"type": "feature_flags", "data": flags}).to_string();
            if let Err(e) = socket.send(Message::Text(hello.into())).await {
                return SessionEnd::Failed(
                    self.error(ErrorKind::WebSocket(format!("send feature flags: {e}"))),
                );
            }
        }
        if self
            .items_tx
            .send(WsItem::Connected { reconnect })
            .await
            .is_err()
        {
            return SessionEnd::Stop;
        }

        let idle = self.config.idle_timeout;
        let mut pinged = false;
        loop {
            let frame = tokio::select! {
                _ = &mut *shutdown_rx => return SessionEnd::Stop,
                f = tokio::time::timeout(idle, socket.next()) => f,
            };
            let item = match frame {
                Err(_) if pinged => {
                    return SessionEnd::Failed(self.error(ErrorKind::WebSocketSilent(idle * 2)));
                }
                Err(_) => {
                    pinged = true;
                    debug!(node = %self.node, "websocket idle, pinging");
                    if let Err(e) = socket.send(Message::Ping(Default::default())).await {
                        return SessionEnd::Failed(
                            self.error(ErrorKind::WebSocket(format!("ping: {e}"))),
                        );
                    }
                    WsItem::Idle { silent_for: idle }
                }
                Ok(None) => {
                    return SessionEnd::Failed(
                        self.error(ErrorKind::WebSocket("connection closed".into())),
                    );
                }
                Ok(Some(Err(e))) => {
                    return SessionEnd::Failed(self.error(ErrorKind::WebSocket(e.to_string())));
                }
                Ok(Some(Ok(msg))) => {
                    pinged = false;
                    match msg {
                        Message::Text(text) => self.decoded(WsEvent::from_text(text.as_str())),
                        Message::Binary(bytes) => self.decoded(WsEvent::from_binary(&bytes)),
                        Message::Close(frame) => {
                            let why = frame
                                .map(|f| format!("{} {}", u16::from(f.code), f.reason))
                                .unwrap_or_default();
                            return SessionEnd::Failed(self.error(ErrorKind::WebSocket(
                                format!("closed by node {why}").trim_end().to_owned(),
                            )));
                        }
                        // Pongs only reset the watchdog; pings are answered by tungstenite.
                        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
                    }
                }
            };
            if self.items_tx.send(item).await.is_err() {
                return SessionEnd::Stop;
            }
        }
    }

    fn decoded(&self, r: Result<WsEvent, super::FrameError>) -> WsItem {
        match r {
            Ok(ev) => WsItem::Event(ev),
            Err(e) => {
                debug!(node = %self.node, error = %e, "undecodable websocket frame");
                WsItem::BadFrame(self.error(ErrorKind::BadFrame(e)))
            }
        }
    }

    /// Completes the close handshake (or gives up after `close_timeout`), then drops the TCP
    /// connection, so the node has seen this session end before a new one opens.
    async fn close_fully(&self, mut socket: Socket) {
        let handshake = async {
            let _ = socket.close(None).await;
            // Reading until the end drives the close handshake to completion.
            while let Some(Ok(_)) = socket.next().await {}
        };
        if tokio::time::timeout(self.config.close_timeout, handshake)
            .await
            .is_err()
        {
            debug!(node = %self.node, "websocket close handshake timed out; dropping the connection");
        }
    }
}
