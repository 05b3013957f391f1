//! Exit codes of the `comfyfleet` client commands, one per failure class.
//!
//! Scripts branch on these, so they are part of the interface and documented in the README.

use fleet_proto::v1::FailureClass;

/// The job succeeded (or the command did what it was asked).
pub const OK: u8 = 0;
/// The coordinator could not be reached, or answered with an unexpected error.
pub const UNAVAILABLE: u8 = 1;
/// Command-line usage error (clap's own code), a file named that cannot be read, or a
/// malformed coordinator address.
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

/// A mistake in what the user gave the command, as opposed to a coordinator that failed:
/// the command exits with [`USAGE`].
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Standard output was closed before the command finished (`comfyfleet jobs | head`): the
/// shell's code for a process ended by SIGPIPE. A job being followed goes on running.
pub const CLOSED_OUTPUT: u8 = 141;

/// Writes one line to standard output, like `println!`.
///
/// Rust ignores SIGPIPE, so `println!` panics, with a backtrace, once the reader of a pipe
/// has gone. A command-line tool should instead stop quietly, so this exits with
/// [`CLOSED_OUTPUT`]; any other write error is reported and exits with [`UNAVAILABLE`].
pub fn print_line(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let written = out
        .write_fmt(line)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    match written {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {
            std::process::exit(i32::from(CLOSED_OUTPUT))
        }
        Err(error) => {
            eprintln!("error: cannot write to standard output: {error}");
            std::process::exit(i32::from(UNAVAILABLE))
        }
    }
}

/// `println!` for command output: see [`print_line`].
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::exit::print_line(format_args!($($arg)*))
    };
}
pub(crate) use outln;

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
