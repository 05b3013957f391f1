//! Shared state of one simulated node and the WebSocket fan-out.
//!
//! One `std::sync::Mutex` guards everything the HTTP handlers and the worker share (queue,
//! history, cache, GPU residency, registered sockets). Frames are pushed into each socket's
//! channel while that lock is held, so every socket sees events in the single FIFO order
//! ComfyUI produces. Sockets are registered by sid with ComfyUI's replace-on-connect and
//! remove-by-sid-on-close rules, which reproduces its duplicate-client-id hazard on purpose.
//!
//! The channel never blocks the sender (the worker must not stall on one slow socket), so each
//! socket counts the bytes it has queued but not yet written ([`Backlog`]); past the node's
//! `ws_backlog_bytes` the socket is cut instead of letting a client that never reads grow the
//! node's memory without bound.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Map, Value, json};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::catalogue::Catalogue;
use crate::config::{FaultConfig, NodeConfig};
use crate::gpu::GpuState;
use crate::heap::PyHeap;
use crate::pyjson;

/// A frame queued for one socket.
#[derive(Debug, Clone)]
pub enum Frame {
    /// A JSON text frame.
    Text(String),
    /// A binary frame.
    Binary(Vec<u8>),
    /// Close the socket (a dropped connection, as a fault).
    Close,
}

impl Frame {
    /// Payload size, for the backlog accounting.
    pub fn len(&self) -> usize {
        match self {
            Frame::Text(t) => t.len(),
            Frame::Binary(b) => b.len(),
            Frame::Close => 0,
        }
    }

    /// Whether the frame carries no payload.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Bytes queued for one socket and not yet handed to its connection.
#[derive(Debug)]
pub struct Backlog {
    /// Queued payload bytes.
    bytes: AtomicUsize,
    /// Most bytes allowed before the socket is cut.
    limit: usize,
    /// Fired once the limit was passed; the socket task then closes the connection.
    overflowed: CancellationToken,
}

impl Backlog {
    /// An empty backlog allowing `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Backlog {
            bytes: AtomicUsize::new(0),
            limit,
            overflowed: CancellationToken::new(),
        }
    }

    /// Counts a frame in; false (and the overflow fired) when it does not fit.
    pub fn admit(&self, len: usize) -> bool {
        if self.overflowed.is_cancelled() {
            return false;
        }
        let before = self.bytes.fetch_add(len, Ordering::Relaxed);
        if before.saturating_add(len) > self.limit {
            self.bytes.fetch_sub(len, Ordering::Relaxed);
            self.overflowed.cancel();
            return false;
        }
        true
    }

    /// Counts a frame out once the socket task has taken it from the channel.
    pub fn release(&self, len: usize) {
        self.bytes.fetch_sub(len, Ordering::Relaxed);
    }

    /// Bytes queued now.
    pub fn queued(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Resolves once the backlog overflowed.
    pub async fn overflowed(&self) {
        self.overflowed.cancelled().await
    }
}

/// A registered socket.
#[derive(Debug)]
pub struct Client {
    /// Connection serial, to tell sockets sharing a sid apart.
    pub conn_id: u64,
    /// Sender half; the socket task owns the receiver and ends when it is dropped.
    pub tx: mpsc::UnboundedSender<Frame>,
    /// Whether the client announced `supports_preview_metadata`.
    pub preview_metadata: bool,
    /// Bytes queued for this socket, shared with its task.
    pub backlog: Arc<Backlog>,
}

impl Client {
    /// Queues a frame unless the socket's backlog is full (the socket is then being cut).
    pub fn push(&self, frame: Frame) -> bool {
        if !self.backlog.admit(frame.len()) {
            return false;
        }
        if self.tx.send(frame).is_err() {
            return false;
        }
        true
    }
}

