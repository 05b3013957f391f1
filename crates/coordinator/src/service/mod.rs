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
