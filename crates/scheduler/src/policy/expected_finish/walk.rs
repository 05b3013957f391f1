//! The queue walk of [`ExpectedFinish`]: greedy by expected finish, with node-side checkpoint
//! selection, bounded holding and aging.
//!
//! The walk keeps a *head*: the first job not yet placed or passed over. For the head it
//! scores every free candidate node; then, unless the head is due (overtaken `max_skips` times
//! or held in `max_holds` rounds):
//!
//! 1. if a busy node is expected to finish it sooner (scaled by `hold_ratio`), the head is held
//!    (left queued, its cost added to that node's expected backlog) and the walk moves on;
//! 2. if the head's checkpoint would push another out of the chosen node's VRAM and a job
//!    within the window behind the head needs a checkpoint resident there, that job takes the
//!    slot instead and the head is scored again against what is left;
//! 3. otherwise the head goes to the chosen node.
//!
//! Every placement counts as an overtake for each earlier, still queued job that could have
//! run on that node, unless that job was held this round (it declined every free node); a due
//! job is never held and no job behind it may jump onto a node it can use, and a job that
//! becomes due sends the walk back to it, so overtakes per job are bounded by `max_skips` and
//! held rounds by `max_holds`. Eligibility, slot limits and "each job at most once" are
//! enforced here exactly as in the shared greedy walk.

use std::collections::HashMap;

use rand::{Rng, RngCore};

use super::ExpectedFinish;
use crate::eligibility::can_run_now;
use crate::plan::{Assignment, Plan, Round};
use crate::snapshot::Snapshot;
use crate::view::{JobView, ModelFile};

/// Per-round state of the walk.
struct Walk<'s> {
    jobs: &'s [JobView],
    round: Round<'s>,
    /// Per job, the index into `lists` of the nodes that can run it now (name order).
    list_of: Vec<usize>,
    lists: Vec<Vec<usize>>,
    placed: Vec<bool>,
    /// Jobs held this round: they declined every free node, so placements there do not
    /// overtake them.
    held: Vec<bool>,
    /// Cost of jobs held for a busy node this round, per node.
    held_cost: Vec<u64>,
    /// What the thrash rule protects.
    demand: Demand<'s>,
    /// (job index, node index) in placement order.
    assigned: Vec<(usize, usize)>,
    /// Earliest job that became due during the round; the walk goes back to it.
    rewind: Option<usize>,
}

