//! The job state machine.
//!
//! A job moves Queued → Dispatched → Running → one of Succeeded, Failed or Cancelled, and may go
//! back to Queued from Dispatched or Running when an attempt fails in a way another attempt may
//! fix. Every change is a [`StateChange`] applied by the pure function [`JobProgress::apply`],
//! which refuses illegal moves (anything after a terminal state, skipping the queue, ...) with a
//! typed error. The journal and the in-memory queue use the same function, so they cannot
//! disagree about what is legal.

use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Failure, FailureClass, JobError, JobId, OutputRef, UiValues};

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting in the coordinator's queue.
    Queued,
    /// Recorded as sent to a node; the node may not have answered yet.
    Dispatched,
    /// The node reported that it started executing.
    Running,
    /// Finished with outputs. Terminal.
    Succeeded,
    /// Failed for good. Terminal.
    Failed,
    /// Cancelled. Terminal.
    Cancelled,
}

impl JobState {
    /// Every state, in life order.
    pub const ALL: [JobState; 6] = [
        Self::Queued,
        Self::Dispatched,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::Cancelled,
    ];

    /// Returns whether the job is finished; nothing may follow a terminal state.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }

    /// Returns whether a job in this state may move to `to`.
    pub fn can_move_to(self, to: JobState) -> bool {
        use JobState::*;
        match (self, to) {
            (Queued, Dispatched | Failed | Cancelled) => true,
            // A run whose events were all missed is finished from history straight from
            // Dispatched, so Dispatched → Succeeded is legal.
            (Dispatched, Queued | Running | Succeeded | Failed | Cancelled) => true,
            (Running, Queued | Succeeded | Failed | Cancelled) => true,
            _ => false,
        }
    }

    /// Returns the stable snake_case name used in logs, metrics and the journal.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Dispatched => "dispatched",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = JobError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| JobError::BadState(s.to_owned()))
    }
}

/// One requested change of a job's state, with the data the new state needs.
#[derive(Clone, Debug, PartialEq)]
pub enum StateChange {
    /// Send the job to `node` as `prompt_id`; the attempt number is the previous one plus one.
    /// Recorded before the POST, so events that beat the answer still find the job.
    Dispatch {
        /// The fleet node's name.
        node: String,
        /// The prompt id the coordinator generated for this attempt.
        prompt_id: Uuid,
    },
    /// The node started executing the prompt.
    Start,
    /// The current attempt failed in a way another attempt may fix; back to the queue.
    Requeue {
        /// Why the attempt failed; kept in the attempt history.
        reason: String,
        /// What kind of failure ended it, when known.
        class: Option<FailureClass>,
    },
    /// The job finished with these outputs.
    Succeed {
        /// Every output file.
        outputs: Vec<OutputRef>,
        /// The UI values other than files.
        ui_values: UiValues,
    },
    /// The job failed for good.
    Fail {
        /// Why.
        failure: Failure,
    },
    /// The job was cancelled.
    Cancel {
        /// Who or what cancelled it.
        reason: String,
    },
}

impl StateChange {
    /// Returns the state this change leads to.
    pub fn target(&self) -> JobState {
        match self {
            Self::Dispatch { .. } => JobState::Dispatched,
            Self::Start => JobState::Running,
            Self::Requeue { .. } => JobState::Queued,
            Self::Succeed { .. } => JobState::Succeeded,
            Self::Fail { .. } => JobState::Failed,
            Self::Cancel { .. } => JobState::Cancelled,
        }
    }
}

/// One attempt that ended without finishing the job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// The attempt number, 1 for the first.
    pub attempt: u32,
    /// The node it ran on.
    pub node: String,
    /// The prompt id it had there.
    pub prompt_id: Uuid,
    /// Why it ended.
    pub reason: String,
    /// What kind of failure ended it; `None` in records written before classes were kept.
    #[serde(default)]
    pub class: Option<FailureClass>,
    /// When it ended.
    pub ended_at: SystemTime,
}

/// Everything about a job that changes after submission.
#[derive(Clone, Debug, PartialEq)]
pub struct JobProgress {
    /// The current state.
    pub state: JobState,
    /// The node holding the current attempt, while Dispatched or Running, and the node that
    /// finished it once Succeeded.
    pub node: Option<String>,
    /// The prompt id of the current (or finishing) attempt.
    pub prompt_id: Option<Uuid>,
    /// The number of attempts dispatched so far (0 while never dispatched).
    pub attempt: u32,
    /// When the state last changed.
    pub updated_at: SystemTime,
    /// When the latest attempt started running.
    pub started_at: Option<SystemTime>,
    /// When the job reached a terminal state.
    pub finished_at: Option<SystemTime>,
    /// The outputs, once Succeeded.
    pub outputs: Vec<OutputRef>,
    /// The UI values other than files, once Succeeded.
    pub ui_values: UiValues,
    /// The failure, once Failed.
    pub failure: Option<Failure>,
    /// Why the job was cancelled, once Cancelled.
    pub cancel_reason: Option<String>,
    /// Attempts that ended and sent the job back to the queue, oldest first.
    pub attempts: Vec<AttemptRecord>,
}

impl JobProgress {
    /// Creates the progress of a job just queued at `at`.
    pub fn queued(at: SystemTime) -> Self {
        Self {
            state: JobState::Queued,
            node: None,
            prompt_id: None,
            attempt: 0,
            updated_at: at,
            started_at: None,
            finished_at: None,
            outputs: Vec::new(),
            ui_values: UiValues::new(),
            failure: None,
            cancel_reason: None,
            attempts: Vec::new(),
        }
    }

    /// Returns the progress after applying `change` at time `at`, or an error naming `job` if
    /// the change is illegal from the current state. Does not modify `self`.
    pub fn apply(&self, job: JobId, change: StateChange, at: SystemTime) -> Result<Self, JobError> {
        let from = self.state;
        let to = change.target();
        if !from.can_move_to(to) {
            return Err(JobError::IllegalTransition { job, from, to });
        }

        let mut next = self.clone();
        next.state = to;
        next.updated_at = at;
        match change {
            StateChange::Dispatch { node, prompt_id } => {
                next.node = Some(node);
                next.prompt_id = Some(prompt_id);
                next.attempt = self.attempt.saturating_add(1);
                next.started_at = None;
            }
            StateChange::Start => next.started_at = Some(at),
            StateChange::Requeue { reason, class } => {
                // The attempt is over: remember where it ran and why it ended.
                let (node, prompt_id) = (next.node.take(), next.prompt_id.take());
                next.started_at = None;
                next.attempts.push(AttemptRecord {
                    attempt: self.attempt,
                    node: node.unwrap_or_default(),
                    prompt_id: prompt_id.unwrap_or_default(),
                    reason,
                    class,
                    ended_at: at,
                });
            }
            StateChange::Succeed { outputs, ui_values } => {
                next.outputs = outputs;
                next.ui_values = ui_values;
                next.finished_at = Some(at);
            }
            StateChange::Fail { failure } => {
                next.failure = Some(failure);
                next.finished_at = Some(at);
            }
            StateChange::Cancel { reason } => {
                next.cancel_reason = Some(reason);
                next.finished_at = Some(at);
            }
        }
        debug_assert!(
            next.state.is_terminal() == next.finished_at.is_some(),
            "finished_at is set exactly when the job is terminal"
        );
        Ok(next)
    }
}
