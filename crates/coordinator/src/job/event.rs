//! What happens to a job, as watchers see it.
//!
//! Each variant is one step of a job's life or one ComfyUI execution event mapped to the job.
//! The relay appends them to the job's event log; the gRPC layer maps them onto its own
//! messages. Node-reported values (outputs, errors) are kept as ComfyUI sent them.

use bytes::Bytes;
use uuid::Uuid;

use super::{AttemptRecord, Failure, FailureClass, OutputRef, UiValues};

/// One event in a job's life.
#[derive(Clone, Debug, PartialEq)]
pub enum JobEvent {
    /// The job entered (or re-entered) the coordinator's queue.
    Queued {
        /// Its position in the queue when it entered, 0 being next.
        position: u64,
    },
    /// The job was sent to a node.
    Dispatched {
        /// The fleet node's name.
        node: String,
        /// The prompt id the coordinator chose for this attempt.
        prompt_id: Uuid,
        /// The attempt number, 1 for the first.
        attempt: u32,
    },
    /// The node started executing the prompt (`execution_start`).
    Started,
    /// The node began executing one graph node (`executing`).
    NodeExecuting {
        /// The workflow node id.
        node_id: String,
        /// Its class, when known from the workflow.
        class_type: Option<String>,
        /// Its display title, when the workflow carries one (`_meta.title`).
        title: Option<String>,
    },
    /// Progress inside one graph node (`progress`), e.g. sampler steps.
    Progress {
        /// The workflow node id.
        node_id: String,
        /// Steps done.
        value: u64,
        /// Steps in total.
        max: u64,
    },
    /// Graph nodes whose results came from the node's cache (`execution_cached`).
    NodesCached {
        /// The workflow node ids.
        node_ids: Vec<String>,
    },
    /// One graph node finished and reported UI outputs (`executed`).
    NodeExecuted {
        /// The workflow node id.
        node_id: String,
        /// The `output` object as the node sent it.
        outputs: serde_json::Value,
    },
    /// A preview image (a binary WebSocket frame); delivered only to watchers that asked.
    PreviewImage {
        /// The workflow node id, when the frame carried metadata naming it.
        node_id: Option<String>,
        /// The image's MIME type, e.g. `image/jpeg`.
        content_type: String,
        /// The encoded image.
        bytes: Bytes,
    },
    /// The job finished successfully. Terminal.
    Succeeded {
        /// Every output file, read from the node's history.
        outputs: Vec<OutputRef>,
        /// The UI values other than files (text, flags), from the same history.
        ui_values: UiValues,
    },
    /// The job failed for good. Terminal.
    Failed {
        /// Why, whose fault, whether a retry could help.
        failure: Failure,
        /// How many attempts were made.
        attempts: u32,
        /// Every attempt, the last (failing) one included, oldest first.
        history: Vec<AttemptRecord>,
    },
    /// An attempt failed in a way another attempt may fix; the job goes back to the queue.
    Retrying {
        /// The attempt that failed.
        attempt: u32,
        /// Why it failed.
        reason: String,
        /// What kind of failure it was.
        class: FailureClass,
    },
    /// The job was cancelled. Terminal.
    Cancelled {
        /// Who or what cancelled it.
        reason: String,
    },
}

impl JobEvent {
    /// Returns whether this event ends the job (nothing may follow it).
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Self::Succeeded { .. } | Self::Failed { .. } | Self::Cancelled { .. }
        )
    }

    /// Returns whether this is a preview image, which is kept out of the main event sequence.
    pub fn is_preview(&self) -> bool {
        matches!(self, Self::PreviewImage { .. })
    }

    /// Returns a short stable name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Queued { .. } => "queued",
            Self::Dispatched { .. } => "dispatched",
            Self::Started => "started",
            Self::NodeExecuting { .. } => "node_executing",
            Self::Progress { .. } => "progress",
            Self::NodesCached { .. } => "nodes_cached",
            Self::NodeExecuted { .. } => "node_executed",
            Self::PreviewImage { .. } => "preview_image",
            Self::Succeeded { .. } => "succeeded",
            Self::Failed { .. } => "failed",
            Self::Retrying { .. } => "retrying",
            Self::Cancelled { .. } => "cancelled",
        }
    }
}
