//! `/prompt`, `/queue`, `/interrupt` and `/free`: ComfyUI's queue routes over the fleet.
//!
//! A POSTed prompt is checked for what the coordinator can judge without a node, stored as a
//! fleet job and queued; what the answer and the queue listings look like follows ComfyUI
//! exactly (see the module docs of [`super`] for the fleet rules of delete, clear, interrupt
//! and free).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Map, Value, json};
use tracing::{info, warn};

use super::registry::FacadePrompt;
use super::{FACADE_TENANT, Facade, FacadeError, empty_ok, internal, json, server_error};
use crate::analysis;
use crate::job::{CREDENTIAL_KEYS, Job, JobSpec, JobState, PromptExtras};
use crate::journal::ListQuery;

/// Most live facade jobs listed by `/queue`.
const MAX_QUEUE_LISTING: usize = 10_000;

fn error_400(kind: &str, message: &str, details: &str) -> Response {
    json(
        StatusCode::BAD_REQUEST,
        json!({
            "error": {"type": kind, "message": message, "details": details, "extra_info": {}},
            "node_errors": {}
        }),
    )
}

/// `POST /prompt`.
///
/// `extra_data` (e.g. `extra_pnginfo`, which the save nodes embed in PNGs) and
/// `partial_execution_targets` go to the node with the graph. The credential keys for paid API
/// nodes are dropped rather than written to disk (see `CREDENTIAL_KEYS`), so such nodes run
/// without the client's account. `number` is reported back but does not order the fleet
/// queue (the coordinator's priority and arrival order do).
pub(crate) async fn post_prompt(State(facade): State<Arc<Facade>>, body: Bytes) -> Response {
    let response = queue_prompt(&facade, body).await;
    // Counted like gRPC submissions, so the job metrics cover both doors.
    let metrics = &facade.metrics;
    match response.status() {
        StatusCode::OK => metrics.jobs_submitted.inc(),
        StatusCode::SERVICE_UNAVAILABLE => metrics
            .jobs_rejected
            .with_label_values(&["queue_full"])
            .inc(),
        status if status.is_client_error() || status.is_server_error() => {
            metrics.jobs_rejected.with_label_values(&["invalid"]).inc()
        }
        _ => {}
    }
    response
}

