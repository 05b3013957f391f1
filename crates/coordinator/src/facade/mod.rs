//! The drop-in ComfyUI API on the coordinator: the facade.
//!
//! Tools written for one ComfyUI server (scripts, tutorials, bots) speak its HTTP and WebSocket
//! API. The facade answers that API on the coordinator's HTTP port, with and without the `/api`
//! prefix, and turns it into fleet jobs, so such tools drive the whole fleet unchanged. Each
//! route keeps ComfyUI's shapes, status codes and quirks (see the shared protocol notes); the
//! fleet-specific rules are:
//!
//! - `POST /prompt` validates what the coordinator can judge (`no_prompt`, `invalid_prompt` for
//!   a missing `class_type` or a class no node of the fleet has, `prompt_no_outputs` for a graph
//!   surely without output node, non-JSON → 500 page), stores a
//!   fleet job (tenant `comfyui`) and answers `{prompt_id, number, node_errors}`. A client's
//!   `prompt_id` is kept verbatim and mapped to the job in a small registry
//!   ([`registry`]); the per-attempt prompt ids the coordinator uses on nodes stay internal.
//!   `number` follows ComfyUI's counter (one per parsed POST, `front` negates, an explicit
//!   number is echoed as a float). Checks only a node can make (e.g. an output node of a
//!   custom class, bad inputs) end the job as an `execution_error` instead of a 400.
//! - `GET /queue`: `queue_running` holds facade jobs placed on a node (dispatched or
//!   running), `queue_pending` those waiting in the coordinator; 5-element items.
//!   `POST /queue` `delete` / `clear` remove only facade jobs still waiting in the coordinator.
//! - `POST /interrupt` with a `prompt_id` interrupts exactly that facade job if it is on a node.
//!   A **global interrupt** (no `prompt_id`) carries no caller identity in ComfyUI, so it
//!   interrupts only the running facade jobs of the `client_id` given in the body (an extension)
//!   or, without one, only facade jobs that were submitted without a `client_id`. It never
//!   touches jobs of other clients or jobs submitted over gRPC.
//! - `POST /free` forwards the body to every node that is up, in the background; 200 at once.
//! - `/history` is built from the journal (finished facade jobs), `max_items`/`offset` as in
//!   ComfyUI. **Subfolder rule:** every file reference the facade reports (history, `executed`
//!   events) has `subfolder` = `<node name>` or `<node name>/<node subfolder>`, because each
//!   node numbers `ComfyUI_00001_.png` on its own. `GET /view` splits that first segment off,
//!   applies ComfyUI's checks (400 bad name/type, 403 escaping subfolder, 404 missing) and
//!   streams the file from that node. `type=input` files without a node segment are served
//!   from the coordinator's own upload store.
//! - `POST /upload/image` keeps files in the coordinator ([`upload::UploadStore`]), with
//!   ComfyUI's naming rules; the dispatcher uploads what a workflow references to its node.
//! - `/system_stats` lists one device per node; `/object_info` merges every node's classes
//!   (cached for a minute); `/models`, `/embeddings` are unions; `/extensions` is `[]`.
//! - `/ws?clientId=` sends the first `status` with `sid`, answers the `feature_flags`
//!   handshake, and relays that client's jobs as ComfyUI messages synthesised from the job's
//!   event log, with previews as binary event 1 or 4 per the client's flags ([`ws`]).

mod discovery;
mod history;
mod prompt;
pub mod registry;
mod relay;
pub mod upload;
mod view;
mod ws;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::events::EventHub;
use crate::fleet::Fleet;
use crate::journal::JobStore;
use crate::manager::ManagerHandle;

pub use registry::{FacadePrompt, Registry};
pub use upload::UploadStore;

/// The tenant of every job submitted through the facade.
pub const FACADE_TENANT: &str = "comfyui";

