//! What a caller asked for.
//!
//! The spec is fixed at submission and never changes afterwards; everything that changes lives in
//! [`JobProgress`](super::JobProgress). The workflow is kept as the exact bytes the caller sent:
//! seeds and other integers can exceed 2^53, so the coordinator forwards what it validated
//! instead of re-serialising a parsed value. The analysis fields are filled by whoever validated
//! the workflow, so this module does not depend on a workflow parser.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Labels as `key = value` pairs, e.g. `gpu = "a100"`; a job's required labels must all be
/// present, with equal values, on a node that runs it.
pub type Labels = BTreeMap<String, String>;

/// Describes one submitted job: the workflow and how the caller wants it run.
#[derive(Clone, Debug, PartialEq)]
pub struct JobSpec {
    /// The API-format workflow JSON, byte for byte as submitted.
    pub workflow: Bytes,
    /// Who submitted the job; quotas, fairness and idempotency keys are scoped by tenant.
    pub tenant: String,
    /// Higher runs earlier; jobs of equal priority run in arrival order.
    pub priority: i32,
    /// Labels a node must carry to be a candidate for this job.
    pub required_labels: Labels,
    /// A caller-chosen key that makes a repeated submission return the first job; unique per
    /// tenant.
    pub idempotency_key: Option<String>,
    /// The job fails with [`FailureClass::Deadline`](super::FailureClass::Deadline) if it has
    /// not finished by then.
    pub deadline: Option<SystemTime>,
    /// What validation learnt about the workflow.
    pub analysis: WorkflowAnalysis,
    /// What a ComfyUI client sent beside the graph, forwarded to the node with it; `None` when
    /// it sent nothing of the kind.
    pub extras: Option<Arc<PromptExtras>>,
}

/// What a ComfyUI client sends beside the graph in a `/prompt` body, kept with the job and
/// sent to the node with the prompt, so the node runs it as it would have run it for the
/// client directly.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PromptExtras {
    /// Free-form data ComfyUI keeps with the prompt. Its `extra_pnginfo` is what the save
    /// nodes embed in PNG files (the editor puts its own graph there, so a saved image opens
    /// as a workflow). Never holds `client_id`: the coordinator sets its own.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra_data: serde_json::Map<String, serde_json::Value>,
    /// The output nodes to run, when the client asked for only some of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial_execution_targets: Option<Vec<String>>,
}

/// Keys of `extra_data` that carry a client's credentials for paid API nodes. ComfyUI keeps
/// them in memory only; the coordinator would have to write them to its journal, so it drops
/// them.
pub const CREDENTIAL_KEYS: [&str; 2] = ["auth_token_comfy_org", "api_key_comfy_org"];

/// Why the fields beside a graph in a `/prompt` body were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtrasError {
    /// `extra_data` is not a JSON object.
    #[error("extra_data must be a JSON object, got {0}")]
    ExtraDataNotObject(&'static str),
    /// `partial_execution_targets` is not a list of node ids.
    #[error("partial_execution_targets must be a list of node id strings, got {0}")]
    TargetsNotIds(&'static str),
    /// Together they are larger than the limit.
    #[error("extra_data and partial_execution_targets take {size} bytes; the limit is {limit}")]
    TooLarge {
        /// Their size as JSON.
        size: usize,
        /// The limit.
        limit: usize,
    },
}

impl PromptExtras {
    /// Whether there is nothing to forward.
    pub fn is_empty(&self) -> bool {
        self.extra_data.is_empty() && self.partial_execution_targets.is_none()
    }

    /// Reads `extra_data` and `partial_execution_targets` from the fields of a `/prompt` body;
    /// `None` when neither carries anything. `client_id` and the credential keys
    /// ([`CREDENTIAL_KEYS`]) are left out, and the rest may take at most `limit` bytes as JSON.
    ///
    /// # Errors
    /// [`ExtrasError`] naming the field that has the wrong shape, or the size.
    pub fn from_prompt_body(
        fields: &serde_json::Map<String, serde_json::Value>,
        limit: usize,
    ) -> Result<Option<Self>, ExtrasError> {
        use serde_json::Value;
        let kind = |value: &Value| match value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "a list",
            Value::Object(_) => "an object",
        };
        let mut extra_data = match fields.get("extra_data") {
            None | Some(Value::Null) => serde_json::Map::new(),
            Some(Value::Object(map)) => map.clone(),
            Some(other) => return Err(ExtrasError::ExtraDataNotObject(kind(other))),
        };
        extra_data.remove("client_id");
        for key in CREDENTIAL_KEYS {
            extra_data.remove(key);
        }
        let partial_execution_targets = match fields.get("partial_execution_targets") {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) => Some(
                items
                    .iter()
                    .map(|item| match item {
                        Value::String(id) => Ok(id.clone()),
                        other => Err(ExtrasError::TargetsNotIds(kind(other))),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            Some(other) => return Err(ExtrasError::TargetsNotIds(kind(other))),
        };
        let extras = Self {
            extra_data,
            partial_execution_targets,
        };
        if extras.is_empty() {
            return Ok(None);
        }
        // Serialising plain JSON values cannot fail; a failure would count as too large.
        let size = serde_json::to_vec(&extras).map_or(usize::MAX, |bytes| bytes.len());
        if size > limit {
            return Err(ExtrasError::TooLarge { size, limit });
        }
        Ok(Some(extras))
    }
}

/// Facts about a workflow that placement needs, computed once at submission.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkflowAnalysis {
    /// Node classes (`class_type`) the workflow uses; a node lacking one cannot run it.
    /// Shared with the job's placement view (serialized as the plain set).
    pub required_classes: Arc<BTreeSet<String>>,
    /// Model files the workflow loads, by model folder (`checkpoints`, `loras`, ...).
    pub models: BTreeMap<String, BTreeSet<String>>,
    /// Estimated relative cost of the job (unitless, larger is slower); 0 when unknown.
    pub cost: f64,
    /// The least VRAM its sampling needs beyond the model weights, in bytes (see
    /// [`crate::analysis::estimate_activations`]). Kept here because a queued job keeps no
    /// workflow bytes, after a restart neither. Absent (0) in journals written before it.
    #[serde(default)]
    pub activation_bytes: u64,
}

impl JobSpec {
    /// Creates a spec with default priority (0), no labels, no key, no deadline and an empty
    /// analysis.
    pub fn new(workflow: impl Into<Bytes>, tenant: impl Into<String>) -> Self {
        Self {
            workflow: workflow.into(),
            tenant: tenant.into(),
            priority: 0,
            required_labels: Labels::new(),
            idempotency_key: None,
            deadline: None,
            analysis: WorkflowAnalysis::default(),
            extras: None,
        }
    }
}
