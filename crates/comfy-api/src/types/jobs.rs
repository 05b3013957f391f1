//! The jobs API (`/api/jobs`) of ComfyUI servers newer than late 2025.
//!
//! Older servers answer 404 on `GET /api/jobs`; [`crate::NodeClient::jobs`] turns that into
//! [`crate::ErrorKind::JobsApiUnavailable`]. NOTE: these types follow the upstream source read in
//! the protocol notes, not a recorded capture; unknown keys are kept in `extra` so a drift in
//! the newer servers does not break decoding.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::lenient;

/// State of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Waiting in the queue.
    Pending,
    /// Running.
    InProgress,
    /// Finished successfully.
    Completed,
    /// Finished with an error.
    Failed,
    /// Interrupted or removed.
    Cancelled,
    /// A status this crate does not know.
    #[serde(other)]
    Unknown,
}

impl JobStatus {
    /// The wire name, for query strings.
    pub fn as_str(&self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::InProgress => "in_progress",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
            JobStatus::Unknown => "unknown",
        }
    }
}

/// One job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// The prompt id.
    #[serde(deserialize_with = "lenient::id_string")]
    pub id: String,
    /// Current state.
    pub status: JobStatus,
    /// Priority key (the queue `number`).
    #[serde(default, deserialize_with = "lenient::opt_f64_any")]
    pub priority: Option<f64>,
    /// Creation time, ms since the epoch.
    #[serde(default, deserialize_with = "lenient::opt_u64_any")]
    pub create_time: Option<u64>,
    /// Start of execution, ms since the epoch.
    #[serde(default, deserialize_with = "lenient::opt_u64_any")]
    pub execution_start_time: Option<u64>,
    /// End of execution, ms since the epoch.
    #[serde(default, deserialize_with = "lenient::opt_u64_any")]
    pub execution_end_time: Option<u64>,
    /// The error, for failed jobs.
    #[serde(default)]
    pub execution_error: Option<Value>,
    /// Number of outputs.
    #[serde(default, deserialize_with = "lenient::opt_u64_any")]
    pub outputs_count: Option<u64>,
    /// Number of outputs the UI can preview.
    #[serde(default, deserialize_with = "lenient::opt_u64_any")]
    pub previewable_outputs_count: Option<u64>,
    /// One previewable output.
    #[serde(default)]
    pub preview_output: Option<Value>,
    /// Workflow id from `extra_pnginfo`, when the frontend sent one.
    #[serde(default)]
    pub workflow_id: Option<String>,
    /// Full outputs (single-job answer only).
    #[serde(default)]
    pub outputs: Option<Value>,
    /// Execution status (single-job answer only).
    #[serde(default)]
    pub execution_status: Option<Value>,
    /// The workflow (single-job answer only).
    #[serde(default)]
    pub workflow: Option<Value>,
    /// Every other key.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Answer of `GET /api/jobs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobList {
    /// The jobs of this page.
    #[serde(default)]
    pub jobs: Vec<Job>,
    /// Paging information.
    #[serde(default)]
    pub pagination: Option<Pagination>,
}

/// Paging of [`JobList`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pagination {
    /// Offset of this page.
    #[serde(default, deserialize_with = "lenient::u64_any")]
    pub offset: u64,
    /// Page size asked for (absent when unlimited).
    #[serde(default, deserialize_with = "lenient::opt_u64_any")]
    pub limit: Option<u64>,
    /// Total matching jobs.
    #[serde(default, deserialize_with = "lenient::u64_any")]
    pub total: u64,
    /// Whether more pages follow.
    #[serde(default, deserialize_with = "lenient::bool_any")]
    pub has_more: bool,
}

/// Filters of `GET /api/jobs`; `Default` asks for everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobsQuery {
    /// Only these states (empty: all).
    pub status: Vec<JobStatus>,
    /// Only this workflow id.
    pub workflow_id: Option<String>,
    /// `created_at` or `execution_duration`.
    pub sort_by: Option<String>,
    /// `asc` or `desc`.
    pub sort_order: Option<String>,
    /// Page size.
    pub limit: Option<u64>,
    /// Page offset.
    pub offset: Option<u64>,
}

impl JobsQuery {
    /// Renders the query as `(key, value)` pairs, omitting unset filters.
    pub fn to_pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = Vec::new();
        if !self.status.is_empty() {
            let s: Vec<&str> = self.status.iter().map(JobStatus::as_str).collect();
            pairs.push(("status", s.join(",")));
        }
        if let Some(w) = &self.workflow_id {
            pairs.push(("workflow_id", w.clone()));
        }
        if let Some(s) = &self.sort_by {
            pairs.push(("sort_by", s.clone()));
        }
        if let Some(s) = &self.sort_order {
            pairs.push(("sort_order", s.clone()));
        }
        if let Some(l) = self.limit {
            pairs.push(("limit", l.to_string()));
        }
        if let Some(o) = self.offset {
            pairs.push(("offset", o.to_string()));
        }
        pairs
    }
}