impl<'s> Walk<'s> {
    fn new(policy: &ExpectedFinish, snapshot: &'s Snapshot) -> Self {
        let jobs = snapshot.jobs();
        let nodes = snapshot.nodes();
        let round = Round::new(snapshot);
        // Jobs with equal requirements share one list, computed once.
        type Key<'a> = (
            &'a std::collections::BTreeMap<String, String>,
            &'a std::collections::BTreeSet<String>,
            &'a std::collections::BTreeSet<ModelFile>,
            u64,
        );
        let mut by_key: HashMap<Key<'s>, usize> = HashMap::new();
        let mut lists: Vec<Vec<usize>> = Vec::new();
        let list_of = jobs
            .iter()
            .map(|job| {
                let key = (
                    &job.required_labels,
                    &*job.required_classes,
                    &*job.required_models,
                    job.vram_need,
                );
                *by_key.entry(key).or_insert_with(|| {
                    lists.push(
                        (0..nodes.len())
                            .filter(|&i| nodes[i].slot_limit > 0 && can_run_now(job, &nodes[i]))
                            .collect(),
                    );
                    lists.len() - 1
                })
            })
            .collect();
        let mut queued: HashMap<&str, u32> = HashMap::new();
        for checkpoint in jobs.iter().filter_map(|j| j.checkpoint.as_deref()) {
            *queued.entry(checkpoint).or_default() += 1;
        }
        let mut holders: HashMap<&str, u32> = HashMap::new();
        for index in 0..nodes.len() {
            for resident in round.residents(index) {
                *holders.entry(resident).or_default() += 1;
            }
        }
        let demand = Demand {
            queued,
            holders,
            wanted: Demand::wanted_holders(policy, nodes),
        };
        Self {
            jobs,
            round,
            list_of,
            lists,
            placed: vec![false; jobs.len()],
            held: vec![false; jobs.len()],
            held_cost: vec![0; nodes.len()],
            demand,
            assigned: Vec::new(),
            rewind: None,
        }
    }

    fn can_use(&self, job: usize, node: usize) -> bool {
        self.lists[self.list_of[job]].binary_search(&node).is_ok()
    }

    /// A node whose speed is not learnt yet takes one job at a time: its estimate is a guess
    /// (the default speed), and a job prefetched behind another on a node that turns out to be
    /// several times slower than assumed waits for both. One finished job teaches the speed,
    /// after which the node's slots are used in full. Such a node is not a free candidate, so
    /// a job left waiting for it is not counted as overtaken.
    fn unproven_and_busy(&self, node: usize) -> bool {
        self.round.node(node).speed.is_none() && self.round.load(node) > 0
    }

    fn slots_left(&self) -> u64 {
        (0..self.held_cost.len())
            .map(|i| u64::from(self.round.free_slots(i)))
            .sum()
    }

    /// Places `job` on `node` and counts the overtake against every earlier queued job that
    /// could have run there.
    ///
    /// A job that becomes due this way may have been passed by the walk (it was held), so the
    /// walk is sent back to it: it gets the next free node it can use before anyone behind it.
    fn place(&mut self, policy: &mut ExpectedFinish, job: usize, node: usize) {
        let passed: Vec<usize> = (0..job)
            .filter(|&j| !self.placed[j] && !self.held[j] && self.can_use(j, node))
            .collect();
        for earlier in passed {
            let skips = policy
                .skips
                .entry(self.jobs[earlier].id.clone())
                .or_default();
            *skips += 1;
            let due = policy.is_due(&self.jobs[earlier].id);
            if due && self.rewind.is_none_or(|r| earlier < r) {
                self.rewind = Some(earlier);
            }
        }
        self.placed[job] = true;
        let checkpoint = self.jobs[job].checkpoint.as_deref();
        if let (Some(checkpoint), Some(touch)) =
            (checkpoint, self.round.assign(node, &self.jobs[job]))
        {
            self.demand.placed(checkpoint);
            for evicted in touch.evicted {
                self.demand.unheld(evicted);
            }
            if touch.loaded {
                self.demand.held(checkpoint);
            }
        }
        self.assigned.push((job, node));
    }

    /// Returns a queued job within the window behind `head` that needs a checkpoint resident
    /// on `node` and may jump ahead: no due job between would lose a node it can use.
    fn resident_match(&self, policy: &ExpectedFinish, head: usize, node: usize) -> Option<usize> {
        let mut seen = 0;
        for k in head + 1..self.jobs.len() {
            if self.placed[k] {
                continue;
            }
            if seen == policy.config.window {
                return None;
            }
            seen += 1;
            if !self.can_use(k, node) {
                continue;
            }
            if self.jobs[k]
                .checkpoint
                .as_deref()
                .is_some_and(|c| self.round.is_resident(node, c))
            {
                return Some(k);
            }
            // A due job that could use this node blocks everything behind it from this node.
            if policy.is_due(&self.jobs[k].id) {
                return None;
            }
        }
        None
    }
}

/// What the thrash rule protects: checkpoints with queued jobs, and checkpoints held by no more
/// nodes than their share of recent arrivals asks for.
pub(super) struct Demand<'s> {
    /// Queued, not yet placed jobs per checkpoint.
    queued: HashMap<&'s str, u32>,
    /// Nodes expected to hold each checkpoint, counting this round's assignments.
    holders: HashMap<&'s str, u32>,
    /// Per checkpoint, how many nodes its share of the recent arrivals asks for (rounded up,
    /// so any recent demand asks for one).
    wanted: HashMap<String, u32>,
}

impl<'s> Demand<'s> {
    fn wanted_holders(
        policy: &ExpectedFinish,
        nodes: &[crate::view::NodeView],
    ) -> HashMap<String, u32> {
        let counts = policy.recent_counts();
        let total: usize = counts.values().sum();
        let fleet = nodes
            .iter()
            .filter(|n| n.slot_limit > 0 && crate::eligibility::is_available(n))
            .count();
        counts
            .into_iter()
            .map(|(checkpoint, count)| {
                // Small counts; the ceiling of a share of the fleet fits easily.
                #[allow(
                    clippy::cast_precision_loss,
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss
                )]
                let wanted = ((count as f64 / total.max(1) as f64) * fleet as f64).ceil() as u32;
                (checkpoint.to_owned(), wanted.max(1))
            })
            .collect()
    }

    /// Whether evicting `checkpoint` from a node that holds it is thrash.
    pub(super) fn protects(&self, checkpoint: &str) -> bool {
        if self.queued.get(checkpoint).is_some_and(|&n| n > 0) {
            return true;
        }
        let holders = self.holders.get(checkpoint).copied().unwrap_or(0);
        self.wanted
            .get(checkpoint)
            .is_some_and(|&wanted| holders <= wanted)
    }

    fn placed(&mut self, checkpoint: &str) {
        if let Some(n) = self.queued.get_mut(checkpoint) {
            *n = n.saturating_sub(1);
        }
    }

    /// A node no longer holds `checkpoint`.
    fn unheld(&mut self, checkpoint: &str) {
        if let Some(n) = self.holders.get_mut(checkpoint) {
            *n = n.saturating_sub(1);
        }
    }

    /// One more node holds `checkpoint`.
    fn held(&mut self, checkpoint: &'s str) {
        *self.holders.entry(checkpoint).or_default() += 1;
    }
}

