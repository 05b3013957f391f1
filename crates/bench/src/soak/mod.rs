//! The soak benchmark: steady load on a simulated fleet while nodes and the coordinator fail.
//!
//! The coordinator promises that a job it accepted reaches exactly one terminal state whatever
//! fails, and runs each attempt at most once. Unit and end-to-end tests check single faults;
//! this run checks the promise over minutes of mixed faults. It starts eight `comfy-sim` nodes
//! in this process and the real `comfyfleet serve` binary as a child process (so it can be
//! killed with SIGKILL or stopped with SIGTERM and started again on the same data directory
//! and ports), offers seeded Poisson load at about 70% of the fleet's capacity, injects a
//! seeded schedule of faults, then drains and compares the client's record of accepted jobs
//! with what the coordinator and the nodes say happened.
//!
//! Submissions carry an idempotency key and are retried while the coordinator is down, so a
//! submit interrupted by a restart is neither lost nor doubled on the client side. Jobs are not
//! watched (streams break at every restart); the drain polls `ListJobs` instead.
//!
//! NOTE: "run twice" has two measures. `POST /prompt` minus recorded attempts reads each node's
//! counter, which a crash resets, so the counter is read just before the crash; a POST landing
//! between that read and the crash is missed (undercounts by at most one per crash). Prompt
//! ids started more than once come from trace events, so a duplicate POST the node never got
//! to start (crashed first) is not seen; a nonzero count is always a real double run.
//!
//! The code is split by concern: `options` holds the settings and the seeded fault schedule,
//! `workload` the job mix and node configuration, `starts` the trace layer that counts prompt
//! starts, `client` the submitting and listing side, `process` the `comfyfleet serve` child
//! process, `run` the load, fault and drain loop, and `report` the figures and their Markdown
//! table.

mod client;
mod options;
mod process;
mod report;
mod run;
mod starts;
mod workload;

pub use options::{FaultKind, ScheduledFault, SoakOptions, fault_schedule};
pub use report::{SoakReport, markdown};
pub use run::run;
pub use starts::install_tracing;
