//! The comfyfleet gRPC contract.
//!
//! Callers and the coordinator must agree on one wire format; it is defined once in `proto/`
//! (package `comfyfleet.v1`) and turned into Rust at build time by `protox` and
//! `tonic-prost-build`, so a machine without `protoc` builds it too.
//!
//! What is here:
//! - [`v1`]: the generated messages, enums, the `JobService` and `FleetService` server traits
//!   (`v1::job_service_server`, `v1::fleet_service_server`) and clients
//!   (`v1::job_service_client`, `v1::fleet_service_client`).
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors of the contract and the well-known types
//!   it imports, for `tonic-reflection`.
//!
//! Naming follows prost: proto enum values lose their prefix (`JOB_STATE_QUEUED` becomes
//! `v1::JobState::Queued`), `oneof`s become enums in a module named after the message
//! (`v1::job_event::Kind`), and enum-typed fields are stored as `i32` with typed accessors
//! (`job.state()`, `job.set_state(..)`).
//!
//! A server implements `v1::job_service_server::JobService` and wraps it in
//! `v1::job_service_server::JobServiceServer`; streaming methods return any
//! `Stream<Item = Result<_, tonic::Status>>`. Building messages:
//!
//! ```
//! use fleet_proto::v1::{JobEvent, JobState, job_event};
//!
//! let event = JobEvent {
//!     sequence: 3,
//!     time: None,
//!     kind: Some(job_event::Kind::Queued(job_event::Queued { position: 0 })),
//! };
//! assert!(matches!(event.kind, Some(job_event::Kind::Queued(_))));
//! assert_eq!(JobState::Succeeded.as_str_name(), "JOB_STATE_SUCCEEDED");
//! ```

/// Generated code for package `comfyfleet.v1`.
///
/// Every public item carries the documentation written in the `.proto` files.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("comfyfleet.v1");
}

/// Encoded `FileDescriptorSet` of the contract (with imported well-known types and comments),
/// for `tonic_reflection::server::Builder::register_encoded_file_descriptor_set`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/comfyfleet_descriptor.bin"));

/// Fully qualified name of the job service, as gRPC health and reflection know it.
pub const JOB_SERVICE_NAME: &str = "comfyfleet.v1.JobService";

/// Fully qualified name of the fleet service, as gRPC health and reflection know it.
pub const FLEET_SERVICE_NAME: &str = "comfyfleet.v1.FleetService";
