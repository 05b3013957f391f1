//! `overhead`: what the coordinator adds between a client and a node, at a fixed offered rate.
//!
//! Nodes do no work (time scale 0, `EmptyImage` → `SaveImage`), so every millisecond measured
//! is the coordinator's, the gRPC stack's or the emulator's HTTP/WebSocket handling. Figures
//! (all on one monotonic clock in one process, see [`crate::probe`] and [`crate::driver`]):
//!
//! - **dispatch overhead**: client sends `SubmitJob` → the node starts the prompt (the
//!   emulator's "prompt started", emitted when its worker takes the prompt, right after the
//!   `POST /prompt` was accepted when the node is idle);
//! - **coordinator dispatch**: client sends `SubmitJob` → the coordinator appends
//!   `Dispatched` (placement decided; appended before the `POST /prompt` is sent);
//! - **relay latency (node → watcher)**: the node starts the prompt (and sends
//!   `execution_start` on its WebSocket) → the watcher receives the job's `Started` event;
//! - **relay latency (append → watcher)**: the coordinator appends any event → the watcher
//!   receives it;
//! - **completion relay**: the node finishes the prompt → the watcher receives `Succeeded`
//!   (includes the coordinator's `/history` read);
//! - **throughput**: jobs finished per second between the first submit and the last terminal
//!   event.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::driver::{JobTrace, Outcome, Planned, Seen, run_open_loop};
use crate::error::BenchError;
use crate::harness::{Harness, HarnessOptions};
use crate::probe::{Observed, Probe};
use crate::stats::{Summary, summarize};
use crate::workflow;

/// Settings of one overhead run.
#[derive(Debug, Clone)]
pub struct OverheadOptions {
    /// Offered jobs per second.
    pub rate: f64,
    /// Measured jobs.
    pub jobs: usize,
    /// Simulated nodes.
    pub nodes: usize,
    /// Jobs run (one at a time) before measuring, to warm connections and caches.
    pub warmup: usize,
    /// Time allowed for the measured jobs.
    pub deadline: Duration,
}

/// Job counts by outcome.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Outcomes {
    /// Succeeded.
    pub succeeded: usize,
    /// Failed.
    pub failed: usize,
    /// Cancelled.
    pub cancelled: usize,
    /// Refused at submit.
    pub rejected: usize,
    /// Not finished by the deadline.
    pub unfinished: usize,
}

impl Outcomes {
    /// Counts the outcomes of traces.
    pub fn of(traces: &[JobTrace]) -> Self {
        let mut counts = Self::default();
        for trace in traces {
            match trace.outcome {
                Outcome::Succeeded => counts.succeeded += 1,
                Outcome::Failed(_) => counts.failed += 1,
                Outcome::Cancelled => counts.cancelled += 1,
                Outcome::Rejected(_) => counts.rejected += 1,
                Outcome::Unfinished(_) => counts.unfinished += 1,
            }
        }
        counts
    }
}

/// The figures of one overhead run.
#[derive(Debug, Clone, Serialize)]
pub struct OverheadReport {
    /// Offered jobs per second.
    pub rate_offered: f64,
    /// Jobs submitted per second, as achieved by the client.
    pub rate_submitted: f64,
    /// Jobs finished per second (first submit to last terminal event).
    pub throughput: f64,
    /// Measured jobs.
    pub jobs: usize,
    /// Simulated nodes.
    pub nodes: usize,
    /// Outcomes.
    pub outcomes: Outcomes,
    /// Submit sent → node starts the prompt.
    pub dispatch_overhead: Summary,
    /// Submit sent → `Dispatched` appended.
    pub coordinator_dispatch: Summary,
    /// Submit sent → submit answered.
    pub submit_rpc: Summary,
    /// Node starts the prompt → watcher receives `Started`.
    pub relay_node_to_watcher: Summary,
    /// Any event appended → watcher receives it.
    pub relay_append_to_watcher: Summary,
    /// Node finishes the prompt → watcher receives `Succeeded`.
    pub completion_relay: Summary,
    /// Submit sent → watcher receives the terminal event.
    pub end_to_end: Summary,
    /// What each figure measures.
    pub definitions: BTreeMap<&'static str, &'static str>,
}

