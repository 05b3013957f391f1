//! `placement`: one scenario's trace replayed under each policy, with the figures that tell
//! policies apart.
//!
//! Each policy gets a fresh coordinator and fresh emulated nodes (so no model is resident and no
//! queue is warm), the same trace and the same fault schedule. Per job it records the queue wait
//! (submit sent → the node starts the final attempt's prompt, node-side stamp) and end-to-end
//! time (submit sent → the watcher receives the terminal event); per run the makespan (start
//! of the trace → last terminal event), each node's busy share (time between its prompts'
//! start and finish stamps over the makespan), model loads (the emulator's "model loaded"
//! stamps), retries, lost jobs (not succeeded) and forbidden placements.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;
use tracing::{info, warn};

use crate::driver::{JobTrace, Outcome, Seen, run_open_loop};
use crate::error::BenchError;
use crate::harness::{Harness, HarnessOptions};
use crate::overhead::Outcomes;
use crate::probe::{Observed, Probe};
use crate::scenario::{Scenario, TraceJob};
use crate::stats::{Summary, summarize_ms};

/// One job's result under one policy.
#[derive(Debug, Clone, Serialize)]
pub struct JobResult {
    /// Index in the trace.
    pub index: usize,
    /// Job class from the mix.
    pub class: String,
    /// Tenant.
    pub tenant: String,
    /// Arrival, wall seconds from the start.
    pub arrival_s: f64,
    /// Node of the final attempt.
    pub node: Option<String>,
    /// Attempts dispatched.
    pub attempts: usize,
    /// Submit sent → node starts the final attempt.
    pub queue_wait_ms: Option<f64>,
    /// Submit sent → terminal event received.
    pub end_to_end_ms: Option<f64>,
    /// `succeeded`, `failed: ...`, `cancelled`, `rejected: ...` or `unfinished: ...`.
    pub outcome: String,
}

/// One policy's run.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyRun {
    /// Policy name.
    pub policy: String,
    /// Outcome counts.
    pub outcomes: Outcomes,
    /// Jobs that did not succeed.
    pub lost: usize,
    /// `Retrying` events over all jobs.
    pub retries: usize,
    /// Start of the trace → last terminal event, wall seconds.
    pub makespan_s: f64,
    /// Makespan over the scenario's lower bound.
    pub makespan_over_bound: f64,
    /// Queue wait summary.
    pub queue_wait: Summary,
    /// End-to-end summary.
    pub end_to_end: Summary,
    /// Per node: share of the makespan spent running prompts.
    pub busy_share: BTreeMap<String, f64>,
    /// Per node: model loads.
    pub model_loads: BTreeMap<String, usize>,
    /// All model loads.
    pub model_loads_total: usize,
    /// Per class, per node: jobs whose final attempt ran there.
    pub placements: BTreeMap<String, BTreeMap<String, usize>>,
    /// Dispatches the scenario forbids (e.g. a large job on a small GPU).
    pub forbidden_placements: usize,
    /// The smallest ratio, over this run's prompts, of a prompt's node-side run time to the
    /// sampler time the scenario models for it (0 when no prompt finished).
    pub service_factor: f64,
    /// Every job.
    pub jobs: Vec<JobResult>,
}

/// The whole comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// Scenario name.
    pub scenario: String,
    /// Scenario description.
    pub description: String,
    /// Jobs in the trace.
    pub jobs: usize,
    /// Nodes in the fleet.
    pub nodes: usize,
    /// The time scale.
    pub time_scale: f64,
    /// Lower bound on the makespan, wall seconds, with the measured service factor applied.
    pub lower_bound_s: f64,
    /// The same bound from sampler time alone (what the emulator could reach if every node
    /// of a workflow but the sampler took no time).
    pub sampler_bound_s: f64,
    /// The smallest measured ratio of a prompt's run time to its modelled sampler time, over
    /// every run; it scales the work in the bound (see [`Scenario::lower_bound_s`]).
    pub service_factor: f64,
    /// Fewest model loads any schedule needs, see [`Scenario::min_model_loads`].
    pub min_model_loads: usize,
    /// Fewest model loads of a schedule that keeps up with moving demand, when demand moves;
    /// see [`Scenario::keep_up_model_loads`].
    pub keep_up_model_loads: Option<usize>,
    /// What a clairvoyant first-come-first-served scheduler reaches on the same arrivals,
    /// see [`crate::oracle`]; `None` when a job class never finished in any run.
    pub clairvoyant: Option<crate::oracle::Clairvoyant>,
    /// One entry per policy, in run order.
    pub runs: Vec<PolicyRun>,
    /// Each policy's figures against the targets, relative to least-loaded.
    pub targets: Vec<crate::targets::TargetCheck>,
}

