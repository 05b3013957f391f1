//! Expected finish: send each job where it is expected to complete soonest, and let a node with
//! a checkpoint in VRAM pick the queued jobs that need it.
//!
//! For a (job, node) pair the estimate is `(node backlog + job cost) / node speed`, plus a
//! model-load penalty when the job's checkpoint is not among those the node will have resident
//! (a set bounded by VRAM, see [`ResidentSet`](crate::ResidentSet)), plus a thrash penalty when
//! that load evicts a checkpoint other queued jobs still need. The
//! speed is learnt per node (cost units per second), so a fast busy GPU can beat a slow idle
//! one.
//!
//! Plain per-job greedy placement has two failure modes under saturation, which this policy
//! addresses in its own queue walk (see `walk`):
//!
//! - **Node-side selection.** When the head job's checkpoint would push another out of a
//!   node's VRAM, a job within `window` places behind the head that needs a checkpoint already
//!   resident there takes the slot instead. Otherwise, with mixed demand, every freed slot goes to whatever job
//!   is at the head and nodes reload models all the time.
//! - **Holding.** When a busy node is expected to finish the job clearly sooner than any free
//!   node (`hold_ratio`), the job is left queued rather than stranded on a slow or cold node; a
//!   held job adds its cost to that node's expected backlog, so once enough jobs wait for one
//!   node, loading the model elsewhere becomes the better estimate (demand justifies the load).
//!
//! Both reorder the queue, so both are bounded by aging, with two counts that live in the
//! policy between rounds:
//!
//! - a job is *overtaken* when a job behind it is placed on a node it could run on, in a round
//!   where it was not held;
//! - a job is *held* once per round in which it declines every free node for a faster busy one.
//!   The nodes it declined are not overtakes: it chose to wait, and a small job taking the slow
//!   node it turned down does not delay it.
//!
//! Once a job has been overtaken `max_skips` times or held in `max_holds` rounds it is *due*: it
//! is placed on its best free node as soon as one exists, and no job behind it may take a node
//! it can run on first. So no job waits for more than `max_skips` placements that could have
//! been its own, nor more than `max_holds` rounds for a node it prefers. Holds have their own,
//! larger bound because a round passes at every event of the fleet: if each held round counted
//! as an overtake, a job waiting a few hundred milliseconds for a fast GPU would become due and
//! be pushed onto the slow one it had rightly declined.
//!
//! A node whose speed has not been learnt yet (no finished job) is planned at the fleet's
//! median learnt speed (see [`Round::speed`](crate::Round::speed)) and takes one job at a time,
//! so a GPU that turns out to be much slower than that guess strands at most one job.
//!
//! The thrash penalty applies only when the load pushes a resident checkpoint out of VRAM (a
//! 24 GiB GPU keeps an SD 1.5 checkpoint beside Flux, so alternating between them loads each
//! once), and it looks past the queue. A checkpoint is *protected* on a node while jobs for it
//! are queued, or while no more nodes hold it than its share of the recent arrivals (the last
//! `demand_window` jobs seen) asks for: with 80% of recent jobs for one checkpoint on four
//! nodes, up to four holders of it are protected. Evicting a protected checkpoint costs the
//! thrash penalty on top of the load. Counting only queued jobs would let an idle node switch
//! to the first odd job in a lull and switch back for the next common one; with the arrivals
//! counted, a node loads another model only when enough work waits for it.
//!
//! A load costs the checkpoint's own load time once the coordinator has learnt it from cold
//! starts (an SD 1.5 file loads in a fraction of a Flux one's time), and the configured
//! `model_load_secs` until then. The thrash penalty stays a configured figure: it prices the
//! evicted checkpoint's comeback, which depends on demand more than on that one load.
//!
//! Finally, to avoid several coordinators herding onto one node when estimates are close (they
//! are only estimates), the policy picks at random, with the caller's seeded RNG, among the best
//! few candidates within a small ratio of the best (as in power-of-two-choices: a little
//! randomness among good choices avoids herd behaviour on stale information).