/// Plans one round for `policy`; see the module documentation.
pub(super) fn plan_round(
    policy: &mut ExpectedFinish,
    snapshot: &Snapshot,
    rng: &mut dyn RngCore,
) -> Plan {
    let mut walk = Walk::new(policy, snapshot);
    let mut slots_left = walk.slots_left();
    let mut free: Vec<(f64, usize)> = Vec::new();
    let mut head = 0;
    while head < walk.jobs.len() && slots_left > 0 {
        if let Some(due) = walk.rewind.take() {
            head = head.min(due);
        }
        // A job held earlier in this round keeps waiting when the walk comes back past it.
        if walk.placed[head] || walk.held[head] {
            head += 1;
            continue;
        }
        let job = &walk.jobs[head];
        let eligible = &walk.lists[walk.list_of[head]];
        free.clear();
        free.extend(
            eligible
                .iter()
                .filter(|&&i| walk.round.free_slots(i) > 0 && !walk.unproven_and_busy(i))
                .map(|&i| {
                    let secs =
                        policy.estimate(job, i, &walk.round, walk.held_cost[i], &walk.demand);
                    (secs, i)
                }),
        );
        if free.is_empty() {
            head += 1;
            continue;
        }
        // Estimates are finite (validated settings, positive speeds); total_cmp keeps the order
        // total anyway, and the node index (name order) breaks ties.
        free.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let due = policy.is_due(&job.id);

        // A job held in its last allowed round becomes due only for the next round; this round
        // it has declined the free nodes, so nothing behind it overtakes it meanwhile.
        let may_hold = !due && policy.holds_of(&job.id) < policy.config.max_holds;
        // NOTE: this scores the job against every full node it could use, so a round costs
        // the window's length times the fleet's size (35 ms for 848 jobs on 1,000 mostly full
        // nodes, `plan_timing`); the coordinator spaces rounds by their cost to bound it. A
        // floor on each node's finish does not prune this in practice: a busy node with the
        // job's checkpoint in VRAM often beats a free one that must load it.
        if may_hold && policy.config.hold_ratio > 0.0 {
            let busy = eligible
                .iter()
                .filter(|&&i| walk.round.free_slots(i) == 0)
                .map(|&i| {
                    let secs =
                        policy.estimate(job, i, &walk.round, walk.held_cost[i], &walk.demand);
                    (secs, i)
                })
                .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            if let Some((secs, node)) = busy
                && secs < free[0].0 * policy.config.hold_ratio
            {
                *policy.holds.entry(job.id.clone()).or_default() += 1;
                walk.held[head] = true;
                walk.held_cost[node] = walk.held_cost[node].saturating_add(job.cost);
                head += 1;
                continue;
            }
        }

        let node = pick_near_best(policy, &free, rng);
        // Only a load that evicts is a switch; one that fits beside the resident checkpoints
        // costs its load time once, and the estimate already counted that.
        if !due
            && job.checkpoint.as_deref().is_some_and(|c| {
                walk.round
                    .evictions(node, c, job.vram_need)
                    .next()
                    .is_some()
            })
            && let Some(other) = walk.resident_match(policy, head, node)
        {
            walk.place(policy, other, node);
            slots_left -= 1;
            continue;
        }
        walk.place(policy, head, node);
        slots_left -= 1;
        head += 1;
    }

    walk.assigned.sort_unstable_by_key(|&(job, _)| job);
    Plan {
        assignments: walk
            .assigned
            .into_iter()
            .map(|(job, node)| Assignment {
                job: walk.jobs[job].id.clone(),
                node: snapshot.nodes()[node].id.clone(),
            })
            .collect(),
    }
}

/// Picks at random among the first `pick_among` scored candidates within `near_best_ratio` of
/// the best. `scored` is sorted and not empty.
fn pick_near_best(
    policy: &ExpectedFinish,
    scored: &[(f64, usize)],
    rng: &mut dyn RngCore,
) -> usize {
    let best = scored[0].0;
    let limit = best + best.abs() * policy.config.near_best_ratio;
    let near = scored
        .iter()
        .take(policy.config.pick_among)
        .take_while(|(secs, _)| *secs <= limit)
        .count()
        .max(1);
    let pick = if near > 1 {
        rng.random_range(0..near)
    } else {
        0
    };
    scored[pick].1
}
