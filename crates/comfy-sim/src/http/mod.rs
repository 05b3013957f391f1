//! HTTP routes of a simulated node, answering like ComfyUI 0.3.64 (aiohttp).
//!
//! Every route exists at `P` and `/api` + `P`. Bodies are read by hand so that the limit answers
//! aiohttp's 413 text and a non-JSON body gives its 500 page; JSON is written with Python's
//! separators. A middleware applies the loopback Origin check and the injected HTTP faults
//! (hang, 500 on chosen routes); `/__sim/*` is the emulator's own admin surface and is exempt.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State, WebSocketUpgrade};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

mod admin;
mod discovery;
mod prompt;
mod queue;

use admin::{admin_crash, admin_faults, admin_state};
use discovery::{
    extensions, features, models, models_folder, object_info, object_info_one, system_stats,
};
use prompt::{get_prompt, post_prompt};
use queue::{free, get_history, get_history_one, get_queue, interrupt, post_history, post_queue};

pub use discovery::{MODEL_FOLDERS, system_stats_json};

use crate::config::{NodeConfig, Profile};
use crate::state::SharedRef;
use crate::{files, jobs, pyjson};

/// Router state: the node and the token that ends its connections.
#[derive(Clone)]
pub struct AppState {
    /// Shared node state.
    pub shared: SharedRef,
    /// Cancelled when the node crashes or shuts down.
    pub cancel: tokio_util::sync::CancellationToken,
    /// Asks the owner to crash the node (admin route).
    pub crash_tx: tokio::sync::mpsc::UnboundedSender<()>,
}

// NOTE: `/upload/mask`, `/view_metadata`, `/internal/*`, `/users`, `/settings`, `/userdata`,
// `/experiment/models`, `/workflow_templates` and `/i18n` are not served (404): fleet clients
// do not use them. A JSON body with bare NaN/Infinity, which Python accepts, answers 500 here.
/// Builds the full router.
pub fn router(state: AppState) -> Router {
    let comfy = Router::new()
        .route("/system_stats", get(system_stats))
        .route("/prompt", get(get_prompt).post(post_prompt))
        .route("/queue", get(get_queue).post(post_queue))
        .route("/interrupt", post(interrupt))
        .route("/free", post(free))
        .route("/history", get(get_history).post(post_history))
        .route("/history/{id}", get(get_history_one))
        .route("/object_info", get(object_info))
        .route("/object_info/{class}", get(object_info_one))
        .route("/models", get(models))
        .route("/models/{folder}", get(models_folder))
        .route(
            "/embeddings",
            get(|| async { json_resp(StatusCode::OK, &json!([])) }),
        )
        .route("/extensions", get(extensions))
        .route("/features", get(features))
        .route("/ws", get(ws))
        .route("/view", get(files::view))
        .route("/upload/image", post(files::upload_image));
    let mut app = Router::new().merge(comfy.clone()).nest("/api", comfy);
    if state.shared.config.profile == Profile::Newer {
        app = app.merge(jobs::routes());
    }
    app.route("/__sim/state", get(admin_state))
        .route("/__sim/faults", post(admin_faults))
        .route("/__sim/crash", post(admin_crash))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                [(header::CONTENT_TYPE, "application/octet-stream")],
            )
                .into_response()
        })
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

async fn guard(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let admin = path.starts_with("/__sim/");
    let faults = st.shared.lock().faults.clone();
    if faults.hang && !admin {
        tracing::warn!(node = %st.shared.config.name, %path, "fault: request left hanging");
        st.cancel.cancelled().await;
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    if !admin && origin_mismatch(&req) {
        return with_server(StatusCode::FORBIDDEN.into_response());
    }
    let bare = path
        .strip_prefix("/api")
        .filter(|p| p.starts_with('/'))
        .unwrap_or(&path);
    if !admin && faults.http_500_routes.iter().any(|r| r == bare) {
        tracing::warn!(node = %st.shared.config.name, %path, "fault: answering 500");
        return server_error();
    }
    with_server(next.run(req).await)
}

fn with_server(mut resp: Response) -> Response {
    resp.headers_mut().insert(
        header::SERVER,
        HeaderValue::from_static("Python/3.11 aiohttp/3.13.0"),
    );
    resp
}

// ComfyUI's origin-only middleware: loopback Host with a different Origin host is refused.
fn origin_mismatch(req: &Request) -> bool {
    let (Some(host), Some(origin)) = (
        req.headers().get(header::HOST),
        req.headers().get(header::ORIGIN),
    ) else {
        return false;
    };
    let (Ok(host), Ok(origin)) = (host.to_str(), origin.to_str()) else {
        return false;
    };
    let split = |s: &str| -> (String, Option<String>) {
        let s = s.trim();
        if let Some(rest) = s.strip_prefix('[') {
            let (h, tail) = rest.split_once(']').unwrap_or((rest, ""));
            return (
                h.to_ascii_lowercase(),
                tail.strip_prefix(':').map(String::from),
            );
        }
        match s.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !p.is_empty() => {
                (h.to_ascii_lowercase(), Some(p.into()))
            }
            _ => (s.to_ascii_lowercase(), None),
        }
    };
    let (host_name, host_port) = split(host);
    if !matches!(host_name.as_str(), "localhost" | "::1") && !host_name.starts_with("127.") {
        return false;
    }
    let origin_rest = origin.split_once("://").map(|(_, r)| r).unwrap_or(origin);
    let origin_rest = origin_rest.split('/').next().unwrap_or("");
    let (origin_name, origin_port) = split(origin_rest);
    if origin_name != host_name {
        return true;
    }
    matches!((host_port, origin_port), (Some(a), Some(b)) if a != b)
}

/// A JSON response with Python's formatting.
pub fn json_resp(status: StatusCode, value: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        pyjson::to_string(value),
    )
        .into_response()
}

/// aiohttp's 500 page.
pub fn server_error() -> Response {
    with_server(
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "500 Internal Server Error\n\nServer got itself in trouble",
        )
            .into_response(),
    )
}

/// Reads a body within the node's size limit (413 with aiohttp's text beyond it).
pub async fn read_body(shared: &SharedRef, body: Body) -> Result<Bytes, Response> {
    let limit = shared.config.max_upload_size as usize;
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("Maximum request body size {limit} exceeded."),
        )
            .into_response()
    })
}

pub(super) async fn read_json(shared: &SharedRef, body: Body) -> Result<Value, Response> {
    let bytes = read_body(shared, body).await?;
    serde_json::from_slice(&bytes).map_err(|_| server_error())
}

/// `/features` and the WebSocket feature_flags reply.
pub fn features_json(config: &NodeConfig) -> Value {
    let size = if config.max_upload_size_explicit {
        json!(config.max_upload_size as f64)
    } else {
        json!(config.max_upload_size)
    };
    json!({"supports_preview_metadata": true, "max_upload_size": size})
}

async fn ws(
    State(st): State<AppState>,
    Query(q): Query<Vec<(String, String)>>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let Ok(upgrade) = upgrade else {
        return (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "No WebSocket UPGRADE hdr: None\n Can \"Upgrade\" only to \"WebSocket\".",
        )
            .into_response();
    };
    let client_id = q.into_iter().find(|(k, _)| k == "clientId").map(|(_, v)| v);
    let shared = st.shared.clone();
    let cancel = st.cancel.clone();
    upgrade.on_upgrade(move |socket| crate::ws::serve_socket(shared, socket, client_id, cancel))
}