mod walk;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet, VecDeque};

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
    /// Seconds added when the node must load the job's checkpoint and the coordinator has not
    /// learnt that checkpoint's load time yet ([`JobView::load_secs`]). Default 20.
    pub model_load_secs: f64,
    /// Extra seconds when that load evicts a checkpoint that queued or recent jobs still want
    /// (see the module documentation). Default 40: twice the default load, since an eviction
    /// that demand did not justify is paid again when the checkpoint has to come back.
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
    /// A job is held (left queued) when a busy node's estimate is below this fraction of the
    /// best free node's. 0 disables holding; 1 holds whenever a busy node is expected to finish
    /// the job sooner. Default 1: the estimates count a running prompt's progress and a speed
    /// timed from the first sampler step, so they are trusted as they are.
    pub hold_ratio: f64,
    /// Aging bound: after this many overtakes a job is placed next on its best free node.
    /// Default 8.
    pub max_skips: u32,
    /// Aging bound for holding: a job held in this many rounds is placed next on its best free
    /// node. Default 64.
    pub max_holds: u32,
    /// How many of the most recently arrived jobs the thrash rule counts towards each
    /// checkpoint's share of demand; 0 counts queued jobs only. Default 64.
    pub demand_window: usize,
}

impl Default for ExpectedFinishConfig {
    fn default() -> Self {
        Self {
            model_load_secs: 20.0,
            thrash_penalty_secs: 40.0,
            near_best_ratio: 0.05,
            pick_among: 2,
            window: 16,
            hold_ratio: 1.0,
            max_skips: 8,
            max_holds: 64,
            demand_window: 64,
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
    /// Rounds in which each queued job was held; forgotten like `skips`.
    holds: HashMap<JobId, u32>,
    /// Queued jobs already counted as arrivals.
    seen: HashSet<JobId>,
    /// Checkpoints of the last `demand_window` arrivals, oldest first.
    recent: VecDeque<Option<String>>,
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
            holds: HashMap::new(),
            seen: HashSet::new(),
            recent: VecDeque::new(),
        })
    }

    /// Returns how many times `job` has been overtaken so far.
    pub fn skips_of(&self, job: &JobId) -> u32 {
        self.skips.get(job).copied().unwrap_or(0)
    }

    /// Returns each checkpoint's count among the recent arrivals.
    fn recent_counts(&self) -> HashMap<&str, usize> {
        let mut counts = HashMap::new();
        for checkpoint in self.recent.iter().flatten() {
            *counts.entry(checkpoint.as_str()).or_default() += 1;
        }
        counts
    }

    /// Returns in how many rounds `job` has been held so far.
    pub fn holds_of(&self, job: &JobId) -> u32 {
        self.holds.get(job).copied().unwrap_or(0)
    }

    /// Whether `job` reached an aging bound: it goes next, on its best free node.
    fn is_due(&self, job: &JobId) -> bool {
        let holds = self.holds_of(job);
        self.skips_of(job) >= self.config.max_skips || (holds > 0 && holds >= self.config.max_holds)
    }

    /// Returns the expected seconds until `job` would finish on node `index`, counting
    /// `extra_cost` more work queued there (held jobs).
    fn estimate(
        &self,
        job: &JobView,
        index: usize,
        round: &Round<'_>,
        extra_cost: u64,
        demand: &walk::Demand<'_>,
    ) -> f64 {
        // Precision loss above 2^53 cost units is irrelevant for an estimate.
        #[allow(clippy::cast_precision_loss)]
        let work = round
            .backlog_cost(index)
            .saturating_add(extra_cost)
            .saturating_add(job.cost) as f64;
        let mut secs = work / round.speed(index);

        if let Some(checkpoint) = job.checkpoint.as_deref()
            && !round.is_resident(index, checkpoint)
        {
            secs += job
                .load_secs
                .filter(|s| s.is_finite() && *s >= 0.0)
                .unwrap_or(self.config.model_load_secs);
            // Only a load that pushes a checkpoint out of VRAM can be thrash: a 24 GiB GPU keeps
            // a small checkpoint beside a large one.
            if round
                .evictions(index, checkpoint, job.vram_need)
                .any(|evicted| demand.protects(evicted))
            {
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
        let queued: HashSet<&JobId> = snapshot.jobs().iter().map(|j| &j.id).collect();
        self.skips.retain(|id, _| queued.contains(id));
        self.holds.retain(|id, _| queued.contains(id));
        self.seen.retain(|id| queued.contains(id));
        for job in snapshot.jobs() {
            if self.seen.insert(job.id.clone()) && self.config.demand_window > 0 {
                self.recent.push_back(job.checkpoint.clone());
                if self.recent.len() > self.config.demand_window {
                    self.recent.pop_front();
                }
            }
        }
        walk::plan_round(self, snapshot, rng)
    }
}
