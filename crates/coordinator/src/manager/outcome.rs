//! How the end of one attempt becomes the job's next step.
//!
//! The node's history entry (read after the final `executing` event, or when reconciling) is
//! the single source of an attempt's outcome. This module turns it into a verdict, pure and
//! testable: success with outputs, a failure classified by whose fault it is, or an
//! interruption.

use comfy_api::ws::ExecutionError;
use comfy_api::{HistoryEntry, Outcome};

use crate::job::{Failure, FailureClass, NodeError, OutputRef, UiValues};

/// What an attempt came to.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptEnd {
    /// The prompt succeeded with these output files and other UI values.
    Succeeded(Vec<OutputRef>, UiValues),
    /// The prompt failed.
    Failed(Failure),
    /// The prompt was interrupted on the node.
    Interrupted,
    /// Neither the node's queue nor its history knows the prompt: deleted, never received, or
    /// the node restarted.
    Vanished,
}

/// Reads the outcome of a history entry; `held_by` names the node whose disk holds outputs.
pub fn from_history(entry: &HistoryEntry, held_by: &str) -> AttemptEnd {
    match entry.outcome() {
        Outcome::Success => AttemptEnd::Succeeded(outputs_of(entry, held_by), entry.ui_values()),
        Outcome::Interrupted(_) => AttemptEnd::Interrupted,
        Outcome::Failed(Some(error)) => AttemptEnd::Failed(classify(&error)),
        Outcome::Failed(None) | Outcome::Unknown => AttemptEnd::Failed(Failure::new(
            FailureClass::JobFault,
            "the node reported an error without details",
        )),
    }
}

/// Every file output of a history entry, in node id order.
pub fn outputs_of(entry: &HistoryEntry, held_by: &str) -> Vec<OutputRef> {
    entry
        .files()
        .map(|(node_id, kind, file)| OutputRef {
            node_id: node_id.to_owned(),
            filename: file.filename.clone(),
            subfolder: file.subfolder.clone(),
            folder_type: file.file_type.clone(),
            kind: kind.to_owned(),
            held_by: held_by.to_owned(),
        })
        .collect()
}

/// Classifies a node's execution error by whose fault it is.
///
/// Out of memory and missing files are the node's environment (another node may succeed);
/// anything else raised while executing is taken as the job's own fault (bad values, bad
/// inputs), which a retry would only repeat.
pub fn classify(error: &ExecutionError) -> Failure {
    let message = error.exception_message.trim_end();
    let lower = message.to_lowercase();
    let class = if error.exception_type.contains("OutOfMemory")
        || lower.contains("out of memory")
        || lower.contains("allocation on device")
    {
        FailureClass::OutOfMemory
    } else if error.exception_type.ends_with("FileNotFoundError")
        || lower.contains("no such file")
        || (lower.contains("model") && lower.contains("not found"))
    {
        FailureClass::NodeEnvironment
    } else {
        FailureClass::JobFault
    };
    let mut failure = Failure::new(
        class,
        format!(
            "graph node {} ({}) raised {}: {}",
            error.node_id, error.node_type, error.exception_type, message
        ),
    );
    failure.node_error = Some(NodeError {
        node_id: error.node_id.clone(),
        class_type: error.node_type.clone(),
        exception_type: error.exception_type.clone(),
        exception_message: error.exception_message.clone(),
        traceback: error.traceback.clone(),
    });
    failure.details = serde_json::to_value(error).ok();
    failure
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(exception_type: &str, message: &str) -> ExecutionError {
        serde_json::from_value(serde_json::json!({
            "prompt_id": "p", "node_id": "3", "node_type": "KSampler",
            "exception_type": exception_type, "exception_message": message,
            "traceback": ["line 1"], "executed": [], "current_inputs": {}, "current_outputs": []
        }))
        .expect("valid execution_error")
    }

    #[test]
    fn torch_out_of_memory_is_the_nodes_environment_and_retryable() {
        let failure = classify(&error(
            "torch.OutOfMemoryError",
            "Allocation on device 0 would exceed allowed memory. (out of memory)\n",
        ));
        assert_eq!(failure.class, FailureClass::OutOfMemory);
        assert!(failure.retryable, "another node with more VRAM may succeed");
        let node_error = failure.node_error.expect("node error kept");
        assert_eq!(node_error.traceback, vec!["line 1".to_owned()]);
        assert!(failure.message.contains("graph node 3 (KSampler)"));
    }

    #[test]
    fn bad_input_errors_are_the_jobs_fault_and_not_retried() {
        let failure = classify(&error(
            "RuntimeError",
            "Argument #4: Padding size should be less",
        ));
        assert_eq!(failure.class, FailureClass::JobFault);
        assert!(!failure.retryable);
    }

    #[test]
    fn missing_files_are_the_nodes_environment() {
        let failure = classify(&error(
            "FileNotFoundError",
            "No such file or directory: 'x'",
        ));
        assert_eq!(failure.class, FailureClass::NodeEnvironment);
        assert!(failure.retryable);
    }
}
