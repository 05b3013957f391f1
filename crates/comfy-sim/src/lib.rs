//! A ComfyUI node emulator for tests, demos and benchmarks of a ComfyUI fleet.
//!
//! There is no GPU and no ComfyUI where the fleet software is built, yet its tests need nodes
//! that answer exactly like production ones. This crate serves the 0.3.64 HTTP and WebSocket
//! protocol (routes, status codes, Python-formatted JSON, event order and routing quirks, see
//! `comfyui-protocol.md` and the recorded captures) on top of a simulated GPU: model files with
//! sizes and load times, VRAM residency with LRU eviction, per-step sampler timing, OOM, and
//! injectable faults (run-time failures, dropped or silent sockets, slow or failing routes,
//! hangs and crashes). Each node is a few tokio tasks, so hundreds fit in one process.
//!
//! ```no_run
//! # async fn demo() -> Result<(), comfy_sim::SimError> {
//! let node = comfy_sim::spawn(comfy_sim::NodeConfig::named("gpu-0").with_time_scale(0.001),
//!                             "127.0.0.1:0".parse().unwrap()).await?;
//! println!("ComfyUI look-alike at {}", node.url());
//! node.shutdown();
//! # Ok(()) }
//! ```

pub mod catalogue;
pub mod config;
pub mod error;
pub mod exec;
pub mod files;
pub mod gpu;
pub mod heap;
pub mod http;
pub mod images;
pub mod jobs;
mod listener;
pub mod nodes;
pub mod outputs;
pub mod pyconv;
pub mod pyjson;
pub mod state;
pub mod validate;
pub mod ws;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::{
    DeviceType, FaultConfig, FleetConfig, FleetNode, GpuConfig, ModelFile, ModelFolder, NodeConfig,
    Profile,
};
pub use error::SimError;

use catalogue::Catalogue;
use state::{Dirs, Shared, SharedRef};

/// A point-in-time view of a node, for assertions and benchmarks.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSnapshot {
    /// POST /prompt requests received.
    pub prompt_posts: u64,
    /// Prompts accepted.
    pub prompts_queued: u64,
    /// Prompts finished (any outcome).
    pub prompts_finished: u64,
    /// Prompts finished successfully.
    pub prompts_succeeded: u64,
    /// Pending plus running.
    pub queue_remaining: usize,
    /// History entries.
    pub history_len: usize,
    /// Resident models, least recently used first.
    pub resident_models: Vec<String>,
    /// VRAM taken by models, bytes.
    pub vram_used_by_models: u64,
    /// VRAM free as reported, bytes.
    pub vram_free: u64,
    /// Registered WebSocket clients.
    pub ws_clients: usize,
    /// WebSocket frames sent since start.
    pub ws_frames: u64,
}

fn snapshot_of(shared: &SharedRef) -> NodeSnapshot {
    let c = &shared.counters;
    let g = shared.lock();
    NodeSnapshot {
        prompt_posts: c.prompt_posts.load(Ordering::Relaxed),
        prompts_queued: c.prompts_queued.load(Ordering::Relaxed),
        prompts_finished: c.prompts_finished.load(Ordering::Relaxed),
        prompts_succeeded: c.prompts_succeeded.load(Ordering::Relaxed),
        queue_remaining: g.queue_remaining(),
        history_len: g.history.len(),
        resident_models: g.gpu.resident(),
        vram_used_by_models: g.gpu.used_by_models(),
        vram_free: g.gpu.free(),
        ws_clients: g.clients.len(),
        ws_frames: c.ws_frames.load(Ordering::Relaxed),
    }
}

/// JSON of the snapshot, served at `/__sim/state`.
pub fn admin_snapshot(shared: &SharedRef) -> Value {
    let s = snapshot_of(shared);
    let faults = serde_json::to_value(&shared.lock().faults).unwrap_or(Value::Null);
    json!({"name": shared.config.name, "prompt_posts": s.prompt_posts, "prompts_queued": s.prompts_queued,
           "prompts_finished": s.prompts_finished, "prompts_succeeded": s.prompts_succeeded,
           "queue_remaining": s.queue_remaining, "history_len": s.history_len, "resident_models": s.resident_models,
           "vram_used_by_models": s.vram_used_by_models, "vram_free": s.vram_free, "ws_clients": s.ws_clients,
           "ws_frames": s.ws_frames, "faults": faults})
}

struct Incarnation {
    shared: SharedRef,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

struct Runtime {
    config: NodeConfig,
    catalogue: Catalogue,
    dirs: Dirs,
    addr: SocketAddr,
    current: Mutex<Option<Incarnation>>,
}

impl Runtime {
    fn stop(&self) {
        let taken = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(inc) = taken {
            inc.cancel.cancel();
            for t in inc.tasks {
                t.abort();
            }
        }
    }
}

/// A running simulated node. Dropping it stops the node and removes its temporary files.
pub struct SimNode {
    rt: Arc<Runtime>,
}

impl std::fmt::Debug for SimNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimNode")
            .field("name", &self.rt.config.name)
            .field("addr", &self.rt.addr)
            .finish()
    }
}

