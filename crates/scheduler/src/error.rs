//! Errors of the scheduler crate.
//!
//! Placement itself cannot fail: a job with no node simply waits. What can be wrong is the
//! input the coordinator assembles (the same node or job twice) and a policy configuration
//! with impossible values; both are reported here, naming the object first.

use crate::view::{JobId, NodeId};

/// Why a snapshot or a policy could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SchedulerError {
    /// Two nodes of a snapshot share a name.
    #[error("node {0}: listed twice in the placement snapshot")]
    DuplicateNode(NodeId),
    /// Two queued jobs of a snapshot share an id.
    #[error("job {0}: listed twice in the placement snapshot")]
    DuplicateJob(JobId),
    /// A policy setting is out of range.
    #[error("policy {policy}: setting {setting} is {value}, {expected}")]
    InvalidSetting {
        /// Policy name.
        policy: &'static str,
        /// Setting name.
        setting: &'static str,
        /// The rejected value, as text.
        value: String,
        /// What a valid value looks like.
        expected: &'static str,
    },
}