/// One queued prompt: `[number, prompt_id, prompt, extra_data, outputs_to_execute]`.
#[derive(Debug, Clone)]
pub struct QueueItem {
    /// Priority as sent back (int from the counter, float when explicit).
    pub number: Value,
    /// Prompt id.
    pub prompt_id: String,
    /// The validated (coerced) graph.
    pub prompt: Value,
    /// Extra data including `client_id`.
    pub extra_data: Map<String, Value>,
    /// Output node ids to execute.
    pub outputs: Vec<String>,
    /// Creation time in ms (newer profile's jobs API).
    pub created_ms: u64,
}

impl QueueItem {
    /// The 5-element JSON array of `/queue`.
    pub fn to_json(&self, strip_sensitive: bool) -> Value {
        let mut extra = self.extra_data.clone();
        if strip_sensitive {
            extra.shift_remove("auth_token_comfy_org");
            extra.shift_remove("api_key_comfy_org");
        }
        json!([
            self.number,
            self.prompt_id,
            self.prompt,
            extra,
            self.outputs
        ])
    }

    /// The prompt's client id, if any.
    pub fn client_id(&self) -> Option<String> {
        match self.extra_data.get("client_id") {
            None | Some(Value::Null) => None,
            Some(v) => Some(pyjson::py_str(v)),
        }
    }
}

fn queue_less(a: &QueueItem, b: &QueueItem) -> bool {
    let x = a.number.as_f64().unwrap_or(0.0);
    let y = b.number.as_f64().unwrap_or(0.0);
    if x != y {
        return x < y;
    }
    a.prompt_id < b.prompt_id
}

/// A cached node result (classic cache, keyed by input signature).
#[derive(Debug, Clone)]
pub struct CacheEntry {
    /// Output values for downstream nodes.
    pub outputs: Vec<crate::nodes::Out>,
    /// UI dict, for output nodes.
    pub ui: Option<Value>,
}

/// Everything behind the node's lock.
pub struct Inner {
    /// The `number` counter.
    pub counter: i64,
    /// Pending prompts.
    pub queue: PyHeap<QueueItem>,
    /// The running prompt.
    pub running: Option<QueueItem>,
    /// Node currently executing (for reconnecting clients).
    pub running_node: Option<String>,
    /// Finished prompts, oldest first.
    pub history: Map<String, Value>,
    /// Registered sockets by sid.
    pub clients: HashMap<String, Client>,
    /// Classic cache: signature -> result.
    pub cache: HashMap<String, CacheEntry>,
    /// GPU residency.
    pub gpu: GpuState,
    /// `/free` requests waiting for the worker: (unload_models, free_memory).
    pub pending_free: (bool, bool),
    /// Faults in force.
    pub faults: FaultConfig,
}

/// Counters a test or benchmark reads through the node handle.
#[derive(Debug, Default)]
pub struct Counters {
    /// POST /prompt requests that reached the handler.
    pub prompt_posts: AtomicU64,
    /// Prompts accepted into the queue.
    pub prompts_queued: AtomicU64,
    /// Prompts finished (any outcome).
    pub prompts_finished: AtomicU64,
    /// Prompts finished with success.
    pub prompts_succeeded: AtomicU64,
    /// WebSocket frames sent.
    pub ws_frames: AtomicU64,
    /// Connection serial source.
    pub next_conn: AtomicU64,
}

/// Folders of the node's file store.
#[derive(Debug, Clone)]
pub struct Dirs {
    /// Root (removed on shutdown when `owned`).
    pub root: PathBuf,
    /// `input/`.
    pub input: PathBuf,
    /// `output/`.
    pub output: PathBuf,
    /// `temp/`.
    pub temp: PathBuf,
    /// Whether the emulator created the root and removes it.
    pub owned: bool,
}

/// State shared by the HTTP handlers, the socket tasks and the worker.
pub struct Shared {
    /// Configuration.
    pub config: NodeConfig,
    /// Class catalogue.
    pub catalogue: Catalogue,
    /// File store.
    pub dirs: Dirs,
    /// Locked state.
    inner: Mutex<Inner>,
    /// Wakes the worker when a prompt is queued.
    pub wake: Notify,
    /// ComfyUI's process-wide interrupt flag.
    pub interrupt: AtomicBool,
    /// Counters.
    pub counters: Counters,
}

