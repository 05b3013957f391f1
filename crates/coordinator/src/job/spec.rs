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
        }
    }
}