/// Runs the scenario under each policy.
///
/// # Errors
/// A harness fails to start or its fleet never becomes ready.
pub async fn compare(
    scenario: &Scenario,
    policies: &[scheduler::PolicyKind],
    probe: &Probe,
) -> Result<Comparison, BenchError> {
    let trace = scenario.trace();
    let mut runs = Vec::new();
    for kind in policies {
        eprintln!(
            "placement {}: {} jobs under {}",
            scenario.name,
            trace.len(),
            kind.as_str()
        );
        runs.push(run_policy(scenario, &trace, *kind, probe).await?);
    }
    // Every prompt took at least this many times its sampler time on the emulated nodes
    // (text encoding, VAE decode, image encoding, timer granularity), so the bound may scale
    // the work by it and still be a bound; never below 1, where it is the sampler-only bound.
    let service_factor = runs
        .iter()
        .map(|run| run.service_factor)
        .filter(|f| f.is_finite() && *f > 0.0)
        .fold(f64::INFINITY, f64::min);
    let service_factor = if service_factor.is_finite() {
        service_factor.max(1.0)
    } else {
        1.0
    };
    let sampler_bound_s = scenario.lower_bound_s(&trace, 1.0);
    let lower_bound_s = scenario.lower_bound_s(&trace, service_factor);
    for run in &mut runs {
        run.makespan_over_bound = if lower_bound_s > 0.0 {
            run.makespan_s / lower_bound_s
        } else {
            0.0
        };
    }
    let min_model_loads = scenario.min_model_loads(&trace);
    let keep_up_model_loads = scenario
        .keep_up_model_loads(&trace, service_factor)
        .map(|loads| loads.max(min_model_loads));
    let targets = crate::targets::check(&runs, min_model_loads, keep_up_model_loads);
    let clairvoyant = crate::oracle::clairvoyant(scenario, &trace, &runs);
    Ok(Comparison {
        clairvoyant,
        min_model_loads,
        keep_up_model_loads,
        targets,
        scenario: scenario.name.clone(),
        description: scenario.description.clone(),
        jobs: trace.len(),
        nodes: scenario.node_configs().len(),
        time_scale: scenario.time_scale,
        lower_bound_s,
        sampler_bound_s,
        service_factor,
        runs,
    })
}

async fn run_policy(
    scenario: &Scenario,
    trace: &[TraceJob],
    kind: scheduler::PolicyKind,
    probe: &Probe,
) -> Result<PolicyRun, BenchError> {
    let settings = &scenario.coordinator;
    let options = HarnessOptions {
        policy: scheduler::PolicyConfig {
            kind,
            expected_finish: scenario.expected_finish_config(),
            ..Default::default()
        },
        probe_interval: Duration::from_millis(settings.probe_interval_ms),
        node_down_grace: Duration::from_millis(settings.node_down_grace_ms),
        slots_per_node: settings.slots_per_node,
        ..HarnessOptions::default()
    };
    let mut harness = Harness::start(scenario.node_configs(), &options).await?;
    harness
        .wait_ready(Duration::from_secs(20), options.probe_interval)
        .await?;
    probe.drain();
    let plan = scenario.planned(trace);
    let deadline = Duration::from_secs(settings.deadline_s);
    let faults = inject_faults(scenario, &harness);
    let ((traces, start), ()) = tokio::join!(run_open_loop(&harness, plan, deadline), faults);
    let observed = probe.drain();
    harness.shutdown().await;
    Ok(summarise(scenario, trace, kind, &traces, start, &observed))
}

/// Crashes (and maybe restarts) nodes on the scenario's schedule.
async fn inject_faults(scenario: &Scenario, harness: &Harness) {
    let start = Instant::now();
    let mut actions: Vec<(Duration, &str, bool)> = Vec::new();
    for fault in &scenario.faults {
        actions.push((scenario.wall(fault.kill_at_s), &fault.node, false));
        if let Some(at) = fault.restart_at_s {
            actions.push((scenario.wall(at), &fault.node, true));
        }
    }
    actions.sort_by_key(|(at, _, _)| *at);
    for (at, node, restart) in actions {
        tokio::time::sleep_until((start + at).into()).await;
        let Some(sim) = harness.sims.iter().find(|sim| sim.name() == node) else {
            continue;
        };
        if restart {
            info!(node, "fault: restarting node");
            if let Err(error) = sim.restart().await {
                warn!(node, %error, "cannot restart the node");
            }
        } else {
            info!(node, "fault: killing node");
            sim.crash();
        }
    }
}

