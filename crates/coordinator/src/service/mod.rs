//! The gRPC services: `comfyfleet.v1.JobService` and `comfyfleet.v1.FleetService`.
//!
//! This layer checks requests, maps them onto the manager, the journal and the event hub, and
//! maps every error onto one gRPC status in one place ([`status_of`]). It holds no job state.

pub mod convert;
mod fleet;
mod jobs;

pub use fleet::FleetApi;
pub use jobs::{JobApi, SubmitLimits};

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

/// Maps internal errors onto gRPC statuses.
pub(crate) fn status_of(error: impl Into<ServiceError>) -> Status {
    match error.into() {
        // A reused idempotency key is the caller's mistake, not a fault of the journal: it is
        // refused like any other request that conflicts with what exists.
        ServiceError::Journal(error @ JournalError::IdempotencyConflict { .. }) => {
            Status::already_exists(error.to_string())
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
    fn other_journal_errors_stay_internal() {
        let status = status_of(JournalError::WriterStopped);
        assert_eq!(status.code(), tonic::Code::Internal);
    }
}
