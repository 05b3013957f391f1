//! Benchmark harness for comfyfleet.
//!
//! Questions like "how much latency does the coordinator add?" or "which placement policy
//! finishes this workload first?" need numbers from the real system, not from a model of it.
//! So every benchmark here starts the real coordinator (the same `Coordinator::start` as
//! `comfyfleet up`), talks to it over real gRPC, and puts real `comfy-sim` ComfyUI emulators on
//! 127.0.0.1 behind it. Node-side instants come from the emulator's own trace events
//! ([`probe`]), so client, coordinator and node times share one monotonic clock.
//!
//! - [`overhead`]: dispatch overhead and relay latency at a fixed offered rate;
//! - [`scenario`]: scenario files (fleet, load, faults) and the seeded traces they produce;
//! - [`placement`]: replays one trace under each policy and collects per-job and fleet figures;
//! - [`report`]: Markdown tables and an SVG chart of placement results;
//! - [`scale`]: probe cost of a 1,000-node fleet, memory of a 100,000-job queue and sustained
//!   throughput with the coordinator's CPU per job, measured on the `comfyfleet serve` binary
//!   as a separate process;
//! - [`sweep`]: one scenario at several arrival rates, each policy's p95 gain by load;
//! - [`targets`]: each policy's figures against the goals placement is held to;
//! - [`harness`], [`driver`], [`probe`], [`stats`], [`workflow`]: the shared machinery.

pub mod driver;
pub mod error;
pub mod harness;
pub mod oracle;
pub mod overhead;
pub mod placement;
pub mod probe;
pub mod report;
pub mod scale;
pub mod scenario;
pub mod stats;
pub mod sweep;
pub mod targets;
pub mod workflow;

pub use error::BenchError;