/// Errors of the facade.
#[derive(Debug, thiserror::Error)]
pub enum FacadeError {
    /// The prompt registry failed.
    #[error("facade registry: {context}: {source}")]
    Registry {
        /// What was being done.
        context: &'static str,
        /// Why it failed.
        source: rusqlite::Error,
    },
    /// A registry row cannot be read back.
    #[error("facade registry: {0}")]
    Corrupt(String),
    /// The journal failed.
    #[error("journal: {0}")]
    Journal(#[from] crate::journal::JournalError),
    /// The manager is gone.
    #[error("manager: {0}")]
    Manager(#[from] crate::manager::ManagerError),
    /// A file of the upload store cannot be used.
    #[error("upload store {path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A blocking task died.
    #[error("facade: background task failed: {0}")]
    Task(String),
}

impl FacadeError {
    pub(crate) fn registry(context: &'static str, source: rusqlite::Error) -> Self {
        Self::Registry { context, source }
    }
}

/// What the facade needs from the coordinator.
pub struct FacadeDeps {
    /// The journal.
    pub store: Arc<dyn JobStore>,
    /// Per-job event logs.
    pub hub: Arc<EventHub>,
    /// The nodes.
    pub fleet: Arc<Fleet>,
    /// The job manager.
    pub manager: ManagerHandle,
    /// The data directory (registry and uploads live there).
    pub data_dir: PathBuf,
    /// Largest workflow accepted, in bytes.
    pub max_workflow_bytes: usize,
    /// Most graph nodes one workflow may have.
    pub max_nodes: usize,
    /// The coordinator's metrics (submissions through this door are counted too).
    pub metrics: crate::metrics::Metrics,
}

/// The facade's shared state.
pub struct Facade {
    pub(crate) store: Arc<dyn JobStore>,
    pub(crate) hub: Arc<EventHub>,
    pub(crate) fleet: Arc<Fleet>,
    pub(crate) manager: ManagerHandle,
    pub(crate) registry: Registry,
    pub(crate) uploads: UploadStore,
    pub(crate) clients: ws::Clients,
    /// ComfyUI's per-process `number` counter.
    pub(crate) counter: AtomicI64,
    pub(crate) max_workflow_bytes: usize,
    pub(crate) max_nodes: usize,
    pub(crate) metrics: crate::metrics::Metrics,
    pub(crate) object_info: discovery::ObjectInfoCache,
}

impl Facade {
    /// Opens the registry and upload store in the data directory.
    pub fn open(deps: FacadeDeps) -> Result<Arc<Self>, FacadeError> {
        let registry = Registry::open(&deps.data_dir)?;
        let uploads = UploadStore::open(deps.data_dir.join("uploads"))?;
        Ok(Arc::new(Self {
            store: deps.store,
            hub: deps.hub,
            fleet: deps.fleet,
            manager: deps.manager,
            registry,
            uploads,
            clients: ws::Clients::default(),
            counter: AtomicI64::new(0),
            max_workflow_bytes: deps.max_workflow_bytes,
            max_nodes: deps.max_nodes,
            metrics: deps.metrics,
            object_info: discovery::ObjectInfoCache::default(),
        }))
    }

    /// The store of uploaded input files.
    pub fn uploads(&self) -> &UploadStore {
        &self.uploads
    }

    /// Runs a registry call on the blocking pool.
    pub(crate) async fn with_registry<T: Send + 'static>(
        &self,
        call: impl FnOnce(&Registry) -> Result<T, FacadeError> + Send + 'static,
    ) -> Result<T, FacadeError> {
        let registry = self.registry.clone();
        tokio::task::spawn_blocking(move || call(&registry))
            .await
            .map_err(|error| FacadeError::Task(error.to_string()))?
    }
}

/// The facade's routes, at the root and under `/api`.
pub fn router(facade: Arc<Facade>) -> Router {
    let routes: Router = Router::new()
        .route("/prompt", get(prompt::get_prompt).post(prompt::post_prompt))
        .route("/queue", get(prompt::get_queue).post(prompt::post_queue))
        .route("/interrupt", post(prompt::post_interrupt))
        .route("/free", post(prompt::post_free))
        .route(
            "/history",
            get(history::get_history).post(history::post_history),
        )
        .route("/history/{prompt_id}", get(history::get_history_entry))
        .route("/view", get(view::get_view))
        .route("/upload/image", post(upload::post_upload_image))
        .route("/system_stats", get(discovery::system_stats))
        .route("/object_info", get(discovery::object_info))
        .route("/object_info/{class}", get(discovery::object_info_class))
        .route("/models", get(discovery::models))
        .route("/models/{folder}", get(discovery::models_in))
        .route("/embeddings", get(discovery::embeddings))
        .route("/features", get(discovery::features))
        .route("/extensions", get(discovery::extensions))
        .route("/ws", get(ws::websocket))
        .with_state(facade);
    Router::new().merge(routes.clone()).nest("/api", routes)
}

/// ComfyUI's answer to a request it cannot handle (aiohttp's default 500 page).
pub(crate) fn server_error() -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "500 Internal Server Error\n\nServer got itself in trouble",
    )
        .into_response()
}

/// 200 with an empty body, as ComfyUI answers most POSTs.
pub(crate) fn empty_ok() -> Response {
    StatusCode::OK.into_response()
}

/// A JSON answer.
pub(crate) fn json(status: StatusCode, value: serde_json::Value) -> Response {
    (status, axum::Json(value)).into_response()
}

/// 404 with an empty body.
pub(crate) fn not_found() -> Response {
    StatusCode::NOT_FOUND.into_response()
}

/// Logs an internal failure and answers ComfyUI's 500 page.
pub(crate) fn internal(route: &'static str, error: &FacadeError) -> Response {
    tracing::warn!(route, %error, "facade request failed");
    server_error()
}

/// The subfolder a facade answer reports for a file a node holds: `<node>[/<subfolder>]`.
pub fn facade_subfolder(node: &str, subfolder: &str) -> String {
    if subfolder.is_empty() {
        node.to_owned()
    } else {
        format!("{node}/{subfolder}")
    }
}

/// Rewrites every file reference (`{filename, subfolder, type}`) in a node's UI dict so its
/// subfolder names the node.
pub(crate) fn rewrite_files(value: &mut serde_json::Value, node: &str) {
    match value {
        serde_json::Value::Object(map) => {
            if map.contains_key("filename") && map.contains_key("type") {
                let sub = map
                    .get("subfolder")
                    .and_then(|s| s.as_str())
                    .unwrap_or_default()
                    .to_owned();
                map.insert(
                    "subfolder".into(),
                    serde_json::Value::String(facade_subfolder(node, &sub)),
                );
            } else {
                for item in map.values_mut() {
                    rewrite_files(item, node);
                }
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                rewrite_files(item, node);
            }
        }
        _ => {}
    }
}
