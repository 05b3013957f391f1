//! The coordinator's HTTP surface: `/healthz`, `/readyz`, `/metrics`, and the drop-in
//! ComfyUI API ([`crate::facade`]) when it is enabled.
//!
//! `/healthz` answers 200 while the process serves requests (liveness); `/readyz` answers 200
//! only when at least one node is up, so a load balancer sends no jobs to a coordinator that
//! could not place them (readiness); `/metrics` is the Prometheus text exposition.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::fleet::Fleet;
use crate::metrics::Metrics;

/// What the HTTP handlers read.
#[derive(Clone)]
pub struct HttpState {
    /// The nodes, for readiness.
    pub fleet: Arc<Fleet>,
    /// The metrics to expose.
    pub metrics: Metrics,
    /// The ComfyUI-compatible routes, when served.
    pub facade: Option<Arc<crate::facade::Facade>>,
}

/// The router of the HTTP surface.
pub fn router(state: HttpState) -> Router {
    let facade = state.facade.clone();
    let own = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state);
    match facade {
        Some(facade) => own.merge(crate::facade::router(facade)),
        None => own,
    }
}

async fn healthz() -> impl IntoResponse {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "ok\n",
    )
}

async fn readyz(State(state): State<HttpState>) -> impl IntoResponse {
    let text_plain = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    let total = state.fleet.nodes().len();
    let up = state
        .fleet
        .nodes()
        .iter()
        .filter(|node| node.status().health == scheduler::Health::Up)
        .count();
    if up > 0 {
        (
            StatusCode::OK,
            text_plain,
            format!("ready: {up} of {total} nodes up\n"),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            text_plain,
            format!("not ready: 0 of {total} nodes up\n"),
        )
    }
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, Metrics::content_type())],
        state.metrics.render(),
    )
}
