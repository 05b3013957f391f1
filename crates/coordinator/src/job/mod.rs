//! The job domain model.
//!
//! A job is a workflow a caller submitted plus everything that happens to it. This module holds
//! the coordinator's own types for it, independent of the wire formats on either side (gRPC to
//! callers, HTTP and WebSocket to ComfyUI nodes): ids, the immutable [`JobSpec`], the changing
//! [`JobProgress`] with its pure state machine, the [`JobEvent`]s watchers see, failure
//! classification and output references.

mod event;
mod failure;
mod id;
mod output;
mod record;
mod spec;
mod state;

#[cfg(test)]
mod tests;

pub use event::JobEvent;
pub use failure::{Failure, FailureClass, Fault, NodeError};
pub use id::JobId;
pub use output::{OutputRef, UiValues};
pub use record::Job;
pub use spec::{CREDENTIAL_KEYS, ExtrasError, JobSpec, Labels, PromptExtras, WorkflowAnalysis};
pub use state::{AttemptRecord, JobProgress, JobState, StateChange};

/// Errors of the job model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// A state change that the state machine does not allow.
    #[error("job {job}: illegal transition from {from} to {to}")]
    IllegalTransition {
        /// The job.
        job: JobId,
        /// Its state.
        from: JobState,
        /// The state that was asked for.
        to: JobState,
    },
    /// Text that is not a canonical job id.
    #[error("job id {0:?}: not a canonical lowercase hyphenated uuid")]
    BadJobId(String),
    /// Text that is not a job state name.
    #[error("job state {0:?}: unknown state")]
    BadState(String),
}