/// The simulated zero-work fleet.
pub fn zero_work_fleet(nodes: usize) -> Vec<comfy_sim::NodeConfig> {
    (0..nodes)
        .map(|index| comfy_sim::NodeConfig {
            name: format!("bench-{index}"),
            gpu: comfy_sim::GpuConfig::cuda("NVIDIA GeForce RTX 4090", 24 << 30),
            time_scale: 0.0,
            ..comfy_sim::NodeConfig::default()
        })
        .collect()
}

/// Runs one overhead measurement on a fresh harness.
///
/// # Errors
/// The harness fails to start or the fleet never becomes ready.
pub async fn run(options: &OverheadOptions, probe: &Probe) -> Result<OverheadReport, BenchError> {
    if !(options.rate.is_finite() && options.rate > 0.0) {
        return Err(BenchError::Invalid(format!(
            "rate {}: must be a positive number of jobs per second",
            options.rate
        )));
    }
    if options.jobs == 0 || options.nodes == 0 {
        return Err(BenchError::Invalid(
            "jobs and nodes must be at least 1".into(),
        ));
    }
    let harness_options = HarnessOptions::default();
    // The emulated nodes write every output image to disk as ComfyUI does. On an ordinary
    // disk that file creation cost more than the coordinator's own work, so their files go
    // to a memory file system when there is one; the coordinator's journal stays on disk.
    let sim_files = sim_files_dir();
    let mut fleet = zero_work_fleet(options.nodes);
    if let Some(dir) = &sim_files {
        for node in &mut fleet {
            node.data_dir = Some(dir.path().join(&node.name));
        }
    }
    let mut harness = Harness::start(fleet, &harness_options).await?;
    harness
        .wait_ready(Duration::from_secs(20), harness_options.probe_interval)
        .await?;

    // Warm-up, one job at a time; not measured.
    for index in 0..options.warmup {
        let plan = vec![Planned {
            at: Duration::ZERO,
            workflow: workflow::tiny(u64::MAX - index as u64),
            tenant: String::new(),
        }];
        let _ = run_open_loop(&harness, plan, Duration::from_secs(10)).await;
    }
    probe.drain();

    let gap = Duration::from_secs_f64(1.0 / options.rate);
    let plan = (0..options.jobs)
        .map(|index| Planned {
            at: gap * index as u32,
            workflow: workflow::tiny(index as u64),
            tenant: String::new(),
        })
        .collect();
    let (traces, start) = run_open_loop(&harness, plan, options.deadline).await;
    // The node emits "prompt finished" before the coordinator can see it, so everything the
    // watchers saw is already in the probe.
    let observed = probe.drain();
    harness.shutdown().await;
    drop(sim_files);

    let mut report = measure(&traces, &observed);
    report.rate_offered = options.rate;
    report.nodes = options.nodes;
    let last_submit = traces.iter().map(|trace| trace.submit_sent).max();
    if let Some(last) = last_submit {
        let span = last.duration_since(start).as_secs_f64();
        report.rate_submitted = if span > 0.0 {
            (traces.len().saturating_sub(1)) as f64 / span
        } else {
            0.0
        };
    }
    Ok(report)
}

/// A fresh folder on `/dev/shm` (a memory file system on Linux) for the emulated nodes'
/// files, removed when dropped; `None` where there is none.
fn sim_files_dir() -> Option<tempfile::TempDir> {
    let shm = std::path::Path::new("/dev/shm");
    if !shm.is_dir() {
        return None;
    }
    tempfile::Builder::new()
        .prefix("comfyfleet-bench-sim-")
        .tempdir_in(shm)
        .ok()
}