fn summarise(
    scenario: &Scenario,
    trace: &[TraceJob],
    kind: scheduler::PolicyKind,
    traces: &[JobTrace],
    start: Instant,
    observed: &Observed,
) -> PolicyRun {
    let vram: BTreeMap<String, f64> = scenario
        .node_configs()
        .into_iter()
        .map(|node| {
            (
                node.name,
                node.gpu.vram_total as f64 / f64::from(1u32 << 30),
            )
        })
        .collect();
    let ms = |later: Instant, earlier: Instant| {
        later.saturating_duration_since(earlier).as_secs_f64() * 1e3
    };
    let mut jobs = Vec::with_capacity(traces.len());
    let mut placements: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    let mut forbidden = 0;
    for job_trace in traces {
        let Some(planned) = trace.get(job_trace.index) else {
            continue;
        };
        let mix = &scenario.load.mix[planned.kind];
        let last = job_trace.last_dispatch();
        let queue_wait_ms = last
            .and_then(|(_, prompt)| observed.started.get(prompt))
            .map(|stamp| stamp.at)
            .or_else(|| {
                job_trace
                    .first(|kind| *kind == Seen::Started)
                    .map(|e| e.received)
            })
            .map(|at| ms(at, job_trace.submit_sent));
        let end_to_end_ms = job_trace
            .finished_received()
            .map(|at| ms(at, job_trace.submit_sent));
        for (_, node, _, _) in job_trace.dispatches() {
            let too_small = scenario.forbid.iter().any(|rule| {
                rule.class == mix.class
                    && vram.get(node).is_some_and(|gib| *gib < rule.min_vram_gib)
            });
            if too_small {
                forbidden += 1;
            }
        }
        if let Some((node, _)) = last {
            *placements
                .entry(mix.class.clone())
                .or_default()
                .entry(node.to_owned())
                .or_default() += 1;
        }
        jobs.push(JobResult {
            index: job_trace.index,
            class: mix.class.clone(),
            tenant: mix.tenant.clone(),
            arrival_s: scenario.wall(planned.at_s).as_secs_f64(),
            node: last.map(|(node, _)| node.to_owned()),
            attempts: job_trace.dispatches().count(),
            queue_wait_ms,
            end_to_end_ms,
            outcome: describe(&job_trace.outcome),
        });
    }
    let makespan_s = traces
        .iter()
        .filter_map(JobTrace::finished_received)
        .max()
        .map(|last| last.saturating_duration_since(start).as_secs_f64())
        .unwrap_or_default();
    let service_factor = service_factor(scenario, trace, traces, observed);
    let mut busy: BTreeMap<String, f64> = vram.keys().map(|name| (name.clone(), 0.0)).collect();
    for (prompt, started) in &observed.started {
        if let Some(finished) = observed.finished.get(prompt) {
            *busy.entry(started.node.clone()).or_default() += finished
                .at
                .saturating_duration_since(started.at)
                .as_secs_f64();
        }
    }
    if makespan_s > 0.0 {
        for share in busy.values_mut() {
            *share /= makespan_s;
        }
    }
    let mut model_loads: BTreeMap<String, usize> =
        vram.keys().map(|name| (name.clone(), 0)).collect();
    for load in &observed.loads {
        *model_loads.entry(load.node.clone()).or_default() += 1;
    }
    let outcomes = Outcomes::of(traces);
    let queue: Vec<f64> = jobs.iter().filter_map(|job| job.queue_wait_ms).collect();
    let e2e: Vec<f64> = jobs.iter().filter_map(|job| job.end_to_end_ms).collect();
    PolicyRun {
        policy: kind.as_str().to_owned(),
        lost: traces.len() - outcomes.succeeded,
        outcomes,
        retries: traces.iter().map(JobTrace::retries).sum(),
        makespan_s,
        makespan_over_bound: 0.0,
        queue_wait: summarize_ms(&queue),
        end_to_end: summarize_ms(&e2e),
        busy_share: busy,
        model_loads_total: observed.loads.len(),
        model_loads,
        placements,
        forbidden_placements: forbidden,
        service_factor,
        jobs,
    }
}

/// The smallest ratio of a prompt's node-side run time (start → finish stamps) to the sampler
/// time the scenario models for its job on that node, over every finished prompt of the run.
/// Prompts that loaded a model only raise the ratio, so the minimum is a prompt without one.
fn service_factor(
    scenario: &Scenario,
    trace: &[TraceJob],
    traces: &[JobTrace],
    observed: &Observed,
) -> f64 {
    let step_s: BTreeMap<String, f64> = scenario
        .node_configs()
        .into_iter()
        .map(|node| (node.name, node.seconds_per_step))
        .collect();
    let mut factor = f64::INFINITY;
    for job_trace in traces {
        let Some(planned) = trace.get(job_trace.index) else {
            continue;
        };
        let units = scenario.load.mix[planned.kind].cost_units();
        for (_, node, prompt, _) in job_trace.dispatches() {
            let (Some(started), Some(finished), Some(step)) = (
                observed.started.get(prompt),
                observed.finished.get(prompt),
                step_s.get(node),
            ) else {
                continue;
            };
            let modelled = units * step * scenario.time_scale;
            if modelled > 0.0 {
                let ran = finished
                    .at
                    .saturating_duration_since(started.at)
                    .as_secs_f64();
                factor = factor.min(ran / modelled);
            }
        }
    }
    if factor.is_finite() { factor } else { 0.0 }
}

fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Succeeded => "succeeded".into(),
        Outcome::Failed(message) => format!("failed: {message}"),
        Outcome::Cancelled => "cancelled".into(),
        Outcome::Rejected(message) => format!("rejected: {message}"),
        Outcome::Unfinished(message) => format!("unfinished: {message}"),
    }
}
