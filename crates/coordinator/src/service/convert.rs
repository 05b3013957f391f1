//! Conversions from the coordinator's domain types to the gRPC messages.

use std::time::SystemTime;

use fleet_proto::v1 as pb;
use prost_types::Timestamp;

use crate::job::{
    AttemptRecord, Failure, FailureClass, Job, JobEvent, JobState, OutputRef, UiValues,
};

/// A protobuf timestamp.
pub fn timestamp(at: SystemTime) -> Timestamp {
    let since = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        seconds: since.as_secs() as i64,
        nanos: since.subsec_nanos() as i32,
    }
}

/// The protobuf state.
pub fn state(state: JobState) -> pb::JobState {
    match state {
        JobState::Queued => pb::JobState::Queued,
        JobState::Dispatched => pb::JobState::Dispatched,
        JobState::Running => pb::JobState::Running,
        JobState::Succeeded => pb::JobState::Succeeded,
        JobState::Failed => pb::JobState::Failed,
        JobState::Cancelled => pb::JobState::Cancelled,
    }
}

/// The domain state of a protobuf state, `None` for unspecified.
pub fn state_from(state: pb::JobState) -> Option<JobState> {
    Some(match state {
        pb::JobState::Unspecified => return None,
        pb::JobState::Queued => JobState::Queued,
        pb::JobState::Dispatched => JobState::Dispatched,
        pb::JobState::Running => JobState::Running,
        pb::JobState::Succeeded => JobState::Succeeded,
        pb::JobState::Failed => JobState::Failed,
        pb::JobState::Cancelled => JobState::Cancelled,
    })
}

fn attempt(record: &AttemptRecord) -> pb::AttemptRecord {
    pb::AttemptRecord {
        attempt: record.attempt,
        node: record.node.clone(),
        prompt_id: record.prompt_id.to_string(),
        reason: record.reason.clone(),
        failure_class: record
            .class
            .map_or(pb::FailureClass::Unspecified, failure_class) as i32,
    }
}

fn failure_class(class: FailureClass) -> pb::FailureClass {
    match class {
        FailureClass::NodeEnvironment => pb::FailureClass::NodeEnvironment,
        FailureClass::OutOfMemory => pb::FailureClass::OutOfMemory,
        FailureClass::JobFault => pb::FailureClass::JobFault,
        FailureClass::Validation => pb::FailureClass::Validation,
        FailureClass::NodeLost => pb::FailureClass::NodeLost,
        FailureClass::Deadline => pb::FailureClass::Deadline,
        FailureClass::Coordinator => pb::FailureClass::Coordinator,
    }
}

/// The protobuf output; `index` is its position in the job's outputs.
pub fn output(index: usize, output: &OutputRef) -> pb::Output {
    pb::Output {
        node_id: output.node_id.clone(),
        filename: output.filename.clone(),
        subfolder: output.subfolder.clone(),
        r#type: output.folder_type.clone(),
        kind: output.kind.clone(),
        index: index as u32,
        text: String::new(),
        text_truncated: false,
    }
}

/// The most of one text output a job snapshot or event carries.
pub const INLINE_TEXT_BYTES: usize = 64 << 10;
/// The most of one text output a `ListJobs` page carries: a page holds up to 1,000 jobs.
pub const LISTED_TEXT_BYTES: usize = 1 << 10;
/// The longest string a `NodeExecuted` event's UI JSON keeps whole.
const UI_JSON_STRING_BYTES: usize = 4 << 10;