fn make_dirs(config: &NodeConfig) -> Result<Dirs, SimError> {
    let (root, owned) = match &config.data_dir {
        Some(p) => (p.clone(), false),
        None => (
            std::env::temp_dir().join(format!(
                "comfy-sim-{}-{}",
                sanitize(&config.name),
                uuid::Uuid::new_v4().simple()
            )),
            true,
        ),
    };
    let dirs = Dirs {
        input: root.join("input"),
        output: root.join("output"),
        temp: root.join("temp"),
        root,
        owned,
    };
    for d in [&dirs.input, &dirs.output, &dirs.temp] {
        std::fs::create_dir_all(d).map_err(|e| SimError::Store {
            name: config.name.clone(),
            path: d.display().to_string(),
            source: e,
        })?;
    }
    // ComfyUI ships input/example.png; LoadImage's combo lists it.
    let example = dirs.input.join("example.png");
    if !example.exists() {
        let px = images::solid_rgba(32, 32, 0x3366aa);
        let _ = std::fs::write(&example, images::png(32, 32, &px, false, &[]));
    }
    Ok(dirs)
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

async fn start(rt: &Arc<Runtime>, listener: tokio::net::TcpListener) {
    let _ = std::fs::remove_dir_all(&rt.dirs.temp);
    let _ = std::fs::create_dir_all(&rt.dirs.temp);
    let shared: SharedRef = Arc::new(Shared::new(
        rt.config.clone(),
        rt.catalogue.clone(),
        rt.dirs.clone(),
    ));
    let cancel = CancellationToken::new();
    let (crash_tx, mut crash_rx) = tokio::sync::mpsc::unbounded_channel();
    let app = http::router(http::AppState {
        shared: shared.clone(),
        cancel: cancel.clone(),
        crash_tx,
    });
    let listener = listener::KillableListener::new(listener, cancel.clone());
    let serve_cancel = cancel.clone();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(serve_cancel.cancelled_owned())
            .await;
    });
    let worker = tokio::spawn(exec::worker(shared.clone(), cancel.clone()));
    let weak = Arc::downgrade(rt);
    let watch_cancel = cancel.clone();
    let crash_watch = tokio::spawn(async move {
        tokio::select! {
            Some(()) = crash_rx.recv() => {
                if let Some(rt) = weak.upgrade() {
                    rt.stop();
                }
            }
            _ = watch_cancel.cancelled() => {}
        }
    });
    *rt.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(Incarnation {
        shared,
        cancel,
        tasks: vec![server, worker, crash_watch],
    });
}

/// Starts a node listening on `listen` (port 0 picks a free port).
pub async fn spawn(config: NodeConfig, listen: SocketAddr) -> Result<SimNode, SimError> {
    config.validate()?;
    let catalogue = Catalogue::new(&config.node_classes, config.custom_classes_json.as_deref())?;
    let dirs = make_dirs(&config)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| SimError::Bind {
            name: config.name.clone(),
            addr: listen,
            source: e,
        })?;
    let addr = listener.local_addr().map_err(|e| SimError::Bind {
        name: config.name.clone(),
        addr: listen,
        source: e,
    })?;
    let rt = Arc::new(Runtime {
        config,
        catalogue,
        dirs,
        addr,
        current: Mutex::new(None),
    });
    start(&rt, listener).await;
    tracing::info!(node = %rt.config.name, %addr, "simulated ComfyUI node listening");
    Ok(SimNode { rt })
}

/// Starts every node of a fleet in this process.
pub async fn spawn_fleet(fleet: FleetConfig) -> Result<Vec<SimNode>, SimError> {
    let mut nodes = Vec::with_capacity(fleet.nodes.len());
    for n in fleet.nodes {
        nodes.push(spawn(n.node, n.listen).await?);
    }
    Ok(nodes)
}

impl SimNode {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.rt.addr
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.rt.addr)
    }

    /// WebSocket URL base (`ws://127.0.0.1:port/ws`).
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.rt.addr)
    }

    /// Node name.
    pub fn name(&self) -> &str {
        &self.rt.config.name
    }

    /// The folder holding input/, output/ and temp/.
    pub fn data_dir(&self) -> PathBuf {
        self.rt.dirs.root.clone()
    }

    fn shared(&self) -> Result<SharedRef, SimError> {
        self.rt
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|i| i.shared.clone())
            .ok_or_else(|| SimError::NotRunning {
                name: self.rt.config.name.clone(),
            })
    }

    /// Whether the node is listening (not crashed or shut down).
    pub fn is_running(&self) -> bool {
        self.shared().is_ok()
    }

    /// Counters and GPU state.
    pub fn snapshot(&self) -> Result<NodeSnapshot, SimError> {
        Ok(snapshot_of(&self.shared()?))
    }

    /// Replaces the faults in force.
    pub fn set_faults(&self, faults: FaultConfig) -> Result<(), SimError> {
        let shared = self.shared()?;
        tracing::warn!(node = %self.rt.config.name, ?faults, "faults changed");
        shared.lock().faults = faults;
        Ok(())
    }

    /// The faults in force.
    pub fn faults(&self) -> Result<FaultConfig, SimError> {
        Ok(self.shared()?.lock().faults.clone())
    }

    /// Crashes the node: stops listening and drops every connection; queue and history are lost.
    pub fn crash(&self) {
        tracing::warn!(node = %self.rt.config.name, "fault: node crashed");
        self.rt.stop();
    }

    /// Restarts a crashed node on the same address, empty (no queue, history or loaded models).
    pub async fn restart(&self) -> Result<(), SimError> {
        self.rt.stop();
        let addr = self.rt.addr;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| SimError::Bind {
                name: self.rt.config.name.clone(),
                addr,
                source: e,
            })?;
        start(&self.rt, listener).await;
        tracing::warn!(node = %self.rt.config.name, %addr, "node restarted empty");
        Ok(())
    }

    /// Stops the node for good.
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for SimNode {
    fn drop(&mut self) {
        self.rt.stop();
        if self.rt.dirs.owned {
            let _ = std::fs::remove_dir_all(&self.rt.dirs.root);
        }
    }
}