/// Computes the figures from the traces and the node-side stamps.
pub fn measure(traces: &[JobTrace], observed: &Observed) -> OverheadReport {
    let mut dispatch = Vec::new();
    let mut coordinator = Vec::new();
    let mut submit = Vec::new();
    let mut relay_node = Vec::new();
    let mut relay_append = Vec::new();
    let mut completion = Vec::new();
    let mut end_to_end = Vec::new();
    for trace in traces {
        if let Some(acked) = trace.submit_acked {
            submit.push(acked.saturating_duration_since(trace.submit_sent));
        }
        for event in &trace.events {
            if let Some(appended) = event.appended {
                relay_append.push(event.received.saturating_duration_since(appended));
            }
        }
        if let Some((event, _, prompt, _)) = trace.dispatches().next() {
            if let Some(appended) = event.appended {
                coordinator.push(appended.saturating_duration_since(trace.submit_sent));
            }
            if let Some(stamp) = observed.started.get(prompt) {
                dispatch.push(stamp.at.saturating_duration_since(trace.submit_sent));
            }
        }
        if let Some((_, prompt)) = trace.last_dispatch() {
            if let (Some(stamp), Some(started)) = (
                observed.started.get(prompt),
                trace.first(|kind| *kind == Seen::Started),
            ) {
                relay_node.push(started.received.saturating_duration_since(stamp.at));
            }
            if let (Some(stamp), Some(done)) = (
                observed.finished.get(prompt),
                trace.first(|kind| *kind == Seen::Succeeded),
            ) {
                completion.push(done.received.saturating_duration_since(stamp.at));
            }
        }
        if let Some(finished) = trace.finished_received() {
            end_to_end.push(finished.saturating_duration_since(trace.submit_sent));
        }
    }
    let first_submit = traces.iter().map(|trace| trace.submit_sent).min();
    let last_finish = traces.iter().filter_map(JobTrace::finished_received).max();
    let outcomes = Outcomes::of(traces);
    let throughput = match (first_submit, last_finish) {
        (Some(first), Some(last)) if last > first => {
            outcomes.succeeded as f64 / last.duration_since(first).as_secs_f64()
        }
        _ => 0.0,
    };
    OverheadReport {
        rate_offered: 0.0,
        rate_submitted: 0.0,
        throughput,
        jobs: traces.len(),
        nodes: 0,
        outcomes,
        dispatch_overhead: summarize(&dispatch),
        coordinator_dispatch: summarize(&coordinator),
        submit_rpc: summarize(&submit),
        relay_node_to_watcher: summarize(&relay_node),
        relay_append_to_watcher: summarize(&relay_append),
        completion_relay: summarize(&completion),
        end_to_end: summarize(&end_to_end),
        definitions: definitions(),
    }
}

fn definitions() -> BTreeMap<&'static str, &'static str> {
    BTreeMap::from([
        (
            "dispatch_overhead",
            "client sends SubmitJob -> the node starts the prompt (emulator 'prompt started', right after POST /prompt is accepted on an idle node)",
        ),
        (
            "coordinator_dispatch",
            "client sends SubmitJob -> coordinator appends Dispatched (before it POSTs the prompt)",
        ),
        (
            "submit_rpc",
            "client sends SubmitJob -> client receives the answer",
        ),
        (
            "relay_node_to_watcher",
            "node starts the prompt and sends execution_start -> watcher receives Started",
        ),
        (
            "relay_append_to_watcher",
            "coordinator appends an event (its time field) -> watcher receives it; every event",
        ),
        (
            "completion_relay",
            "node finishes the prompt -> watcher receives Succeeded (includes the /history read)",
        ),
        (
            "end_to_end",
            "client sends SubmitJob -> watcher receives the terminal event",
        ),
        (
            "throughput",
            "succeeded jobs / (last terminal event received - first SubmitJob sent)",
        ),
    ])
}

/// The run as a Markdown table.
pub fn markdown(reports: &[OverheadReport]) -> String {
    let mut out = String::from(
        "| offered/s | submitted/s | finished/s | ok/total | figure | p50 ms | p99 ms | max ms |\n|---:|---:|---:|---:|---|---:|---:|---:|\n",
    );
    for report in reports {
        let rows: [(&str, &Summary); 7] = [
            ("dispatch overhead", &report.dispatch_overhead),
            ("coordinator dispatch", &report.coordinator_dispatch),
            ("submit rpc", &report.submit_rpc),
            ("relay node→watcher", &report.relay_node_to_watcher),
            ("relay append→watcher", &report.relay_append_to_watcher),
            ("completion relay", &report.completion_relay),
            ("end to end", &report.end_to_end),
        ];
        for (index, (name, summary)) in rows.iter().enumerate() {
            let head = if index == 0 {
                format!(
                    "| {:.0} | {:.0} | {:.0} | {}/{} ",
                    report.rate_offered,
                    report.rate_submitted,
                    report.throughput,
                    report.outcomes.succeeded,
                    report.jobs
                )
            } else {
                "| | | | ".to_owned()
            };
            out.push_str(&format!(
                "{head}| {name} | {:.2} | {:.2} | {:.2} |\n",
                summary.p50_ms, summary.p99_ms, summary.max_ms
            ));
        }
    }
    out
}
