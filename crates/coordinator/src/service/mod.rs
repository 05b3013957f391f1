//! The gRPC services: `comfyfleet.v1.JobService` and `comfyfleet.v1.FleetService`.
//!
//! This layer checks requests, maps them onto the manager, the journal and the event hub, and
//! maps every error onto one gRPC status in one place ([`status_of`]). It holds no job state.

pub mod convert;
mod fleet;
mod jobs;

pub use fleet::FleetApi;
pub use jobs::{JobApi, SubmitLimits};

use std::borrow::Cow;

use tonic::Status;

use crate::journal::JournalError;
use crate::manager::ManagerError;

/// Counts a finished gRPC call by method and status code, and records its latency.
pub(crate) fn observe<T>(
    metrics: &crate::metrics::Metrics,
    method: &str,
    started: std::time::Instant,
    result: &Result<T, Status>,
) {
    let code = match result {
        Ok(_) => "OK".to_owned(),
        Err(status) => format!("{:?}", status.code()),
    };
    metrics
        .grpc_requests
        .with_label_values(&[method, &code])
        .inc();
    metrics
        .grpc_request_duration
        .with_label_values(&[method])
        .observe(started.elapsed().as_secs_f64());
}

/// Characters of a caller's value that an error message repeats.
pub(crate) const ECHO_CHARS: usize = 64;

/// Characters kept of an error message that another crate built from the caller's input (a
/// workflow's node ids, class names), which may repeat that input whole.
pub(crate) const MESSAGE_CHARS: usize = 1024;

/// `text` cut to its first `max_chars` characters, with "…" appended when something was cut.
///
/// Error messages repeat what the caller sent so the caller can tell which value was wrong,
/// but a status message travels in the `grpc-message` trailer, and HTTP/2 peers cap the size
/// of a header block at a few KiB: a 100,000-character job id repeated whole makes the client
/// see its own RESOURCE_EXHAUSTED ("Stream removed") instead of the refusal. Every value a
/// caller controls goes through this before it is formatted into a message.
pub(crate) fn clip(text: &str, max_chars: usize) -> Cow<'_, str> {
    match text.char_indices().nth(max_chars) {
        None => Cow::Borrowed(text),
        Some((end, _)) => Cow::Owned(format!("{}…", &text[..end])),
    }
}

/// A caller's value as an error message repeats it: [`clip`]ped to [`ECHO_CHARS`].
pub(crate) fn echo(value: &str) -> Cow<'_, str> {
    clip(value, ECHO_CHARS)
}

/// Maps internal errors onto gRPC statuses.
pub(crate) fn status_of(error: impl Into<ServiceError>) -> Status {
    match error.into() {
        // A reused idempotency key is the caller's mistake, not a fault of the journal: it is
        // refused like any other request that conflicts with what exists.
        ServiceError::Journal(JournalError::IdempotencyConflict { tenant, key, job }) => {
            Status::already_exists(format!(
                "tenant {}: idempotency key {:?} already names job {job} with another workflow",
                echo(&tenant),
                echo(&key)
            ))
        }
        ServiceError::Journal(error) => Status::internal(format!("job journal: {error}")),
        ServiceError::Manager(ManagerError::Stopped) => {
            Status::unavailable("the coordinator is shutting down")
        }
        ServiceError::Manager(error @ ManagerError::NotLive(_)) => {
            Status::not_found(error.to_string())
        }
    }
}

/// Errors a service call can meet inside the coordinator.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ServiceError {
    /// The journal failed.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The manager refused or stopped.
    #[error(transparent)]
    Manager(#[from] ManagerError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::JobId;

    #[test]
    fn a_reused_idempotency_key_is_a_refusal_not_an_internal_error() {
        let error = JournalError::IdempotencyConflict {
            tenant: "default".into(),
            key: "k1".into(),
            job: JobId::new(),
        };
        let status = status_of(error);
        assert_eq!(status.code(), tonic::Code::AlreadyExists);
        assert!(
            status
                .message()
                .starts_with("tenant default: idempotency key \"k1\""),
            "{}",
            status.message()
        );
    }

    #[test]
    fn clip_keeps_short_text_and_cuts_long_text_at_a_character() {
        assert_eq!(clip("abc", 3), "abc");
        assert!(matches!(clip("abc", 3), Cow::Borrowed(_)));
        assert_eq!(clip("abcd", 3), "abc…");
        // Cut by characters, never inside one.
        assert_eq!(clip("ééééé", 2), "éé…");
        assert_eq!(echo(&"x".repeat(100_000)).chars().count(), ECHO_CHARS + 1);
    }

    #[test]
    fn a_long_idempotency_key_is_not_repeated_whole() {
        let error = JournalError::IdempotencyConflict {
            tenant: "t".repeat(256),
            key: "k".repeat(256),
            job: JobId::new(),
        };
        let status = status_of(error);
        assert_eq!(status.code(), tonic::Code::AlreadyExists);
        assert!(status.message().len() < 300, "{}", status.message());
        assert!(
            status
                .message()
                .contains(&format!("\"{}…\"", "k".repeat(ECHO_CHARS))),
            "{}",
            status.message()
        );
    }

    #[test]
    fn other_journal_errors_stay_internal() {
        let status = status_of(JournalError::WriterStopped);
        assert_eq!(status.code(), tonic::Code::Internal);
    }
}
