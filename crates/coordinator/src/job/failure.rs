//! Why a job failed, and whose fault it was.
//!
//! Every failure carries a class that says who is at fault (the node, the caller or the
//! coordinator) and whether running the job again, possibly elsewhere, could help. The node's own
//! error report is kept verbatim so the caller sees exactly what ComfyUI said.

use serde::{Deserialize, Serialize};

/// Who is responsible for a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// A node (its environment, its hardware, its availability).
    Node,
    /// The caller (the workflow itself, its inputs, its deadline).
    Caller,
    /// The coordinator.
    Coordinator,
}

/// Classifies a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// The node lacks something the job needs (a node class, a model file, a custom node that
    /// fails to import); another node may have it.
    NodeEnvironment,
    /// The node ran out of GPU memory; a node with more free VRAM may succeed.
    OutOfMemory,
    /// The workflow failed while executing for reasons of its own (bad parameters, an exception
    /// in a node that would happen anywhere).
    JobFault,
    /// The workflow was refused before it ran (shape, links, values).
    Validation,
    /// The node went away (crash, network loss, restart) while holding the job.
    NodeLost,
    /// The job's deadline passed.
    Deadline,
    /// The coordinator failed (journal error, internal bug).
    Coordinator,
}

impl FailureClass {
    /// Returns who is at fault for failures of this class.
    pub fn fault(self) -> Fault {
        match self {
            Self::NodeEnvironment | Self::OutOfMemory | Self::NodeLost => Fault::Node,
            Self::JobFault | Self::Validation | Self::Deadline => Fault::Caller,
            Self::Coordinator => Fault::Coordinator,
        }
    }

    /// Returns whether another attempt (possibly on another node) could succeed.
    pub fn retry_may_help(self) -> bool {
        match self {
            Self::NodeEnvironment | Self::OutOfMemory | Self::NodeLost | Self::Coordinator => true,
            Self::JobFault | Self::Validation | Self::Deadline => false,
        }
    }

    /// Returns the stable snake_case name used in logs, metrics and the journal.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NodeEnvironment => "node_environment",
            Self::OutOfMemory => "out_of_memory",
            Self::JobFault => "job_fault",
            Self::Validation => "validation",
            Self::NodeLost => "node_lost",
            Self::Deadline => "deadline",
            Self::Coordinator => "coordinator",
        }
    }
}

/// The error a ComfyUI node reported for one of its graph nodes (`execution_error`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeError {
    /// The workflow node id that failed, e.g. `"2"`.
    pub node_id: String,
    /// Its class, e.g. `ImageBlur`.
    pub class_type: String,
    /// The Python exception type, e.g. `RuntimeError`.
    pub exception_type: String,
    /// The Python exception message, verbatim.
    pub exception_message: String,
    /// The traceback lines, verbatim.
    pub traceback: Vec<String>,
}

/// Describes why a job (or one attempt of it) failed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// What kind of failure this is.
    pub class: FailureClass,
    /// A human-readable summary, lowercase, naming the object then the cause.
    pub message: String,
    /// The node's error report, when the failure came from executing a graph node.
    pub node_error: Option<NodeError>,
    /// Whether another attempt could help; starts as the class's default and is set to false
    /// once attempts are exhausted.
    pub retryable: bool,
    /// The node's error body verbatim (e.g. a 400 answer with `error` and `node_errors`), when
    /// there was one.
    pub details: Option<serde_json::Value>,
}

impl Failure {
    /// Creates a failure of `class` with its default retryability and no node details.
    pub fn new(class: FailureClass, message: impl Into<String>) -> Self {
        Self {
            class,
            message: message.into(),
            node_error: None,
            retryable: class.retry_may_help(),
            details: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_faults_are_not_retryable() {
        for class in [
            FailureClass::JobFault,
            FailureClass::Validation,
            FailureClass::Deadline,
        ] {
            assert_eq!(
                class.fault(),
                Fault::Caller,
                "{class:?} is the caller's fault"
            );
            assert!(
                !class.retry_may_help(),
                "{class:?} would fail again anywhere"
            );
            assert!(!Failure::new(class, "x").retryable);
        }
    }

    #[test]
    fn node_faults_are_retryable() {
        for class in [
            FailureClass::NodeEnvironment,
            FailureClass::OutOfMemory,
            FailureClass::NodeLost,
        ] {
            assert_eq!(class.fault(), Fault::Node);
            assert!(
                Failure::new(class, "x").retryable,
                "{class:?} may work on another node"
            );
        }
    }

    #[test]
    fn class_names_match_serde_names() {
        let class = FailureClass::OutOfMemory;
        let json = serde_json::to_string(&class).expect("serialises");
        assert_eq!(json, format!("\"{}\"", class.as_str()));
    }
}
