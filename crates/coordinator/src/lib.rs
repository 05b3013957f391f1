//! The comfyfleet coordinator.
//!
//! The coordinator accepts jobs (ComfyUI API-format workflows) over gRPC, keeps them in its own
//! queue, dispatches each to a ComfyUI node as late as possible, relays the node's events to
//! watchers and finishes jobs from the node's history.
//!
//! - [`server`]: starts and stops a whole coordinator ([`Coordinator`]);
//! - [`service`]: the gRPC services (jobs, fleet), and the one mapping of errors to statuses;
//! - [`manager`]: the single owner of live jobs: queue, placement rounds, attempt outcomes;
//! - [`fleet`]: the nodes, and the per-node actor that probes them and relays their events;
//! - [`analysis`]: what a workflow needs (classes, models, cost), from `comfy-api`;
//! - [`job`]: the domain model and the pure job state machine;
//! - [`events`]: bounded per-job event logs with fan-out to watchers;
//! - [`journal`]: the durable job store (SQLite by default);
//! - [`metrics`]: the Prometheus families;
//! - [`http`]: `/healthz`, `/readyz`, `/metrics`;
//! - [`config`]: configuration from TOML and `COMFYFLEET_*` environment variables.
//!
//! The placement policy itself lives in the `scheduler` crate: pure functions with no I/O.

pub mod analysis;
pub mod config;
pub mod events;
pub mod facade;
pub mod fleet;
pub mod http;
pub mod job;
pub mod journal;
pub mod manager;
pub mod metrics;
pub mod server;
pub mod service;

pub use server::{Coordinator, StartError, StartOptions};
