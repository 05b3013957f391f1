//! `GET /prompt` and `POST /prompt`: queue depth, and validating and queueing a workflow with
//! ComfyUI's quirks (Python `in` on the body, the number counter, front, client prompt ids).

use std::sync::atomic::Ordering;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::{AppState, json_resp, read_json, server_error};
use crate::config::Profile;
use crate::files;
use crate::pyjson;
use crate::state::{QueueItem, now_ms};
use crate::validate::{self, Outcome};

pub(super) async fn get_prompt(State(st): State<AppState>) -> Response {
    let n = st.shared.lock().queue_remaining();
    json_resp(
        StatusCode::OK,
        &json!({"exec_info": {"queue_remaining": n}}),
    )
}

fn contains_key(v: &Value, key: &str) -> Option<bool> {
    match v {
        Value::Object(m) => Some(m.contains_key(key)),
        Value::Array(a) => Some(a.iter().any(|x| x.as_str() == Some(key))),
        Value::String(s) => Some(s.contains(key)),
        _ => None,
    }
}

pub(super) async fn post_prompt(State(st): State<AppState>, req: Request) -> Response {
    let shared = &st.shared;
    shared.counters.prompt_posts.fetch_add(1, Ordering::Relaxed);
    let body = match read_json(shared, req.into_body()).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    // Python `in` on the decoded body: dict keys, list items or substrings; other types raise.
    let Some(has_number) = contains_key(&body, "number") else {
        return server_error();
    };
    let number = if has_number {
        let Some(obj) = body.as_object() else {
            return server_error();
        };
        match crate::pyconv::py_float(&obj["number"]) {
            Ok(v) => v,
            Err(_) => return server_error(),
        }
    } else {
        let mut g = shared.lock();
        let n = g.counter;
        g.counter += 1;
        drop(g);
        if contains_key(&body, "front") == Some(true) {
            let Some(front) = body.as_object().and_then(|o| o.get("front")) else {
                return server_error();
            };
            if pyjson::truthy(front) {
                json!(-n)
            } else {
                json!(n)
            }
        } else {
            json!(n)
        }
    };
    if contains_key(&body, "prompt") != Some(true) {
        let error = json!({"type": "no_prompt", "message": "No prompt provided", "details": "No prompt provided", "extra_info": {}});
        return json_resp(
            StatusCode::BAD_REQUEST,
            &json!({"error": error, "node_errors": {}}),
        );
    }
    let Some(obj) = body.as_object() else {
        return server_error();
    };
    let mut prompt = obj["prompt"].clone();
    let prompt_id = match obj.get("prompt_id") {
        None => uuid::Uuid::new_v4().to_string(),
        Some(Value::Null) if shared.config.profile == Profile::Newer => {
            uuid::Uuid::new_v4().to_string()
        }
        Some(v) => pyjson::py_str(v),
    };
    if shared.config.profile == Profile::Newer
        && obj.contains_key("prompt_id")
        && !obj["prompt_id"].is_null()
    {
        let canonical = uuid::Uuid::parse_str(&prompt_id)
            .map(|u| u.hyphenated().to_string() == prompt_id)
            .unwrap_or(false);
        if !canonical {
            let error = json!({"type": "invalid_prompt_id", "message": "Invalid prompt_id format",
                               "details": format!("prompt_id must be a valid UUID, got: {prompt_id}"), "extra_info": {}});
            return json_resp(
                StatusCode::BAD_REQUEST,
                &json!({"error": error, "node_errors": {}}),
            );
        }
    }
    let partial = obj.get("partial_execution_targets");
    let input_files = shared.input_files();
    let model_files = |folder: &str| shared.model_files(folder);
    let image_exists = |name: &str| files::annotated_input_exists(shared, name);
    let env = validate::Env {
        catalogue: &shared.catalogue,
        model_files: &model_files,
        image_exists: &image_exists,
        profile: shared.config.profile,
    };
    let _ = input_files;
    let outcome = validate::validate_prompt(&env, &mut prompt, partial);
    let mut extra_data = match obj.get("extra_data") {
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return server_error(),
        None => Map::new(),
    };
    if let Some(c) = obj.get("client_id") {
        extra_data.insert("client_id".into(), c.clone());
    }
    if shared.config.profile == Profile::Newer {
        extra_data.insert("create_time".into(), json!(now_ms()));
    }
    match outcome {
        Outcome::Crash => server_error(),
        Outcome::Rejected { error, node_errors } => {
            tracing::debug!(node = %shared.config.name, error = %pyjson::to_string(&error), "prompt rejected");
            json_resp(
                StatusCode::BAD_REQUEST,
                &json!({"error": error, "node_errors": node_errors}),
            )
        }
        Outcome::Accepted {
            outputs,
            node_errors,
        } => {
            let item = QueueItem {
                number: number.clone(),
                prompt_id: prompt_id.clone(),
                prompt,
                extra_data,
                outputs,
                created_ms: now_ms(),
            };
            {
                let mut g = shared.lock();
                g.queue.push(item);
                g.broadcast_status(&shared.counters);
            }
            shared
                .counters
                .prompts_queued
                .fetch_add(1, Ordering::Relaxed);
            shared.wake.notify_one();
            json_resp(
                StatusCode::OK,
                &json!({"prompt_id": prompt_id, "number": number, "node_errors": node_errors}),
            )
        }
    }
}
