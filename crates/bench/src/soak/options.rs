//! Settings of a soak run and its seeded fault schedule.
//!
//! The schedule is a pure function of the seed and the load's length, so a failing run can be
//! repeated fault for fault; node faults arrive as a Poisson process and coordinator restarts
//! are spread evenly so even a short run restarts it both ways.

use std::path::PathBuf;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// Settings of one soak run.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    /// Minutes of load (faults stop with the load; the drain comes after).
    pub minutes: f64,
    /// Simulated nodes.
    pub nodes: usize,
    /// Offered jobs per second; `None` offers 70% of the estimated capacity.
    pub rate: Option<f64>,
    /// Seed of the load and the fault schedule.
    pub seed: u64,
    /// Directory for `soak.json` and the coordinator's logs.
    pub out: PathBuf,
    /// How long the drain may take before unfinished jobs count as lost.
    pub drain_timeout: Duration,
}

/// What one scheduled fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// Crash a node, restart it empty `down` later.
    NodeCrash {
        /// How long it stays down, in milliseconds.
        down_ms: u64,
    },
    /// Close a node's WebSockets when its next prompt node starts.
    WsDrop,
    /// A node sends no WebSocket frames for a while.
    WsSilence {
        /// How long, in milliseconds.
        for_ms: u64,
    },
    /// The next `count` prompts of a node fail at run time at a node class.
    RunError {
        /// How many prompts fail.
        count: u32,
    },
    /// `kill -9` of the coordinator, then start it again.
    CoordinatorKill,
    /// SIGTERM to the coordinator, then start it again.
    CoordinatorTerm,
}

impl FaultKind {
    /// Name used in the report's per-kind counts.
    pub fn label(self) -> &'static str {
        match self {
            Self::NodeCrash { .. } => "node_crash",
            Self::WsDrop => "ws_drop",
            Self::WsSilence { .. } => "ws_silence",
            Self::RunError { .. } => "run_error",
            Self::CoordinatorKill => "coordinator_kill9",
            Self::CoordinatorTerm => "coordinator_sigterm",
        }
    }
}

/// One fault at an offset from the start of the load.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScheduledFault {
    /// When, from the start of the load.
    pub at: Duration,
    /// Which node (ignored for coordinator faults).
    pub node: usize,
    /// What.
    pub kind: FaultKind,
}

/// Mean time between node faults.
const NODE_FAULT_MEAN: Duration = Duration::from_secs(4);

/// The seeded fault schedule over `load` on `nodes` nodes: node faults as a Poisson process,
/// and coordinator restarts spread evenly (about one every 40 s, at least two, alternating
/// kill -9 and SIGTERM) so even a half-minute run restarts it both ways. Nothing is scheduled
/// in the last 10% of the load, so the last restart has settled before the drain.
pub fn fault_schedule(seed: u64, load: Duration, nodes: usize) -> Vec<ScheduledFault> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x00fa_0175);
    let horizon = load.mul_f64(0.9);
    let mut faults = Vec::new();
    if nodes > 0 {
        let mut at = Duration::ZERO;
        loop {
            at += exponential(&mut rng, NODE_FAULT_MEAN);
            if at >= horizon {
                break;
            }
            let kind = match rng.random_range(0..4u32) {
                0 => FaultKind::NodeCrash {
                    down_ms: rng.random_range(500..4000),
                },
                1 => FaultKind::WsDrop,
                2 => FaultKind::WsSilence {
                    for_ms: rng.random_range(1000..5000),
                },
                _ => FaultKind::RunError {
                    count: rng.random_range(1..4),
                },
            };
            let node = rng.random_range(0..nodes);
            faults.push(ScheduledFault { at, node, kind });
        }
    }
    let restarts = ((load.as_secs_f64() / 40.0).round() as usize).max(2);
    let slot = horizon.as_secs_f64() / restarts as f64;
    for index in 0..restarts {
        // Somewhere in the middle half of its slot, so restarts never bunch up.
        let offset = slot * (index as f64 + 0.25 + 0.5 * rng.random::<f64>());
        let kind = if index % 2 == 0 {
            FaultKind::CoordinatorKill
        } else {
            FaultKind::CoordinatorTerm
        };
        faults.push(ScheduledFault {
            at: Duration::from_secs_f64(offset),
            node: 0,
            kind,
        });
    }
    faults.sort_by_key(|fault| fault.at);
    faults
}
/// A draw from the exponential distribution of mean `mean` (Poisson inter-arrival gaps).
pub(super) fn exponential(rng: &mut StdRng, mean: Duration) -> Duration {
    let uniform: f64 = rng.random();
    mean.mul_f64(-(1.0 - uniform).max(f64::MIN_POSITIVE).ln())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_schedule_is_seeded_sorted_and_within_the_load() {
        let load = Duration::from_secs(600);
        let a = fault_schedule(1, load, 8);
        assert_eq!(a, fault_schedule(1, load, 8), "same seed, same schedule");
        assert_ne!(
            a,
            fault_schedule(2, load, 8),
            "another seed, another schedule"
        );
        assert!(a.windows(2).all(|pair| pair[0].at <= pair[1].at));
        assert!(
            a.iter()
                .all(|fault| fault.at < load.mul_f64(0.9) && fault.node < 8)
        );
        let kinds: std::collections::HashSet<&str> = a.iter().map(|f| f.kind.label()).collect();
        assert_eq!(
            kinds.len(),
            6,
            "every kind appears in ten minutes: {kinds:?}"
        );
        // About one node fault per NODE_FAULT_MEAN over 90% of the load.
        let node_faults = a
            .iter()
            .filter(|f| {
                f.kind.label().starts_with("node")
                    || f.kind.label().starts_with("ws")
                    || f.kind.label() == "run_error"
            })
            .count();
        assert!(
            (100..=170).contains(&node_faults),
            "{node_faults} node faults"
        );
    }

    #[test]
    fn a_half_minute_schedule_restarts_the_coordinator_both_ways() {
        let schedule = fault_schedule(9, Duration::from_secs(30), 8);
        let count = |kind: FaultKind| schedule.iter().filter(|f| f.kind == kind).count();
        assert_eq!(count(FaultKind::CoordinatorKill), 1);
        assert_eq!(count(FaultKind::CoordinatorTerm), 1);
        let restarts: Vec<_> = schedule
            .iter()
            .filter(|f| f.kind.label().starts_with("coord"))
            .collect();
        assert!(
            restarts[1].at - restarts[0].at > Duration::from_secs(3),
            "restarts apart"
        );
    }
}
