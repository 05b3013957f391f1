//! `/history` and `/history/{id}`: ComfyUI history entries built from the journal.
//!
//! A facade prompt is in history once its job is terminal. `outputs` come from the outputs the
//! job recorded (what the node's history reported), with node-qualified subfolders;
//! `status.messages` are rebuilt from the job's start and end times.
//!
//! Non-file UI values a node reported (the `text` of a text-display node, the `animated`
//! flags of an animated save, a custom node's own keys) are kept with the job and appear
//! beside its files, as on the node.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::registry::FacadePrompt;
use super::{Facade, FacadeError, empty_ok, facade_subfolder, internal, json, server_error};
use crate::job::{Job, JobState};

/// ComfyUI keeps about this many history entries.
const MAX_HISTORY: usize = 10_000;

fn millis(at: Option<SystemTime>) -> u64 {
    at.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// The `meta` of an output node. The job keeps no display or parent nodes, so each output
/// node stands for itself.
fn node_meta(node_id: &str) -> Value {
    json!({"node_id": node_id, "display_node": node_id, "parent_node": null, "real_node_id": node_id})
}

/// One ComfyUI history entry for a finished job.
pub(crate) fn entry(job: &Job, prompt: &FacadePrompt) -> Value {
    let id = &prompt.prompt_id;
    let mut outputs: Map<String, Value> = Map::new();
    let mut meta: Map<String, Value> = Map::new();
    for output in &job.progress.outputs {
        let node = outputs
            .entry(output.node_id.clone())
            .or_insert_with(|| json!({}));
        let list = node
            .as_object_mut()
            .map(|m| m.entry(output.kind.clone()).or_insert_with(|| json!([])));
        if let Some(Value::Array(files)) = list {
            files.push(json!({
                "filename": output.filename,
                "subfolder": facade_subfolder(&output.held_by, &output.subfolder),
                "type": output.folder_type,
            }));
        }
        meta.insert(output.node_id.clone(), node_meta(&output.node_id));
    }
    // Text, `animated` flags and other values a node showed, beside its files; a key the
    // files already fill keeps the files.
    for (node_id, values) in &job.progress.ui_values {
        let node = outputs.entry(node_id.clone()).or_insert_with(|| json!({}));
        if let Some(node) = node.as_object_mut() {
            for (key, value) in values {
                node.entry(key.clone()).or_insert_with(|| value.clone());
            }
        }
        meta.entry(node_id.clone())
            .or_insert_with(|| node_meta(node_id));
    }
    let started = json!(["execution_start", {"prompt_id": id, "timestamp": millis(job.progress.started_at.or(Some(job.created_at)))}]);
    let ended_at = millis(job.progress.finished_at);
    let (status_str, completed, last) = match job.state() {
        JobState::Succeeded => (
            "success",
            true,
            json!(["execution_success", {"prompt_id": id, "timestamp": ended_at}]),
        ),
        JobState::Cancelled => (
            "error",
            false,
            json!(["execution_interrupted", {"prompt_id": id, "node_id": null, "node_type": null, "executed": [], "timestamp": ended_at}]),
        ),
        _ => {
            let failure = job.progress.failure.as_ref();
            let node_error = failure.and_then(|f| f.node_error.as_ref());
            (
                "error",
                false,
                json!(["execution_error", {
                    "prompt_id": id,
                    "node_id": node_error.map(|e| e.node_id.clone()),
                    "node_type": node_error.map(|e| e.class_type.clone()),
                    "executed": [],
                    "exception_message": node_error.map(|e| e.exception_message.clone())
                        .or_else(|| failure.map(|f| f.message.clone())).unwrap_or_default(),
                    "exception_type": node_error.map(|e| e.exception_type.clone())
                        .or_else(|| failure.map(|f| f.class.as_str().to_owned())).unwrap_or_default(),
                    "traceback": node_error.map(|e| e.traceback.clone()).unwrap_or_default(),
                    "current_inputs": {}, "current_outputs": [], "timestamp": ended_at
                }]),
            )
        }
    };
    let cached = json!(["execution_cached", {"nodes": [], "prompt_id": id, "timestamp": millis(job.progress.started_at.or(Some(job.created_at)))}]);
    let mut extra = prompt.extra_data.clone();
    // Records written before credentials were dropped at submission may still hold them.
    if let Some(map) = extra.as_object_mut() {
        for key in crate::job::CREDENTIAL_KEYS {
            map.remove(key);
        }
    }
    let mut item = super::prompt::queue_item(job, prompt);
    item[3] = extra;
    json!({
        "prompt": item,
        "outputs": if job.state() == JobState::Succeeded { Value::Object(outputs) } else { json!({}) },
        "status": {"status_str": status_str, "completed": completed, "messages": [started, cached, last]},
        "meta": if job.state() == JobState::Succeeded { Value::Object(meta) } else { json!({}) },
    })
}

/// Finished facade jobs with their prompts, in completion order (oldest first).
async fn finished(facade: &Facade) -> Result<Vec<(Job, FacadePrompt)>, FacadeError> {
    let prompts = facade.with_registry(|r| r.recent(MAX_HISTORY * 2)).await?;
    let mut out = Vec::new();
    let mut gone = Vec::new();
    for prompt in prompts {
        match facade.store.get(prompt.job_id).await? {
            Some(job) if job.state().is_terminal() => out.push((job, prompt)),
            Some(_) => {}
            None => gone.push(prompt.job_id),
        }
    }
    if !gone.is_empty() {
        // The journal purged them past retention; history forgets them too.
        facade.with_registry(move |r| r.forget(&gone)).await?;
    }
    out.sort_by_key(|(job, _)| job.progress.finished_at);
    if out.len() > MAX_HISTORY {
        out.drain(..out.len() - MAX_HISTORY);
    }
    Ok(out)
}

/// `GET /history?max_items=N&offset=M`.
pub(crate) async fn get_history(
    State(facade): State<Arc<Facade>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    // ComfyUI reads these with Python's `int`, which has no upper bound: a number too large
    // for 64 bits is taken as the largest (all of history), not as an error.
    let parse = |key: &str| -> Result<Option<i64>, ()> {
        query
            .get(key)
            .map(|v| {
                v.trim().parse::<i64>().or_else(|error| match error.kind() {
                    std::num::IntErrorKind::PosOverflow => Ok(i64::MAX),
                    std::num::IntErrorKind::NegOverflow => Ok(i64::MIN),
                    _ => Err(()),
                })
            })
            .transpose()
    };
    let (Ok(max_items), Ok(offset)) = (parse("max_items"), parse("offset")) else {
        return server_error();
    };
    let all = match finished(&facade).await {
        Ok(all) => all,
        Err(error) => return internal("/history", &error),
    };
    let len = all.len() as i64;
    let mut offset = offset.unwrap_or(-1);
    // ComfyUI: a negative offset with max_items means "the newest max_items".
    if offset < 0 {
        offset = match max_items {
            Some(n) => len.saturating_sub(n).max(0),
            None => 0,
        };
    }
    let take = max_items.map_or(usize::MAX, |n| n.max(0) as usize);
    let mut body = Map::new();
    for (job, prompt) in all.iter().skip(offset as usize).take(take) {
        body.insert(prompt.prompt_id.clone(), entry(job, prompt));
    }
    json(StatusCode::OK, Value::Object(body))
}

/// `GET /history/{prompt_id}`: the entry, or `{}` while unknown, pending or running.
pub(crate) async fn get_history_entry(
    State(facade): State<Arc<Facade>>,
    Path(prompt_id): Path<String>,
) -> Response {
    let lookup = prompt_id.clone();
    let prompt = match facade.with_registry(move |r| r.by_prompt_id(&lookup)).await {
        Ok(Some(prompt)) => prompt,
        Ok(None) => return json(StatusCode::OK, json!({})),
        Err(error) => return internal("/history", &error),
    };
    match facade.store.get(prompt.job_id).await {
        Ok(Some(job)) if job.state().is_terminal() => {
            json(StatusCode::OK, json!({ prompt_id: entry(&job, &prompt) }))
        }
        Ok(_) => json(StatusCode::OK, json!({})),
        Err(error) => internal("/history", &error.into()),
    }
}

/// `POST /history`: `clear` / `delete` forget facade entries (the jobs stay in the journal).
pub(crate) async fn post_history(State(facade): State<Arc<Facade>>, body: Bytes) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return server_error();
    };
    let mut forget = Vec::new();
    if body.get("clear").and_then(Value::as_bool) == Some(true) {
        match finished(&facade).await {
            Ok(all) => forget.extend(all.into_iter().map(|(job, _)| job.id)),
            Err(error) => return internal("/history", &error),
        }
    }
    if let Some(ids) = body.get("delete").and_then(Value::as_array) {
        for id in ids.iter().filter_map(Value::as_str) {
            let id = id.to_owned();
            if let Ok(Some(prompt)) = facade.with_registry(move |r| r.by_prompt_id(&id)).await
                && let Ok(Some(job)) = facade.store.get(prompt.job_id).await
                && job.state().is_terminal()
            {
                forget.push(job.id);
            }
        }
    }
    if let Err(error) = facade.with_registry(move |r| r.forget(&forget)).await {
        return internal("/history", &error);
    }
    empty_ok()
}
