//! Queue and history routes: `/queue`, `/interrupt`, `/free`, `/history`.
//!
//! Bodies are parsed like ComfyUI's handlers: a bad body is a 500, except on `/interrupt`,
//! which treats it as a global interrupt.

use std::sync::atomic::Ordering;

use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::{AppState, json_resp, read_body, read_json, server_error};
use crate::{exec, pyjson};

pub(super) async fn get_queue(State(st): State<AppState>) -> Response {
    let g = st.shared.lock();
    let running: Vec<Value> = g.running.iter().map(|i| i.to_json(false)).collect();
    let pending: Vec<Value> = g
        .queue
        .as_slice()
        .iter()
        .map(|i| i.to_json(false))
        .collect();
    json_resp(
        StatusCode::OK,
        &json!({"queue_running": running, "queue_pending": pending}),
    )
}

pub(super) async fn post_queue(State(st): State<AppState>, req: Request) -> Response {
    let shared = &st.shared;
    let body = match read_json(shared, req.into_body()).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Value::Object(obj) = body else {
        return server_error();
    };
    let mut g = shared.lock();
    if obj.get("clear").is_some_and(pyjson::truthy) {
        g.queue.clear();
        g.broadcast_status(&shared.counters);
    }
    if let Some(ids) = obj.get("delete") {
        let Value::Array(ids) = ids else {
            return server_error();
        };
        for id in ids {
            let id = pyjson::py_str(id);
            if let Some(pos) = g.queue.as_slice().iter().position(|i| i.prompt_id == id) {
                if g.queue.len() == 1 {
                    g.queue.clear();
                    g.broadcast_status(&shared.counters);
                } else {
                    g.queue.remove_at(pos);
                }
                g.broadcast_status(&shared.counters);
            }
        }
    }
    StatusCode::OK.into_response()
}

pub(super) async fn interrupt(State(st): State<AppState>, req: Request) -> Response {
    let shared = &st.shared;
    let body = read_body(shared, req.into_body())
        .await
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
    let target = body
        .as_ref()
        .and_then(|b| b.get("prompt_id"))
        .filter(|v| pyjson::truthy(v))
        .map(pyjson::py_str);
    match target {
        Some(id) => {
            let running = shared.lock().running.as_ref().map(|r| r.prompt_id.clone());
            if running.as_deref() == Some(id.as_str()) {
                shared.interrupt.store(true, Ordering::SeqCst);
            } else {
                tracing::debug!(node = %shared.config.name, prompt_id = %id, "interrupt for a prompt that is not running ignored");
            }
        }
        None => shared.interrupt.store(true, Ordering::SeqCst),
    }
    StatusCode::OK.into_response()
}

pub(super) async fn free(State(st): State<AppState>, req: Request) -> Response {
    let shared = &st.shared;
    let body = match read_json(shared, req.into_body()).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Value::Object(obj) = body else {
        return server_error();
    };
    let unload = obj.get("unload_models").is_some_and(pyjson::truthy);
    let free_memory = obj.get("free_memory").is_some_and(pyjson::truthy);
    let mut g = shared.lock();
    g.pending_free.0 |= unload;
    g.pending_free.1 |= free_memory;
    if g.running.is_none() {
        exec::apply_free(&mut g);
    }
    StatusCode::OK.into_response()
}

fn parse_py_int(s: &str) -> Option<i64> {
    crate::pyconv::py_int(&Value::String(s.to_string()))
        .ok()
        .and_then(|v| v.as_i64())
}

pub(super) async fn get_history(
    State(st): State<AppState>,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    let find = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let max_items = match find("max_items") {
        Some(s) => match parse_py_int(&s) {
            Some(n) => Some(n),
            None => return server_error(),
        },
        None => None,
    };
    let mut offset = match find("offset") {
        Some(s) => match parse_py_int(&s) {
            Some(n) => n,
            None => return server_error(),
        },
        None => -1,
    };
    let g = st.shared.lock();
    if offset < 0
        && let Some(m) = max_items
    {
        offset = g.history.len() as i64 - m;
    }
    let mut out = Map::new();
    for (i, (k, v)) in g.history.iter().enumerate() {
        if i as i64 >= offset {
            out.insert(k.clone(), v.clone());
            if max_items.is_some_and(|m| out.len() as i64 >= m) {
                break;
            }
        }
    }
    json_resp(StatusCode::OK, &Value::Object(out))
}

pub(super) async fn get_history_one(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Response {
    let g = st.shared.lock();
    let body = match g.history.get(&id) {
        Some(entry) => json!({ id: entry }),
        None => json!({}),
    };
    json_resp(StatusCode::OK, &body)
}

pub(super) async fn post_history(State(st): State<AppState>, req: Request) -> Response {
    let shared = &st.shared;
    let body = match read_json(shared, req.into_body()).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Value::Object(obj) = body else {
        return server_error();
    };
    let mut g = shared.lock();
    if obj.get("clear").is_some_and(pyjson::truthy) {
        g.history.clear();
    }
    if let Some(ids) = obj.get("delete") {
        let Value::Array(ids) = ids else {
            return server_error();
        };
        for id in ids {
            g.history.shift_remove(&pyjson::py_str(id));
        }
    }
    StatusCode::OK.into_response()
}
