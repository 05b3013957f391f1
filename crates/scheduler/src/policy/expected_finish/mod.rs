//! Expected finish: send each job where it is expected to complete soonest, and let a node with
//! a checkpoint in VRAM pick the queued jobs that need it.
//!
//! For a (job, node) pair the estimate is `(node backlog + job cost) / node speed`, plus a
//! model-load penalty when the job's checkpoint is not the one the node will have resident,
//! plus a thrash penalty when that load evicts a checkpoint other queued jobs still need. The
//! speed is learnt per node (cost units per second), so a fast busy GPU can beat a slow idle
//! one.
//!
//! Plain per-job greedy placement has two failure modes under saturation, which this policy
//! addresses in its own queue walk (see `walk`):
//!
//! - **Node-side selection.** When the head job would make a node switch checkpoint, a job
//!   within `window` places behind the head that needs the checkpoint already resident there
//!   takes the slot instead. Otherwise, with mixed demand, every freed slot goes to whatever job
//!   is at the head and nodes reload models all the time.
//! - **Holding.** When a busy node is expected to finish the job clearly sooner than any free
//!   node (`hold_ratio`), the job is left queued rather than stranded on a slow or cold node; a
//!   held job adds its cost to that node's expected backlog, so once enough jobs wait for one
//!   node, loading the model elsewhere becomes the better estimate (demand justifies the load).
//!
//! Both reorder the queue, so both are bounded by aging: a job is *overtaken* when a job behind
//! it is placed on a node it could run on, or when it is held. Once a job has been overtaken
//! `max_skips` times it is *due*: it is placed on its best free node as soon as one exists, and
//! no job behind it may take a node it can run on first. The counts live in the policy between
//! rounds, so no job waits for more than `max_skips` placements that could have been its own.
//!
//! A node whose speed has not been learnt yet (no finished job) takes one job at a time, so a
//! GPU that turns out to be much slower than the default guess strands at most one job.
//!
//! Finally, to avoid several coordinators herding onto one node when estimates are close (they
//! are only estimates), the policy picks at random, with the caller's seeded RNG, among the best
//! few candidates within a small ratio of the best (as in power-of-two-choices: a little
//! randomness among good choices avoids herd behaviour on stale information).

mod walk;

#[cfg(test)]
mod tests;

use std::collections::HashMap;

use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::Policy;
use crate::error::SchedulerError;
use crate::plan::{Plan, Round};
use crate::snapshot::Snapshot;
use crate::view::{JobId, JobView};

/// Settings of [`ExpectedFinish`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExpectedFinishConfig {
    /// Seconds added when the node must load the job's checkpoint. Default 20.
    pub model_load_secs: f64,
    /// Extra seconds when that load evicts a checkpoint other queued jobs still need.
    /// Default 30.
    pub thrash_penalty_secs: f64,
    /// Candidates whose estimate is within this ratio of the best are "near best" (0.05 = 5%).
    /// Default 0.05.
    pub near_best_ratio: f64,
    /// How many near-best candidates to pick among at random; 1 always takes the best.
    /// Default 2.
    pub pick_among: usize,
    /// How many queued jobs behind the head a node may pick from to keep its checkpoint.
    /// 0 disables node-side selection. Default 16.
    pub window: usize,
    /// A job is held (left queued) when a busy node's estimate is at most this fraction of
    /// the best free node's. 0 disables holding. Default 0.8.
    pub hold_ratio: f64,
    /// Aging bound: after this many overtakes a job is placed next on its best free node.
    /// Default 8.
    pub max_skips: u32,
}

impl Default for ExpectedFinishConfig {
    fn default() -> Self {
        Self {
            model_load_secs: 20.0,
            thrash_penalty_secs: 30.0,
            near_best_ratio: 0.05,
            pick_among: 2,
            window: 16,
            hold_ratio: 0.8,
            max_skips: 8,
        }
    }
}

/// Places jobs by earliest expected finish, with node-side checkpoint selection, bounded
/// holding and aging.
#[derive(Debug, Clone, Default)]
pub struct ExpectedFinish {
    config: ExpectedFinishConfig,
    /// Overtakes per queued job, carried between rounds; forgotten once a job leaves the
    /// snapshot (placed, cancelled or beyond the coordinator's window).
    skips: HashMap<JobId, u32>,
}

impl ExpectedFinish {
    /// Creates the policy.
    ///
    /// # Errors
    /// [`SchedulerError::InvalidSetting`] when a duration or ratio is negative or not finite,
    /// `hold_ratio` is above 1, or `pick_among` is 0.
    pub fn new(config: ExpectedFinishConfig) -> Result<Self, SchedulerError> {
        let invalid = |setting, value: String, expected| SchedulerError::InvalidSetting {
            policy: "expected-finish",
            setting,
            value,
            expected,
        };
        for (setting, value) in [
            ("model_load_secs", config.model_load_secs),
            ("thrash_penalty_secs", config.thrash_penalty_secs),
            ("near_best_ratio", config.near_best_ratio),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(invalid(
                    setting,
                    value.to_string(),
                    "expected a finite number >= 0",
                ));
            }
        }
        if !(0.0..=1.0).contains(&config.hold_ratio) {
            return Err(invalid(
                "hold_ratio",
                config.hold_ratio.to_string(),
                "expected a number in 0..=1",
            ));
        }
        if config.pick_among == 0 {
            return Err(invalid("pick_among", "0".into(), "expected at least 1"));
        }
        Ok(Self {
            config,
            skips: HashMap::new(),
        })
    }

    /// Returns how many times `job` has been overtaken so far.
    pub fn skips_of(&self, job: &JobId) -> u32 {
        self.skips.get(job).copied().unwrap_or(0)
    }

    /// Returns the expected seconds until `job` would finish on node `index`, counting
    /// `extra_cost` more work queued there (held jobs).
    fn estimate(
        &self,
        job: &JobView,
        index: usize,
        round: &Round<'_>,
        extra_cost: u64,
        demand: &HashMap<&str, u32>,
    ) -> f64 {
        let node = round.node(index);
        // Precision loss above 2^53 cost units is irrelevant for an estimate.
        #[allow(clippy::cast_precision_loss)]
        let work = round
            .backlog_cost(index)
            .saturating_add(extra_cost)
            .saturating_add(job.cost) as f64;
        let mut secs = work / node.effective_speed();

        let resident = round.resident_model(index);
        if let Some(checkpoint) = job.checkpoint.as_deref()
            && resident != Some(checkpoint)
        {
            secs += self.config.model_load_secs;
            if resident.is_some_and(|r| demand.get(r).is_some_and(|&n| n > 0)) {
                secs += self.config.thrash_penalty_secs;
            }
        }
        secs
    }
}

impl Policy for ExpectedFinish {
    fn name(&self) -> &'static str {
        "expected-finish"
    }

    fn plan(&mut self, snapshot: &Snapshot, rng: &mut dyn RngCore) -> Plan {
        // Forget jobs that left the queue; the map stays as large as the window.
        let queued: std::collections::HashSet<&JobId> =
            snapshot.jobs().iter().map(|j| &j.id).collect();
        self.skips.retain(|id, _| queued.contains(id));
        walk::plan_round(self, snapshot, rng)
    }
}
