//! The newer servers' jobs API (`/api/jobs`), offered by the `newer` profile only.
//!
//! Jobs are derived from the queue and history on each request: pending, in_progress, then
//! completed/failed/cancelled from history (an interrupt message means cancelled).
//! NOTE: filtering supports `status`, `limit` and `offset`; `workflow_id` and `sort_by` are
//! accepted but ignored, so clients relying on execution-duration sorting get creation order.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use serde_json::{Value, json};

use crate::http::{AppState, json_resp};

/// Routes of the jobs API.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/jobs", get(list))
        .route("/api/jobs/{id}", get(one))
}

fn all_jobs(st: &AppState) -> Vec<Value> {
    let g = st.shared.lock();
    let mut out = Vec::new();
    let mut pending: Vec<_> = g.queue.as_slice().to_vec();
    pending.sort_by(|a, b| {
        a.number
            .as_f64()
            .partial_cmp(&b.number.as_f64())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    for item in &pending {
        out.push(json!({"id": item.prompt_id, "status": "pending", "priority": item.number, "create_time": item.created_ms,
                        "outputs_count": 0, "previewable_outputs_count": 0}));
    }
    if let Some(item) = &g.running {
        out.push(json!({"id": item.prompt_id, "status": "in_progress", "priority": item.number, "create_time": item.created_ms,
                        "outputs_count": 0, "previewable_outputs_count": 0}));
    }
    for (id, entry) in g.history.iter() {
        let messages = entry["status"]["messages"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let status = if entry["status"]["status_str"] == "success" {
            "completed"
        } else if messages.iter().any(|m| m[0] == "execution_interrupted") {
            "cancelled"
        } else {
            "failed"
        };
        let count: usize = entry["outputs"]
            .as_object()
            .map(|o| {
                o.values()
                    .filter_map(|v| v.as_object())
                    .map(|v| {
                        v.values()
                            .filter_map(Value::as_array)
                            .map(Vec::len)
                            .sum::<usize>()
                    })
                    .sum()
            })
            .unwrap_or(0);
        let error = messages
            .iter()
            .find(|m| m[0] == "execution_error")
            .map(|m| m[1].clone());
        let mut job = json!({"id": id, "status": status, "priority": entry["prompt"][0], "outputs_count": count,
                             "previewable_outputs_count": count, "outputs": entry["outputs"]});
        if let Some(e) = error {
            job["execution_error"] = e;
        }
        out.push(job);
    }
    out
}

async fn list(State(st): State<AppState>, Query(q): Query<Vec<(String, String)>>) -> Response {
    let find = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let mut jobs = all_jobs(&st);
    if let Some(statuses) = find("status") {
        let wanted: Vec<&str> = statuses.split(',').map(str::trim).collect();
        jobs.retain(|j| j["status"].as_str().is_some_and(|s| wanted.contains(&s)));
    }
    let total = jobs.len();
    let offset = find("offset")
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(0);
    let limit = find("limit").and_then(|s| s.parse::<usize>().ok());
    let page: Vec<Value> = jobs
        .into_iter()
        .skip(offset)
        .take(limit.unwrap_or(usize::MAX))
        .collect();
    let has_more = offset + page.len() < total;
    json_resp(
        StatusCode::OK,
        &json!({"jobs": page, "pagination": {"offset": offset, "limit": limit, "total": total, "has_more": has_more}}),
    )
}

async fn one(State(st): State<AppState>, Path(id): Path<String>) -> Response {
    match all_jobs(&st).into_iter().find(|j| j["id"] == id.as_str()) {
        Some(job) => json_resp(StatusCode::OK, &job),
        None => json_resp(StatusCode::NOT_FOUND, &json!({"error": "Job not found"})),
    }
}
