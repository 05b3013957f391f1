//! A clairvoyant reference for a placement run: how low end-to-end latency gets on the same
//! arrivals when every job's run time on every node is known in advance.
//!
//! The reference replays the trace's arrivals, in arrival order, onto the scenario's nodes:
//! each job goes to the eligible node where it would finish first, given what that node
//! already has, and starts there as soon as the node is free. Run times are the ones measured
//! in the runs themselves (per class and node, the median of start-to-end), so the emulator's
//! real costs are in. It knows what no online policy can (exact run times, future node
//! states) and pays no model load and no dispatch delay, so it shows how far a target is
//! reachable at all: if even this reference misses "p95 at most 0.6× least-loaded's", no
//! first-come-first-served policy meets it on this scenario.
//!
//! NOTE: it is a reference, not a lower bound. Serving jobs out of arrival order (shortest
//! first, say) can lower some percentiles further, and faults (a node killed mid-run) are
//! ignored, which flatters it.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::placement::PolicyRun;
use crate::scenario::{Scenario, TraceJob};
use crate::stats::{Summary, summarize_ms};

/// The clairvoyant reference's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Clairvoyant {
    /// End-to-end latency (arrival → finish) of every job, in milliseconds.
    pub end_to_end: Summary,
    /// Its p95 over least-loaded's measured p95, when least-loaded ran.
    pub p95_vs_least_loaded: Option<f64>,
}

/// Computes the reference, or `None` when some job class never finished in any run (its run
/// time is unknown) or some job has no node that can run it.
pub fn clairvoyant(
    scenario: &Scenario,
    trace: &[TraceJob],
    runs: &[PolicyRun],
) -> Option<Clairvoyant> {
    let nodes = scenario.node_configs();
    let steps: BTreeMap<&str, f64> = nodes
        .iter()
        .map(|node| (node.name.as_str(), node.seconds_per_step))
        .collect();
    // Measured start-to-end seconds per (class, node), over every run.
    let mut samples: BTreeMap<(&str, &str), Vec<f64>> = BTreeMap::new();
    for run in runs {
        for job in &run.jobs {
            let (Some(node), Some(wait), Some(e2e)) =
                (job.node.as_deref(), job.queue_wait_ms, job.end_to_end_ms)
            else {
                continue;
            };
            if job.attempts == 1 && job.outcome == "succeeded" && e2e >= wait {
                samples
                    .entry((job.class.as_str(), node))
                    .or_default()
                    .push((e2e - wait) / 1e3);
            }
        }
    }
    let measured: BTreeMap<(&str, &str), f64> = samples
        .into_iter()
        .map(|(key, mut values)| {
            values.sort_by(f64::total_cmp);
            (key, values[values.len() / 2])
        })
        .collect();

    let mut free_at = vec![0.0_f64; nodes.len()];
    let mut latencies = Vec::with_capacity(trace.len());
    let mut order: Vec<&TraceJob> = trace.iter().collect();
    order.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    for job in order {
        let kind = &scenario.load.mix[job.kind];
        let arrival = scenario.wall(job.at_s).as_secs_f64();
        let mut best: Option<(f64, usize)> = None;
        for (index, node) in nodes.iter().enumerate() {
            let has_checkpoint = node
                .models
                .iter()
                .any(|folder| folder.files.iter().any(|f| f.name == kind.checkpoint));
            let vram_gib = node.gpu.vram_total as f64 / f64::from(1_u32 << 30);
            let forbidden = scenario
                .forbid
                .iter()
                .any(|rule| rule.class == kind.class && vram_gib < rule.min_vram_gib);
            if !has_checkpoint || forbidden {
                continue;
            }
            let Some(secs) = run_time(&measured, &steps, &kind.class, &node.name) else {
                continue;
            };
            let finish = arrival.max(free_at[index]) + secs;
            if best.is_none_or(|(f, _)| finish < f) {
                best = Some((finish, index));
            }
        }
        let (finish, index) = best?;
        free_at[index] = finish;
        latencies.push((finish - arrival) * 1e3);
    }
    let end_to_end = summarize_ms(&latencies);
    let p95_vs_least_loaded = runs
        .iter()
        .find(|run| run.policy == "least-loaded")
        .map(|run| run.end_to_end.p95_ms)
        .filter(|p95| *p95 > 0.0)
        .map(|p95| end_to_end.p95_ms / p95);
    Some(Clairvoyant {
        end_to_end,
        p95_vs_least_loaded,
    })
}

/// The run time of `class` on `node`: measured there, else scaled from the nodes where it was
/// measured by their speed ratio (seconds per step).
fn run_time(
    measured: &BTreeMap<(&str, &str), f64>,
    steps: &BTreeMap<&str, f64>,
    class: &str,
    node: &str,
) -> Option<f64> {
    if let Some(secs) = measured.get(&(class, node)) {
        return Some(*secs);
    }
    let own = steps.get(node)?;
    let mut scaled: Vec<f64> = measured
        .iter()
        .filter(|((c, _), _)| *c == class)
        .filter_map(|((_, other), secs)| steps.get(other).map(|s| secs * own / s))
        .collect();
    scaled.sort_by(f64::total_cmp);
    scaled.get(scaled.len() / 2).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unmeasured_node_is_scaled_from_the_measured_ones() {
        let measured = BTreeMap::from([(("draft", "fast-0"), 0.1), (("draft", "fast-1"), 0.12)]);
        let steps = BTreeMap::from([("fast-0", 0.03), ("fast-1", 0.03), ("slow", 0.12)]);
        assert_eq!(run_time(&measured, &steps, "draft", "fast-0"), Some(0.1));
        let slow = run_time(&measured, &steps, "draft", "slow").expect("scaled");
        assert!((slow - 0.48).abs() < 1e-9, "{slow}");
        assert_eq!(run_time(&measured, &steps, "final", "slow"), None);
    }
}
