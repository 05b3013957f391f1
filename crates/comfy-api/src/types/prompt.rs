//! `POST /prompt` (submit a workflow) and `GET /prompt` (queue length).
//!
//! The request forwards the workflow as the exact raw text it was given (see
//! [`crate::workflow::Workflow`]) so that numbers such as `18446744073709551615` reach the node
//! unchanged. The node answers 200 [`PromptAccepted`] (possibly with non-empty `node_errors`
//! when only some outputs validated) or 400 [`PromptRejected`].

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::lenient;
use crate::workflow::Workflow;

/// Body of `POST /prompt`.
#[derive(Debug, Clone, Serialize)]
pub struct PromptRequest {
    /// The API-format graph, forwarded byte for byte.
    pub prompt: Box<RawValue>,
    /// WebSocket session id that receives this prompt's events. Without one, most events are
    /// not sent at all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Prompt id chosen by the caller (newer nodes require a canonical lowercase UUID).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_id: Option<String>,
    /// Explicit priority key (smaller runs first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub number: Option<f64>,
    /// Jump ahead of every normal item (ignored when `number` is set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub front: Option<bool>,
    /// Free-form data stored with the item (`extra_pnginfo`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extra_data: Option<Map<String, Value>>,
    /// Run only these output nodes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partial_execution_targets: Option<Vec<String>>,
}

impl PromptRequest {
    /// Builds a request for `workflow` with a fresh lowercase UUID as prompt id and the given
    /// WebSocket client id.
    pub fn new(workflow: &Workflow, client_id: impl Into<String>) -> Self {
        let mut req = Self::from_raw(workflow.to_raw());
        req.client_id = Some(client_id.into());
        req.prompt_id = Some(uuid::Uuid::new_v4().to_string());
        req
    }

    /// Builds a request from raw graph JSON with no optional field set.
    pub fn from_raw(prompt: Box<RawValue>) -> Self {
        Self {
            prompt,
            client_id: None,
            prompt_id: None,
            number: None,
            front: None,
            extra_data: None,
            partial_execution_targets: None,
        }
    }
}

/// 200 answer of `POST /prompt`: the prompt was queued.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptAccepted {
    /// The prompt id (the caller's, or one the node generated).
    #[serde(deserialize_with = "lenient::id_string")]
    pub prompt_id: String,
    /// Priority key the node assigned (int or float).
    #[serde(deserialize_with = "lenient::f64_any")]
    pub number: f64,
    /// Output nodes that failed validation and will not run (empty when all validated).
    #[serde(default)]
    pub node_errors: BTreeMap<String, NodeError>,
}

/// 400 answer of `POST /prompt`: nothing was queued.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptRejected {
    /// The top-level reason (`no_prompt`, `invalid_prompt`, `prompt_no_outputs`,
    /// `prompt_outputs_failed_validation`, newer: `invalid_prompt_id`, `missing_node_type`).
    pub error: PromptError,
    /// Per-node validation errors (only nodes with their own errors are listed).
    #[serde(default)]
    pub node_errors: BTreeMap<String, NodeError>,
}

impl fmt::Display for PromptRejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.error.kind, self.error.message)?;
        if !self.error.details.is_empty() {
            write!(f, " ({})", self.error.details)?;
        }
        for (id, ne) in &self.node_errors {
            for e in &ne.errors {
                write!(f, "; node {id} ({}): {}", ne.class_type, e.message)?;
                if !e.details.is_empty() {
                    write!(f, ": {}", e.details)?;
                }
            }
        }
        Ok(())
    }
}

/// One error object `{type, message, details, extra_info}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptError {
    /// Machine-readable error type, e.g. `value_smaller_than_min`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Human message.
    #[serde(default)]
    pub message: String,
    /// Extra detail (often the input name).
    #[serde(default)]
    pub details: String,
    /// Type-specific data (`input_name`, `received_value`, `traceback`, ...).
    #[serde(default)]
    pub extra_info: Map<String, Value>,
}

impl PromptError {
    /// Returns `extra_info.input_name`, the input the error is about, when present.
    pub fn input_name(&self) -> Option<&str> {
        self.extra_info.get("input_name").and_then(Value::as_str)
    }
}

/// Validation errors of one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeError {
    /// The errors.
    #[serde(default)]
    pub errors: Vec<PromptError>,
    /// Output node ids this node's failure blocked.
    #[serde(default, deserialize_with = "lenient::id_list")]
    pub dependent_outputs: Vec<String>,
    /// The node's class.
    #[serde(default)]
    pub class_type: String,
}

/// Answer of `GET /prompt`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptInfo {
    /// `{queue_remaining}`.
    pub exec_info: ExecInfo,
}

/// `exec_info` of `GET /prompt` and of WebSocket `status` messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecInfo {
    /// Pending plus running prompts.
    #[serde(deserialize_with = "lenient::u64_any")]
    pub queue_remaining: u64,
}
