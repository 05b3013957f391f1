//! Exit codes of the `comfyfleet` client commands, one per failure class.
//!
//! Scripts branch on these, so they are part of the interface and documented in the README.

use fleet_proto::v1::FailureClass;

/// The job succeeded (or the command did what it was asked).
pub const OK: u8 = 0;
/// The coordinator could not be reached, or answered with an unexpected error.
pub const UNAVAILABLE: u8 = 1;
/// Command-line usage error (clap's own code).
#[allow(dead_code)]
pub const USAGE: u8 = 2;
/// The coordinator refused the request: invalid workflow, unknown job, missing class or model.
pub const REFUSED: u8 = 3;
/// The queue is full (RESOURCE_EXHAUSTED); retry later.
pub const OVERLOADED: u8 = 4;
/// The job failed through its own fault (bad values, an exception from its inputs).
pub const JOB_FAILED: u8 = 5;
/// The job failed because of the nodes (out of memory, node lost, node environment) after
/// every allowed attempt.
pub const NODE_FAILED: u8 = 6;
/// The job was cancelled.
pub const CANCELLED: u8 = 7;
/// The job passed its deadline.
pub const DEADLINE: u8 = 8;

/// Maps a terminal failure class to the exit code a script sees.
pub fn for_failure(class: FailureClass) -> u8 {
    match class {
        FailureClass::JobFault | FailureClass::Validation | FailureClass::Infeasible => JOB_FAILED,
        FailureClass::Deadline => DEADLINE,
        FailureClass::Interrupted => CANCELLED,
        FailureClass::NodeEnvironment
        | FailureClass::OutOfMemory
        | FailureClass::NodeLost
        | FailureClass::Coordinator
        | FailureClass::Unspecified => NODE_FAILED,
    }
}

/// Maps a gRPC status to the exit code a script sees.
pub fn for_status(status: &tonic::Status) -> u8 {
    use tonic::Code;
    match status.code() {
        Code::InvalidArgument
        | Code::FailedPrecondition
        | Code::NotFound
        | Code::AlreadyExists
        | Code::OutOfRange
        | Code::PermissionDenied
        | Code::Unauthenticated => REFUSED,
        Code::ResourceExhausted => OVERLOADED,
        Code::DeadlineExceeded => DEADLINE,
        Code::Cancelled => CANCELLED,
        _ => UNAVAILABLE,
    }
}
