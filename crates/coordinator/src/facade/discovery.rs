//! Discovery routes for the fleet: `/system_stats`, `/object_info`, `/models`, `/embeddings`,
//! `/features`, `/extensions`.
//!
//! Answers are merged from the nodes that are up: `/object_info` is the union of every node's
//! classes (a class some node has; the first node's description wins), cached for a minute
//! because it is ~0.5 MB per node; `/system_stats` lists one device per node, its `name`
//! prefixed with the node name; model and embedding lists are sorted unions.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use futures_util::future::join_all;
use serde_json::{Map, Value, json};
use tracing::warn;

use super::{Facade, json, not_found};
use crate::fleet::Node;

/// How long a merged `/object_info` is reused.
const OBJECT_INFO_TTL: Duration = Duration::from_secs(60);
/// Largest upload the facade accepts, as announced in `/features`.
const MAX_UPLOAD_SIZE: u64 = 100 << 20;

/// Classes by name, merged over the fleet.
type Classes = Arc<Map<String, Value>>;

/// The merged `/object_info` and when it was built.
#[derive(Default)]
pub(crate) struct ObjectInfoCache {
    cached: tokio::sync::Mutex<Option<(Instant, Classes)>>,
}

fn up_nodes(facade: &Facade) -> Vec<Arc<Node>> {
    facade
        .fleet
        .nodes()
        .iter()
        .filter(|n| n.status().health == scheduler::Health::Up)
        .cloned()
        .collect()
}

/// The feature flags the facade announces (also the WebSocket handshake answer).
pub(crate) fn feature_flags() -> Value {
    json!({"supports_preview_metadata": true, "max_upload_size": MAX_UPLOAD_SIZE})
}

/// `GET /features`.
pub(crate) async fn features() -> Response {
    json(StatusCode::OK, feature_flags())
}

/// `GET /extensions`: the facade serves no frontend extensions.
pub(crate) async fn extensions() -> Response {
    json(StatusCode::OK, json!([]))
}

/// `GET /system_stats`.
pub(crate) async fn system_stats(State(facade): State<Arc<Facade>>) -> Response {
    let nodes = up_nodes(&facade);
    let stats = join_all(nodes.iter().map(|n| n.client.system_stats())).await;
    let mut system = Value::Null;
    let mut devices = Vec::new();
    for (node, result) in nodes.iter().zip(stats) {
        match result {
            Ok(stats) => {
                if system.is_null() {
                    system = serde_json::to_value(&stats.system).unwrap_or(Value::Null);
                }
                for device in &stats.devices {
                    let mut device = serde_json::to_value(device).unwrap_or(Value::Null);
                    if let Some(name) = device.get("name").and_then(Value::as_str) {
                        device["name"] = json!(format!("{}: {name}", node.spec.name));
                    }
                    devices.push(device);
                }
            }
            Err(error) => warn!(node = %node.spec.name, %error, "system_stats failed"),
        }
    }
    if system.is_null() {
        system = json!({"os": std::env::consts::OS, "ram_total": 0, "ram_free": 0,
                        "comfyui_version": null, "python_version": "", "pytorch_version": "",
                        "embedded_python": false, "argv": []});
    }
    json(
        StatusCode::OK,
        json!({"system": system, "devices": devices}),
    )
}

async fn merged_object_info(facade: &Facade) -> Arc<Map<String, Value>> {
    let mut cached = facade.object_info.cached.lock().await;
    if let Some((at, info)) = cached.as_ref()
        && at.elapsed() < OBJECT_INFO_TTL
    {
        return info.clone();
    }
    let nodes = up_nodes(facade);
    let infos = join_all(nodes.iter().map(|n| n.client.object_info())).await;
    let mut merged = Map::new();
    let mut any = false;
    for (node, result) in nodes.iter().zip(infos) {
        match result {
            Ok(info) => {
                any = true;
                for (class, node_info) in info.nodes {
                    if !merged.contains_key(&class) {
                        merged.insert(
                            class,
                            serde_json::to_value(&node_info).unwrap_or(Value::Null),
                        );
                    }
                }
            }
            Err(error) => warn!(node = %node.spec.name, %error, "object_info failed"),
        }
    }
    let merged = Arc::new(merged);
    // An empty answer (no node up yet) is not cached, so the next call tries again.
    if any {
        *cached = Some((Instant::now(), merged.clone()));
    }
    merged
}

/// `GET /object_info`.
pub(crate) async fn object_info(State(facade): State<Arc<Facade>>) -> Response {
    let merged = merged_object_info(&facade).await;
    json(StatusCode::OK, Value::Object((*merged).clone()))
}

/// `GET /object_info/{class}`: `{class: info}`, or `{}` for a class no node has.
pub(crate) async fn object_info_class(
    State(facade): State<Arc<Facade>>,
    Path(class): Path<String>,
) -> Response {
    let merged = merged_object_info(&facade).await;
    match merged.get(&class) {
        Some(info) => json(StatusCode::OK, json!({ class: info })),
        None => json(StatusCode::OK, json!({})),
    }
}

/// `GET /models`.
pub(crate) async fn models(State(facade): State<Arc<Facade>>) -> Response {
    let nodes = up_nodes(&facade);
    let mut folders = Vec::new();
    for result in join_all(nodes.iter().map(|n| n.client.models())).await {
        for folder in result.unwrap_or_default() {
            if !folders.contains(&folder) {
                folders.push(folder);
            }
        }
    }
    json(StatusCode::OK, json!(folders))
}

/// `GET /models/{folder}`: the union; 404 when no node knows the folder.
pub(crate) async fn models_in(
    State(facade): State<Arc<Facade>>,
    Path(folder): Path<String>,
) -> Response {
    let nodes = up_nodes(&facade);
    let mut files = BTreeSet::new();
    let mut known = false;
    for list in join_all(nodes.iter().map(|n| n.client.models_in(&folder)))
        .await
        .into_iter()
        .flatten()
    {
        known = true;
        files.extend(list);
    }
    if !known {
        return not_found();
    }
    json(StatusCode::OK, json!(files))
}

/// `GET /embeddings`.
pub(crate) async fn embeddings(State(facade): State<Arc<Facade>>) -> Response {
    let nodes = up_nodes(&facade);
    let mut names = BTreeSet::new();
    for list in join_all(nodes.iter().map(|n| n.client.embeddings()))
        .await
        .into_iter()
        .flatten()
    {
        names.extend(list);
    }
    json(StatusCode::OK, json!(names))
}