impl Shared {
    /// Fresh state (empty queue and history).
    pub fn new(config: NodeConfig, catalogue: Catalogue, dirs: Dirs) -> Self {
        let inner = Inner {
            counter: 0,
            queue: PyHeap::new(queue_less),
            running: None,
            running_node: None,
            history: Map::new(),
            clients: HashMap::new(),
            cache: HashMap::new(),
            gpu: GpuState::new(&config.gpu),
            pending_free: (false, false),
            faults: config.faults.clone(),
        };
        Shared {
            config,
            catalogue,
            dirs,
            inner: Mutex::new(inner),
            wake: Notify::new(),
            interrupt: AtomicBool::new(false),
            counters: Counters::default(),
        }
    }

    /// Locks the state; a poisoned lock is recovered (the data stays usable for an emulator).
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Model files of a folder on this node, sorted like `/models/{folder}`.
    pub fn model_files(&self, folder: &str) -> Vec<String> {
        let mut files: Vec<String> = self
            .config
            .models
            .iter()
            .filter(|f| f.folder == folder)
            .flat_map(|f| f.files.iter().map(|m| m.name.clone()))
            .collect();
        files.sort();
        files
    }

    /// Files in the input folder (top level and subfolders, `/`-joined), sorted.
    pub fn input_files(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        walk(&self.dirs.input, "", &mut out, 0);
        out
    }
}

fn walk(dir: &std::path::Path, prefix: &str, out: &mut BTreeSet<String>, depth: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let path = entry.path();
        if path.is_dir() {
            if depth < 4 {
                walk(&path, &format!("{prefix}{name}/"), out, depth + 1);
            }
        } else {
            out.insert(format!("{prefix}{name}"));
        }
    }
}

impl Inner {
    /// `queue_remaining`: pending plus running.
    pub fn queue_remaining(&self) -> usize {
        self.queue.len() + usize::from(self.running.is_some())
    }

    /// The `status` payload.
    pub fn status_data(&self) -> Value {
        json!({"status": {"exec_info": {"queue_remaining": self.queue_remaining()}}})
    }

    /// Sends an event: to `sid` when given (dropped if that sid has no socket), else to all.
    pub fn send(&self, counters: &Counters, event: &str, data: Value, sid: Option<&str>) {
        if self.faults.silence_ws {
            return;
        }
        let text = pyjson::to_string(&json!({"type": event, "data": data}));
        match sid {
            Some(sid) => {
                if let Some(c) = self.clients.get(sid)
                    && c.push(Frame::Text(text))
                {
                    counters.ws_frames.fetch_add(1, Ordering::Relaxed);
                }
            }
            None => {
                for c in self.clients.values() {
                    if c.push(Frame::Text(text.clone())) {
                        counters.ws_frames.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }

    /// Sends a binary frame built per client (preview format depends on the client's flags).
    pub fn send_binary(
        &self,
        counters: &Counters,
        sid: Option<&str>,
        build: &dyn Fn(bool) -> Option<Vec<u8>>,
    ) {
        if self.faults.silence_ws {
            return;
        }
        let targets: Vec<&Client> = match sid {
            Some(sid) => self.clients.get(sid).into_iter().collect(),
            None => self.clients.values().collect(),
        };
        for c in targets {
            if let Some(bytes) = build(c.preview_metadata)
                && c.push(Frame::Binary(bytes))
            {
                counters.ws_frames.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Broadcasts the queue status (ComfyUI's `queue_updated`).
    pub fn broadcast_status(&self, counters: &Counters) {
        self.send(counters, "status", self.status_data(), None);
    }

    /// Closes and unregisters every socket (a dropped-connection fault).
    pub fn drop_all_sockets(&mut self) {
        for (_, c) in self.clients.drain() {
            let _ = c.push(Frame::Close);
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Shared state handle.
pub type SharedRef = Arc<Shared>;