/// `text` cut to at most `limit` bytes on a character boundary, and whether it was cut.
fn cut(text: &str, limit: usize) -> (String, bool) {
    if text.len() <= limit {
        return (text.to_owned(), false);
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (text[..end].to_owned(), true)
}

/// A node's UI dict as JSON for a `NodeExecuted` event. Walking it to cut strings is only
/// needed when the whole is longer than one string may be, which is rare.
fn ui_json(ui: &serde_json::Value) -> Vec<u8> {
    let whole = ui.to_string();
    if whole.len() <= UI_JSON_STRING_BYTES {
        return whole.into_bytes();
    }
    shorten_strings(ui, UI_JSON_STRING_BYTES)
        .to_string()
        .into_bytes()
}

/// `value` with every string longer than `limit` bytes cut there and ended with "…".
fn shorten_strings(value: &serde_json::Value, limit: usize) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(text) => match cut(text, limit) {
            (text, false) => Value::String(text),
            (text, true) => Value::String(text + "…"),
        },
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| shorten_strings(item, limit))
                .collect(),
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, item)| (key.clone(), shorten_strings(item, limit)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// One item of a node's `text` list as an output at `index`, cut at `limit` bytes. A node
/// that shows something other than a string has it written as JSON.
fn text_output(node_id: &str, item: &serde_json::Value, index: usize, limit: usize) -> pb::Output {
    let whole = item
        .as_str()
        .map_or_else(|| item.to_string(), str::to_owned);
    let (text, text_truncated) = cut(&whole, limit);
    pb::Output {
        node_id: node_id.to_owned(),
        kind: "text".to_owned(),
        index: index as u32,
        text,
        text_truncated,
        ..pb::Output::default()
    }
}

/// A job's outputs: its files (in the order recorded, so their indices are what `FetchOutput`
/// takes), then each text a node showed (kind `text`, by workflow node id compared as
/// strings), which a caller reads from the `text` field; each text is cut at `text_limit`
/// bytes (`text_truncated` then says so, and `FetchOutput` has the whole).
pub fn outputs(files: &[OutputRef], ui_values: &UiValues, text_limit: usize) -> Vec<pb::Output> {
    let texts = ui_values.iter().flat_map(|(node_id, values)| {
        values
            .get("text")
            .and_then(serde_json::Value::as_array)
            .into_iter()
            .flatten()
            .map(move |item| (node_id, item))
    });
    files
        .iter()
        .enumerate()
        .map(|(index, o)| output(index, o))
        .chain(
            texts.enumerate().map(|(n, (node_id, item))| {
                text_output(node_id, item, files.len() + n, text_limit)
            }),
        )
        .collect()
}

/// The protobuf failure with every attempt, oldest first.
///
/// `history` is the full list when the caller has it (a `Failed` event carries it); otherwise
/// the job's recorded attempts are used, and the job's current (failing) attempt is added.
pub fn failure(
    failure: &Failure,
    job: Option<&Job>,
    history: Option<&[AttemptRecord]>,
) -> pb::Failure {
    let node_errors = failure
        .node_error
        .iter()
        .map(|error| pb::NodeError {
            node_id: error.node_id.clone(),
            class_type: error.class_type.clone(),
            exception_type: error.exception_type.clone(),
            exception_message: error.exception_message.clone(),
            traceback: error.traceback.clone(),
            issues: Vec::new(),
        })
        .chain(validation_errors(failure))
        .collect();
    let mut attempts: Vec<pb::AttemptRecord> = match (history, job) {
        (Some(history), _) => history.iter().map(attempt).collect(),
        (None, Some(job)) => job.progress.attempts.iter().map(attempt).collect(),
        (None, None) => Vec::new(),
    };
    if history.is_none()
        && let Some(job) = job
        && job.progress.attempt > attempts.last().map_or(0, |last| last.attempt)
    {
        // The attempt that ended the job is not a requeued one, so it is not in the record.
        attempts.push(pb::AttemptRecord {
            attempt: job.progress.attempt,
            node: job.progress.node.clone().unwrap_or_default(),
            prompt_id: job
                .progress
                .prompt_id
                .map(|p| p.to_string())
                .unwrap_or_default(),
            reason: failure.message.clone(),
            failure_class: failure_class(failure.class) as i32,
        });
    }
    pb::Failure {
        failure_class: failure_class(failure.class) as i32,
        message: failure.message.clone(),
        node_errors,
        retryable: failure.retryable,
        attempts,
        raw_node_error_json: failure
            .details
            .as_ref()
            .map(|details| details.to_string().into_bytes())
            .unwrap_or_default(),
    }
}

/// Per-node validation errors of a 400 answer kept in the failure's details.
fn validation_errors(failure: &Failure) -> Vec<pb::NodeError> {
    let Some(nodes) = failure
        .details
        .as_ref()
        .and_then(|d| d.get("node_errors"))
        .and_then(|n| n.as_object())
    else {
        return Vec::new();
    };
    nodes
        .iter()
        .map(|(node_id, error)| pb::NodeError {
            node_id: node_id.clone(),
            class_type: error
                .get("class_type")
                .and_then(|c| c.as_str())
                .unwrap_or_default()
                .to_owned(),
            issues: error
                .get("errors")
                .and_then(|e| e.as_array())
                .into_iter()
                .flatten()
                .map(|issue| pb::ValidationIssue {
                    r#type: text(issue, "type"),
                    message: text(issue, "message"),
                    details: text(issue, "details"),
                    input_name: issue
                        .get("extra_info")
                        .map(|extra| text(extra, "input_name"))
                        .unwrap_or_default(),
                    extra_info_json: issue
                        .get("extra_info")
                        .map(|e| e.to_string().into_bytes())
                        .unwrap_or_default(),
                })
                .collect(),
            ..Default::default()
        })
        .collect()
}

fn text(value: &serde_json::Value, key: &str) -> String {
    value
        .get(key)
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned()
}

/// The protobuf job snapshot.
///
/// Text outputs carry at most `text_limit` bytes each ([`INLINE_TEXT_BYTES`] for one job,
/// [`LISTED_TEXT_BYTES`] in a listing).
pub fn job(
    job: &Job,
    queue_position: Option<u64>,
    last_sequence: u64,
    text_limit: usize,
) -> pb::Job {
    let progress = &job.progress;
    pb::Job {
        id: job.id.to_string(),
        state: state(progress.state) as i32,
        tenant: job.spec.tenant.clone(),
        priority: job.spec.priority,
        required_labels: job.spec.required_labels.clone().into_iter().collect(),
        node: progress.node.clone().unwrap_or_default(),
        prompt_id: progress
            .prompt_id
            .map(|p| p.to_string())
            .unwrap_or_default(),
        attempt: progress.attempt,
        created_at: Some(timestamp(job.created_at)),
        started_at: progress.started_at.map(timestamp),
        finished_at: progress.finished_at.map(timestamp),
        outputs: outputs(&progress.outputs, &progress.ui_values, text_limit),
        last_sequence,
        failure: progress
            .failure
            .as_ref()
            .map(|f| failure(f, Some(job), None)),
        queue_position: queue_position.unwrap_or_default() as u32,
        deadline: job.spec.deadline.map(timestamp),
        idempotency_key: job.spec.idempotency_key.clone().unwrap_or_default(),
        cancel_reason: progress.cancel_reason.clone().unwrap_or_default(),
        dispatched_at: None,
    }
}

/// The protobuf event.
pub fn event(sequence: u64, at: SystemTime, event: &JobEvent) -> pb::JobEvent {
    use pb::job_event as e;
    let kind = match event {
        JobEvent::Queued { position } => e::Kind::Queued(e::Queued {
            position: *position as u32,
        }),
        JobEvent::Dispatched {
            node,
            prompt_id,
            attempt,
        } => e::Kind::Dispatched(e::Dispatched {
            node: node.clone(),
            prompt_id: prompt_id.to_string(),
            attempt: *attempt,
        }),
        JobEvent::Started => e::Kind::Started(e::Started {}),
        JobEvent::NodeExecuting {
            node_id,
            class_type,
            title,
        } => e::Kind::NodeExecuting(e::NodeExecuting {
            node_id: node_id.clone(),
            class_type: class_type.clone().unwrap_or_default(),
            title: title.clone().unwrap_or_default(),
        }),
        JobEvent::Progress {
            node_id,
            value,
            max,
        } => e::Kind::Progress(e::Progress {
            node_id: node_id.clone(),
            value: *value as f64,
            max: *max as f64,
        }),
        JobEvent::NodesCached { node_ids } => e::Kind::NodesCached(e::NodesCached {
            node_ids: node_ids.clone(),
        }),
        JobEvent::NodeExecuted { node_id, outputs } => e::Kind::NodeExecuted(e::NodeExecuted {
            node_id: node_id.clone(),
            outputs: ui_outputs(node_id, outputs),
            ui_json: ui_json(outputs),
        }),
        JobEvent::PreviewImage {
            node_id,
            content_type,
            bytes,
        } => e::Kind::PreviewImage(e::PreviewImage {
            node_id: node_id.clone().unwrap_or_default(),
            content_type: content_type.clone(),
            data: bytes.to_vec(),
        }),
        JobEvent::Succeeded {
            outputs: list,
            ui_values,
        } => e::Kind::Succeeded(e::Succeeded {
            outputs: outputs(list, ui_values, INLINE_TEXT_BYTES),
        }),
        // NOTE: the event does not hold the job, so its failure lists no attempts although
        // the contract says "every attempt made"; a caller who needs them reads GetJob. The
        // job's own list also lacks the final attempt (only requeued attempts are recorded).
        JobEvent::Failed {
            failure: f,
            history,
            ..
        } => e::Kind::Failed(e::Failed {
            failure: Some(failure(f, None, Some(history))),
        }),
        JobEvent::Retrying {
            attempt,
            reason,
            class,
        } => e::Kind::Retrying(e::Retrying {
            attempt: *attempt,
            reason: reason.clone(),
            failure_class: failure_class(*class) as i32,
            // Retries are placed as soon as a node can take them: there is no backoff.
            backoff: None,
        }),
        JobEvent::Cancelled { reason } => e::Kind::Cancelled(e::Cancelled {
            reason: reason.clone(),
        }),
    };
    pb::JobEvent {
        sequence,
        time: Some(timestamp(at)),
        kind: Some(kind),
    }
}

/// The file and text outputs listed in an `executed` UI dict.
fn ui_outputs(node_id: &str, ui: &serde_json::Value) -> Vec<pb::Output> {
    let Some(map) = ui.as_object() else {
        return Vec::new();
    };
    let mut list = Vec::new();
    for (kind, files) in map {
        for file in files.as_array().into_iter().flatten() {
            if kind == "text" {
                list.push(text_output(node_id, file, list.len(), INLINE_TEXT_BYTES));
            } else if let Some(filename) = file.get("filename").and_then(|f| f.as_str()) {
                list.push(pb::Output {
                    node_id: node_id.to_owned(),
                    filename: filename.to_owned(),
                    subfolder: text(file, "subfolder"),
                    r#type: text(file, "type"),
                    kind: kind.clone(),
                    index: list.len() as u32,
                    text: String::new(),
                    text_truncated: false,
                });
            }
        }
    }
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ui(text: &str) -> UiValues {
        UiValues::from([(
            "4".to_owned(),
            serde_json::json!({"text": [text]})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        )])
    }

    #[test]
    fn long_texts_are_cut_on_a_character_boundary_and_say_so() {
        // "é" is two bytes: a limit inside it cuts before it.
        let (text, cut_short) = cut("aé", 2);
        assert_eq!((text.as_str(), cut_short), ("a", true));
        assert_eq!(cut("short", 64), ("short".to_owned(), false));

        let long = "x".repeat(INLINE_TEXT_BYTES + 10);
        let whole = outputs(&[], &ui(&long), usize::MAX);
        assert_eq!(whole[0].text.len(), long.len());
        assert!(!whole[0].text_truncated);
        let inline = outputs(&[], &ui(&long), INLINE_TEXT_BYTES);
        assert_eq!(inline[0].text.len(), INLINE_TEXT_BYTES);
        assert!(inline[0].text_truncated);
        let listed = outputs(&[], &ui(&long), LISTED_TEXT_BYTES);
        assert_eq!(listed[0].text.len(), LISTED_TEXT_BYTES);
        assert_eq!((listed[0].index, listed[0].kind.as_str()), (0, "text"));
    }

    #[test]
    fn an_executed_event_keeps_its_shape_with_long_strings_cut() {
        let long = "y".repeat(UI_JSON_STRING_BYTES * 3);
        let event = JobEvent::NodeExecuted {
            node_id: "4".into(),
            outputs: serde_json::json!({"text": [long, "short"], "animated": [true]}),
        };
        let pb = super::event(1, SystemTime::UNIX_EPOCH, &event);
        let Some(pb::job_event::Kind::NodeExecuted(executed)) = pb.kind else {
            panic!("an executed event");
        };
        let ui: serde_json::Value = serde_json::from_slice(&executed.ui_json).expect("JSON");
        let first = ui["text"][0].as_str().expect("a string");
        assert!(first.len() < UI_JSON_STRING_BYTES + 4 && first.ends_with('…'));
        assert_eq!(ui["text"][1], "short");
        assert_eq!(ui["animated"], serde_json::json!([true]));
        let texts: Vec<(&str, bool)> = executed
            .outputs
            .iter()
            .map(|o| (o.kind.as_str(), o.text_truncated))
            .collect();
        assert_eq!(
            texts,
            [("text", false), ("text", false)],
            "both texts listed"
        );
        assert_eq!(executed.outputs[0].text.len(), UI_JSON_STRING_BYTES * 3);
    }
}