async fn queue_prompt(facade: &Arc<Facade>, body: Bytes) -> Response {
    let facade = facade.clone();
    let Ok(body_value) = serde_json::from_slice::<Value>(&body) else {
        return server_error();
    };
    let empty = Map::new();
    let fields = body_value.as_object().unwrap_or(&empty);

    // ComfyUI computes the number before it looks at the prompt, so rejected POSTs move the
    // counter too; an explicit number is echoed as a float and leaves the counter alone.
    let number = match fields.get("number") {
        Some(value) => match value.as_f64() {
            Some(n) => json!(n),
            None => return server_error(),
        },
        None => {
            let counter = facade.counter.fetch_add(1, Ordering::SeqCst);
            if fields.get("front").and_then(Value::as_bool) == Some(true) {
                json!(-counter)
            } else {
                json!(counter)
            }
        }
    };

    let Some(graph) = fields.get("prompt") else {
        return error_400("no_prompt", "No prompt provided", "No prompt provided");
    };
    let Some(nodes) = graph.as_object() else {
        return server_error();
    };
    if nodes.is_empty() {
        return error_400("prompt_no_outputs", "Prompt has no outputs", "");
    }
    if let Some(refusal) = check_classes(&facade, nodes) {
        return refusal;
    }
    // ComfyUI looks for output nodes after checking the classes and before validating inputs.
    let classes = nodes
        .values()
        .filter_map(|node| node.get("class_type").and_then(Value::as_str));
    if analysis::surely_has_no_output(classes) {
        return error_400("prompt_no_outputs", "Prompt has no outputs", "");
    }

    // Forward the caller's graph bytes exactly as sent.
    let graph_bytes = match raw_prompt(&body) {
        Some(bytes) => bytes,
        None => return server_error(),
    };
    if graph_bytes.len() > facade.max_workflow_bytes {
        return error_400(
            "invalid_prompt",
            &format!(
                "workflow is {} bytes; the limit is {} bytes",
                graph_bytes.len(),
                facade.max_workflow_bytes
            ),
            "",
        );
    }
    let extras = match PromptExtras::from_prompt_body(fields, facade.max_workflow_bytes) {
        Ok(extras) => extras,
        Err(error) => return error_400("invalid_prompt", &error.to_string(), ""),
    };
    // As in ComfyUI, targets that name no output node leave nothing to run.
    if let Some(targets) = extras
        .as_ref()
        .and_then(|extras| extras.partial_execution_targets.as_ref())
        && analysis::targets_leave_no_output(&graph_bytes, targets)
    {
        return error_400("prompt_no_outputs", "Prompt has no outputs", "");
    }
    let analysed = match analysis::analyse(&graph_bytes) {
        Ok(analysed) => analysed,
        Err(analysis::AnalysisError::NoOutputs) => {
            return error_400("prompt_no_outputs", "Prompt has no outputs", "");
        }
        Err(error) => {
            return error_400(
                "prompt_outputs_failed_validation",
                "Prompt outputs failed validation",
                &error.to_string(),
            );
        }
    };
    if analysed.num_nodes > facade.max_nodes {
        return error_400(
            "invalid_prompt",
            &format!(
                "workflow has {} nodes; the limit is {}",
                analysed.num_nodes, facade.max_nodes
            ),
            "",
        );
    }

    let prompt_id = match fields.get("prompt_id") {
        None | Some(Value::Null) => uuid::Uuid::new_v4().to_string(),
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
    };
    let mut extra_data = fields
        .get("extra_data")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    // Credentials are not written to disk (see `CREDENTIAL_KEYS`).
    for key in CREDENTIAL_KEYS {
        extra_data.remove(key);
    }
    let client_id = fields
        .get("client_id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| {
            extra_data
                .get("client_id")
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
    if let Some(client) = &client_id {
        extra_data.insert("client_id".into(), json!(client));
    }

    let mut spec = JobSpec::new(analysed.forward, FACADE_TENANT);
    spec.analysis = analysed.analysis;
    spec.extras = extras.map(Arc::new);
    let job = Job::new(spec, SystemTime::now());
    let view = analysis::job_view(&job, 0);
    let node_views: Vec<_> = facade.fleet.nodes().iter().map(|n| n.view()).collect();
    if let scheduler::Feasibility::Infeasible(why) = scheduler::feasibility(&view, &node_views) {
        let why = why
            .to_string()
            .replacen(&format!("job {}: ", job.id), "", 1);
        return error_400(
            "prompt_outputs_failed_validation",
            "Prompt outputs failed validation",
            &why,
        );
    }

    // The queue limits hold for this door too: a full queue answers 503 with Retry-After
    // (ComfyUI itself never refuses for load, so there is no native shape to copy).
    let _permit = match facade.manager.admit(FACADE_TENANT) {
        Ok(permit) => permit,
        Err(error) => return queue_full(&error),
    };
    let record = FacadePrompt {
        prompt_id: prompt_id.clone(),
        job_id: job.id,
        client_id: client_id.clone(),
        number: number.clone(),
        extra_data: Value::Object(extra_data),
    };
    match submit(&facade, job, record).await {
        Ok(()) => json(
            StatusCode::OK,
            json!({"prompt_id": prompt_id, "number": number, "node_errors": {}}),
        ),
        Err(error) => internal("/prompt", &error),
    }
}

/// 503 for a full queue, in ComfyUI's error shape, with `Retry-After` in seconds.
fn queue_full(error: &crate::manager::AdmissionError) -> Response {
    let body = json!({
        "error": {"type": "queue_full", "message": error.to_string(), "details": "", "extra_info": {}},
        "node_errors": {},
    });
    let mut response = json(StatusCode::SERVICE_UNAVAILABLE, body);
    let seconds = error.retry_after().as_secs().max(1).to_string();
    if let Ok(value) = axum::http::HeaderValue::from_str(&seconds) {
        response
            .headers_mut()
            .insert(axum::http::header::RETRY_AFTER, value);
    }
    response
}

async fn submit(facade: &Arc<Facade>, job: Job, record: FacadePrompt) -> Result<(), FacadeError> {
    let row = record.clone();
    facade.with_registry(move |r| r.insert(&row)).await?;
    let inserted = facade.store.insert(job).await?;
    let id = inserted.job.id;
    // Subscribe before the job can move, so the client's socket sees every event.
    if let Some(client) = &record.client_id {
        super::relay::spawn(facade.clone(), record.clone(), client.clone());
    }
    let position = facade.manager.enqueue(inserted.job).await?;
    info!(job_id = %id, prompt_id = %record.prompt_id, queue_position = position, "facade prompt queued");
    Ok(())
}

/// The exact bytes of the body's `prompt` value.
fn raw_prompt(body: &[u8]) -> Option<Bytes> {
    let fields: std::collections::HashMap<String, &serde_json::value::RawValue> =
        serde_json::from_slice(body).ok()?;
    fields
        .get("prompt")
        .map(|raw| Bytes::copy_from_slice(raw.get().as_bytes()))
}

/// ComfyUI's `invalid_prompt` checks: every node names a class, and (once the fleet's classes
/// are known) a class some node has.
fn check_classes(facade: &Facade, nodes: &Map<String, Value>) -> Option<Response> {
    let mut known: Option<BTreeSet<String>> = None;
    for node in facade.fleet.nodes() {
        if let Some(classes) = &node.status().classes {
            known
                .get_or_insert_with(BTreeSet::new)
                .extend(classes.iter().cloned());
        }
    }
    for (id, node) in nodes {
        let class = node.get("class_type").and_then(Value::as_str);
        let Some(class) = class else {
            return Some(error_400(
                "invalid_prompt",
                "Cannot execute because a node is missing the class_type property.",
                &format!("Node ID '#{id}'"),
            ));
        };
        if let Some(known) = &known
            && !known.contains(class)
        {
            return Some(error_400(
                "invalid_prompt",
                &format!("Cannot execute because node {class} does not exist."),
                &format!("Node ID '#{id}'"),
            ));
        }
    }
    None
}

/// `GET /prompt`: jobs left in the whole fleet (queued in the coordinator or on nodes).
pub(crate) async fn get_prompt(State(facade): State<Arc<Facade>>) -> Response {
    match facade.store.count_by_state().await {
        Ok(counts) => {
            let remaining: u64 = counts
                .iter()
                .filter(|(state, _)| !state.is_terminal())
                .map(|(_, n)| n)
                .sum();
            json(
                StatusCode::OK,
                json!({"exec_info": {"queue_remaining": remaining}}),
            )
        }
        Err(error) => internal("/prompt", &error.into()),
    }
}

/// Live facade jobs with their prompts, newest first.
pub(crate) async fn live_prompts(
    facade: &Facade,
    with_workflow: bool,
) -> Result<Vec<(Job, FacadePrompt)>, FacadeError> {
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let page = facade
            .store
            .list(ListQuery {
                states: vec![JobState::Queued, JobState::Dispatched, JobState::Running],
                tenant: Some(FACADE_TENANT.into()),
                page_size: crate::journal::MAX_PAGE_SIZE,
                page_token: token,
                with_workflow,
            })
            .await?;
        for job in page.jobs {
            let id = job.id;
            if let Some(prompt) = facade.with_registry(move |r| r.by_job(id)).await? {
                out.push((job, prompt));
            }
        }
        token = page.next_page_token;
        if token.is_none() || out.len() >= MAX_QUEUE_LISTING {
            return Ok(out);
        }
    }
}

