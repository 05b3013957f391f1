//! The job record: what was asked and where it stands.

use std::time::SystemTime;

use super::{JobError, JobId, JobProgress, JobSpec, JobState, StateChange};

/// One job as the coordinator keeps it: immutable spec plus changing progress.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    /// The job's id.
    pub id: JobId,
    /// What the caller asked for.
    pub spec: JobSpec,
    /// When the coordinator accepted it.
    pub created_at: SystemTime,
    /// Where it stands.
    pub progress: JobProgress,
}

impl Job {
    /// Creates a new queued job with a fresh id, accepted at `at`.
    pub fn new(spec: JobSpec, at: SystemTime) -> Self {
        Self {
            id: JobId::new(),
            spec,
            created_at: at,
            progress: JobProgress::queued(at),
        }
    }

    /// Returns the current state.
    pub fn state(&self) -> JobState {
        self.progress.state
    }

    /// Returns the job after applying `change` at `at`, or an error if the change is illegal.
    /// Does not modify `self`.
    pub fn apply(&self, change: StateChange, at: SystemTime) -> Result<Self, JobError> {
        let progress = self.progress.apply(self.id, change, at)?;
        Ok(Self {
            progress,
            ..self.clone()
        })
    }
}
