//! Discovery routes for the fleet: `/system_stats`, `/object_info`, `/models`, `/embeddings`,
//! `/features`, `/extensions`.
//!
//! Answers are merged from the nodes that are up: `/object_info` is the union of every node's
//! classes, as the nodes sent them (a class some node has; the first node's description
//! wins, with its choice lists extended by every other node's choices), cached for a minute
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

/// How long `/object_info` waits for one node's answer before merging without it.
const OBJECT_INFO_WAIT: Duration = Duration::from_secs(10);

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
    // Each node's answer as it sent it: clients read ComfyUI's own shapes (`["MODEL", {...}]`,
    // combo lists), which the typed reading of `/object_info` does not keep.
    // A node that stops answering must not hold every front end's first page for the HTTP
    // client's whole timeout: the others' answers do.
    let infos = join_all(nodes.iter().map(|n| async {
        tokio::time::timeout(OBJECT_INFO_WAIT, n.client.object_info_raw())
            .await
            .map_err(|_| format!("no answer within {} s", OBJECT_INFO_WAIT.as_secs()))
            .and_then(|answer| answer.map_err(|error| error.to_string()))
    }))
    .await;
    let mut merged = Map::new();
    let mut any = false;
    for (node, result) in nodes.iter().zip(infos) {
        match result {
            Ok(info) => {
                any = true;
                for (class, node_info) in info {
                    match merged.get_mut(&class) {
                        Some(known) => union_choices(known, &node_info),
                        None => {
                            merged.insert(class, node_info);
                        }
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

/// Adds to `known`'s choice lists (a checkpoint loader's files, say) the choices `other`
/// offers for the same input, after its own: a client of the fleet picks from every file some
/// node has, and placement sends the job to a node that has it. Both of ComfyUI's combo
/// shapes are read: `[[choices...], {...}]` and `["COMBO", {"options": [choices...]}]`.
fn union_choices(known: &mut Value, other: &Value) {
    for section in ["required", "optional"] {
        let Some(theirs) = other
            .get("input")
            .and_then(|input| input.get(section))
            .and_then(Value::as_object)
        else {
            continue;
        };
        let Some(ours) = known
            .get_mut("input")
            .and_then(|input| input.get_mut(section))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        for (name, spec) in theirs {
            let (Some(mine), Some(extra)) =
                (ours.get_mut(name).and_then(choices_mut), choices(spec))
            else {
                continue;
            };
            // ComfyUI sorts its file lists; a sorted list stays sorted, any other keeps its
            // order and gains the new choices at its end.
            let sorted = mine
                .windows(2)
                .all(|pair| choice_key(&pair[0]) <= choice_key(&pair[1]));
            for choice in extra {
                if !mine.contains(choice) {
                    mine.push(choice.clone());
                }
            }
            if sorted {
                mine.sort_by_key(choice_key);
            }
        }
    }
}

/// What a choice sorts by: its text (numbers and other values by their JSON).
fn choice_key(choice: &Value) -> String {
    choice
        .as_str()
        .map_or_else(|| choice.to_string(), str::to_owned)
}

/// The choice list of an input spec, in either combo shape.
fn choices(spec: &Value) -> Option<&Vec<Value>> {
    match spec.get(0)? {
        Value::Array(list) => Some(list),
        Value::String(kind) if kind == "COMBO" => spec.get(1)?.get("options")?.as_array(),
        _ => None,
    }
}

/// [`choices`], to extend.
fn choices_mut(spec: &mut Value) -> Option<&mut Vec<Value>> {
    if spec.get(0)?.is_array() {
        return spec.get_mut(0)?.as_array_mut();
    }
    if spec.get(0)?.as_str() == Some("COMBO") {
        return spec.get_mut(1)?.get_mut("options")?.as_array_mut();
    }
    None
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choice_lists_of_both_combo_shapes_gain_the_other_nodes_choices_once() {
        let mut known = json!({"input": {
            "required": {
                "ckpt_name": [["a.safetensors", "b.safetensors"], {"tooltip": "t"}],
                "sampler": ["COMBO", {"options": ["euler"], "default": "euler"}],
                "steps": ["INT", {"default": 20}]
            },
            "optional": {"lora": [["x.safetensors"]]}
        }});
        let other = json!({"input": {
            "required": {
                "ckpt_name": [["b.safetensors", "c.safetensors"], {"tooltip": "t"}],
                "sampler": ["COMBO", {"options": ["euler", "dpmpp_2m"]}],
                "steps": ["INT", {"default": 30}],
                "only_theirs": [["z"]]
            },
            "optional": {"lora": [["y.safetensors", "x.safetensors"]]}
        }});
        union_choices(&mut known, &other);
        assert_eq!(
            known["input"]["required"]["ckpt_name"],
            json!([["a.safetensors", "b.safetensors", "c.safetensors"], {"tooltip": "t"}])
        );
        assert_eq!(
            known["input"]["required"]["sampler"],
            json!(["COMBO", {"options": ["dpmpp_2m", "euler"], "default": "euler"}])
        );
        assert_eq!(
            known["input"]["required"]["steps"],
            json!(["INT", {"default": 20}]),
            "not a choice list: the first node's description stays"
        );
        assert!(known["input"]["required"].get("only_theirs").is_none());
        assert_eq!(
            known["input"]["optional"]["lora"],
            json!([["x.safetensors", "y.safetensors"]])
        );
    }

    #[test]
    fn a_sorted_list_stays_sorted_and_another_keeps_its_order() {
        let mut known = json!({"input": {"required": {
            "ckpt_name": [["b.safetensors", "d.safetensors"]],
            "vae_name": [["z.safetensors", "pixel_space"]]
        }}});
        union_choices(
            &mut known,
            &json!({"input": {"required": {
                "ckpt_name": [["a.safetensors", "c.safetensors"]],
                "vae_name": [["a.safetensors", "pixel_space"]]
            }}}),
        );
        assert_eq!(
            known["input"]["required"]["ckpt_name"][0],
            json!([
                "a.safetensors",
                "b.safetensors",
                "c.safetensors",
                "d.safetensors"
            ])
        );
        assert_eq!(
            known["input"]["required"]["vae_name"][0],
            json!(["z.safetensors", "pixel_space", "a.safetensors"])
        );
    }

    #[test]
    fn odd_shapes_are_left_alone() {
        let mut known = json!({"input": {"required": {"a": "not a spec", "b": []}}});
        let before = known.clone();
        union_choices(
            &mut known,
            &json!({"input": {"required": {"a": [["x"]], "b": [["y"]]}}}),
        );
        assert_eq!(known, before);
        let mut no_input = json!({"name": "X"});
        union_choices(
            &mut no_input,
            &json!({"input": {"required": {"a": [["x"]]}}}),
        );
        assert_eq!(no_input, json!({"name": "X"}));
    }
}
