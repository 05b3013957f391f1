//! Discovery routes: `/system_stats`, `/features`, `/object_info`, `/models`, `/extensions`.
//!
//! These answers describe the node (device, VRAM, classes, model files); model-file and
//! input-file combos are rendered from this node's own folders so discovery and validation
//! agree.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::{AppState, features_json, json_resp, server_error};
use crate::catalogue;
use crate::config::{DeviceType, Profile};
use crate::state::SharedRef;

pub(super) async fn features(State(st): State<AppState>) -> Response {
    json_resp(StatusCode::OK, &features_json(&st.shared.config))
}

pub(super) async fn system_stats(State(st): State<AppState>) -> Response {
    let faults = st.shared.lock().faults.clone();
    if faults.system_stats_delay_ms > 0 {
        tracing::warn!(node = %st.shared.config.name, delay_ms = faults.system_stats_delay_ms, "fault: slow system_stats");
        tokio::time::sleep(Duration::from_millis(faults.system_stats_delay_ms)).await;
    }
    if faults.system_stats_fail {
        tracing::warn!(node = %st.shared.config.name, "fault: system_stats fails");
        return server_error();
    }
    json_resp(StatusCode::OK, &system_stats_json(&st.shared))
}

/// The `/system_stats` document for the node's current GPU state.
pub fn system_stats_json(shared: &SharedRef) -> Value {
    let cfg = &shared.config;
    let g = shared.lock();
    let used = g.gpu.used_by_models();
    let (device, ram_free) = match cfg.gpu.device_type {
        DeviceType::Cpu => {
            let free = cfg.gpu.ram_free.saturating_sub(used);
            (
                json!({"name": cfg.gpu.name, "type": "cpu", "index": null, "vram_total": cfg.gpu.vram_total, "vram_free": free,
                    "torch_vram_total": cfg.gpu.vram_total, "torch_vram_free": free}),
                free,
            )
        }
        DeviceType::Cuda => (
            json!({"name": cfg.gpu.name, "type": "cuda", "index": 0, "vram_total": g.gpu.total(), "vram_free": g.gpu.free(),
                   "torch_vram_total": used, "torch_vram_free": 0}),
            cfg.gpu.ram_free,
        ),
    };
    let mut devices = vec![device];
    let os = if cfg.profile == Profile::Newer {
        if cfg.gpu.device_type == DeviceType::Cuda {
            devices.push(json!({"name": "cpu", "type": "cpu", "index": null, "vram_total": cfg.gpu.ram_total, "vram_free": ram_free,
                                "torch_vram_total": cfg.gpu.ram_total, "torch_vram_free": ram_free}));
        }
        "linux"
    } else {
        "posix"
    };
    json!({
        "system": {"os": os, "ram_total": cfg.gpu.ram_total, "ram_free": ram_free, "comfyui_version": cfg.comfyui_version,
                   "required_frontend_version": "1.27.10", "installed_templates_version": "0.1.95",
                   "required_templates_version": "0.1.95", "python_version": cfg.python_version,
                   "pytorch_version": cfg.pytorch_version, "embedded_python": false, "argv": cfg.argv},
        "devices": devices,
    })
}

fn render(shared: &SharedRef, class: &str) -> Option<Value> {
    let info = shared.catalogue.get(class)?;
    let inputs = shared.input_files();
    Some(catalogue::render_class(
        class,
        info,
        &|f| shared.model_files(f),
        &inputs,
    ))
}

pub(super) async fn object_info(State(st): State<AppState>) -> Response {
    let shared = &st.shared;
    let inputs = shared.input_files();
    let mut out = Map::new();
    for class in shared.catalogue.class_names() {
        if let Some(info) = shared.catalogue.get(&class) {
            out.insert(
                class.clone(),
                catalogue::render_class(&class, info, &|f| shared.model_files(f), &inputs),
            );
        }
    }
    json_resp(StatusCode::OK, &Value::Object(out))
}

pub(super) async fn object_info_one(
    State(st): State<AppState>,
    Path(class): Path<String>,
) -> Response {
    let body = match render(&st.shared, &class) {
        Some(info) => json!({ class: info }),
        None => json!({}),
    };
    json_resp(StatusCode::OK, &body)
}

/// Model folder keys of a 0.3.64 server.
pub const MODEL_FOLDERS: [&str; 20] = [
    "checkpoints",
    "configs",
    "loras",
    "vae",
    "text_encoders",
    "diffusion_models",
    "clip_vision",
    "style_models",
    "embeddings",
    "diffusers",
    "vae_approx",
    "controlnet",
    "gligen",
    "upscale_models",
    "custom_nodes",
    "hypernetworks",
    "photomaker",
    "classifiers",
    "model_patches",
    "audio_encoders",
];

pub(super) async fn models() -> Response {
    json_resp(StatusCode::OK, &json!(MODEL_FOLDERS))
}

pub(super) async fn models_folder(
    State(st): State<AppState>,
    Path(folder): Path<String>,
) -> Response {
    if !MODEL_FOLDERS.contains(&folder.as_str()) {
        return StatusCode::NOT_FOUND.into_response();
    }
    json_resp(StatusCode::OK, &json!(st.shared.model_files(&folder)))
}

pub(super) async fn extensions() -> Response {
    let list = [
        "groupNode.js",
        "maskEditorOld.js",
        "clipspace.js",
        "maskEditorLayerFilenames.js",
        "widgetInputs.js",
        "groupNodeManage.js",
        "load3d/NodeStorage.js",
        "load3d/ViewHelperManager.js",
        "load3d/ControlsManager.js",
        "load3d/RecordingManager.js",
        "load3d/ModelExporter.js",
        "load3d/AnimationManager.js",
        "load3d/LoaderManager.js",
        "load3d/LightingManager.js",
        "load3d/CameraManager.js",
        "load3d/SceneModelManager.js",
        "load3d/SceneManager.js",
        "load3d/PreviewManager.js",
        "load3d/EventManager.js",
    ];
    let paths: Vec<String> = list
        .iter()
        .map(|p| format!("/extensions/core/{p}"))
        .collect();
    json_resp(StatusCode::OK, &json!(paths))
}