/// ComfyUI's 5-element queue item `[number, prompt_id, prompt, extra_data, outputs]`.
pub(crate) fn queue_item(job: &Job, prompt: &FacadePrompt) -> Value {
    let graph: Value = serde_json::from_slice(&job.spec.workflow).unwrap_or(Value::Null);
    let outputs = output_nodes(&graph);
    json!([
        prompt.number,
        prompt.prompt_id,
        graph,
        prompt.extra_data,
        outputs
    ])
}

/// Output node ids of a graph.
///
/// NOTE: which classes are output nodes is only known from `/object_info`; the facade takes
/// the nodes whose outputs nothing consumes, which is right for ordinary graphs but also lists
/// a dangling non-output node (and misses an output node that feeds another node).
fn output_nodes(graph: &Value) -> Vec<String> {
    let Some(nodes) = graph.as_object() else {
        return Vec::new();
    };
    let mut consumed = BTreeSet::new();
    for node in nodes.values() {
        if let Some(inputs) = node.get("inputs").and_then(Value::as_object) {
            for input in inputs.values() {
                if let Some([Value::String(from), Value::Number(_)]) =
                    input.as_array().map(Vec::as_slice)
                {
                    consumed.insert(from.clone());
                }
            }
        }
    }
    nodes
        .keys()
        .filter(|id| !consumed.contains(*id))
        .cloned()
        .collect()
}

/// `GET /queue`.
pub(crate) async fn get_queue(State(facade): State<Arc<Facade>>) -> Response {
    let live = match live_prompts(&facade, true).await {
        Ok(live) => live,
        Err(error) => return internal("/queue", &error),
    };
    let mut running = Vec::new();
    let mut pending = Vec::new();
    for (job, prompt) in live.iter().rev() {
        let item = queue_item(job, prompt);
        if job.state() == JobState::Queued {
            pending.push(item);
        } else {
            running.push(item);
        }
    }
    json(
        StatusCode::OK,
        json!({"queue_running": running, "queue_pending": pending}),
    )
}

/// `POST /queue`: `clear` then `delete`, for facade jobs still waiting in the coordinator.
pub(crate) async fn post_queue(State(facade): State<Arc<Facade>>, body: Bytes) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return server_error();
    };
    if body.get("clear").and_then(Value::as_bool) == Some(true) {
        match live_prompts(&facade, false).await {
            Ok(live) => {
                for (job, prompt) in live {
                    if job.state() == JobState::Queued {
                        cancel(&facade, &prompt, "cleared from the queue").await;
                    }
                }
            }
            Err(error) => return internal("/queue", &error),
        }
    }
    if let Some(ids) = body.get("delete").and_then(Value::as_array) {
        for id in ids.iter().filter_map(Value::as_str) {
            let id = id.to_owned();
            let Ok(Some(prompt)) = facade.with_registry(move |r| r.by_prompt_id(&id)).await else {
                continue;
            };
            if let Ok(Some(live)) = facade.manager.get(prompt.job_id).await
                && live.job.state() == JobState::Queued
            {
                cancel(&facade, &prompt, "deleted from the queue").await;
            }
        }
    }
    empty_ok()
}

async fn cancel(facade: &Facade, prompt: &FacadePrompt, reason: &str) {
    match facade.manager.cancel(prompt.job_id, reason.into()).await {
        Ok(outcome) => {
            info!(job_id = %prompt.job_id, prompt_id = %prompt.prompt_id, ?outcome, reason, "facade job cancelled")
        }
        Err(error) => {
            warn!(job_id = %prompt.job_id, prompt_id = %prompt.prompt_id, %error, "facade cancel failed")
        }
    }
}

/// `POST /interrupt`; see the module docs of [`super`] for the global rule.
pub(crate) async fn post_interrupt(State(facade): State<Arc<Facade>>, body: Bytes) -> Response {
    // ComfyUI treats an empty or invalid body as a global interrupt.
    let body = serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null);
    let on_node = |state: JobState| matches!(state, JobState::Dispatched | JobState::Running);
    // ComfyUI targets when `prompt_id` is truthy in Python's sense, and compares it with the
    // running prompts' ids: a number or a list is targeted and matches nothing, while `""`,
    // `0`, `false`, `[]` and `{}` fall through to the global interrupt.
    if let Some(target) = body.get("prompt_id").filter(|value| python_truthy(value)) {
        let Some(id) = target.as_str().map(str::to_owned) else {
            return empty_ok();
        };
        if let Ok(Some(prompt)) = facade.with_registry(move |r| r.by_prompt_id(&id)).await
            && let Ok(Some(live)) = facade.manager.get(prompt.job_id).await
            && on_node(live.job.state())
        {
            cancel(&facade, &prompt, "interrupted").await;
        }
        return empty_ok();
    }
    let client = body
        .get("client_id")
        .and_then(Value::as_str)
        .map(str::to_owned);
    match live_prompts(&facade, false).await {
        Ok(live) => {
            let mut hit = 0;
            for (job, prompt) in live {
                if on_node(job.state()) && prompt.client_id == client {
                    cancel(&facade, &prompt, "interrupted").await;
                    hit += 1;
                }
            }
            info!(client_id = ?client, num_jobs = hit, "global interrupt applied to facade jobs");
            empty_ok()
        }
        Err(error) => internal("/interrupt", &error),
    }
}

/// `POST /free`: forwarded to every node that is up.
pub(crate) async fn post_free(State(facade): State<Arc<Facade>>, body: Bytes) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return server_error();
    };
    let request = comfy_api::FreeRequest {
        unload_models: body.get("unload_models").and_then(Value::as_bool) == Some(true),
        free_memory: body.get("free_memory").and_then(Value::as_bool) == Some(true),
    };
    for node in facade.fleet.nodes() {
        if node.status().health != scheduler::Health::Up {
            continue;
        }
        let node = node.clone();
        tokio::spawn(async move {
            if let Err(error) = node.client.free(request).await {
                warn!(node = %node.spec.name, %error, "free failed on node");
            }
        });
    }
    empty_ok()
}

/// Whether Python would take `value`, decoded from JSON, as true. The emulator has its own
/// copy: the coordinator does not depend on it outside tests.
fn python_truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(text) => !text.is_empty(),
        Value::Array(items) => !items.is_empty(),
        Value::Object(map) => !map.is_empty(),
    }
}
