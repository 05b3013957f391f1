//! The greedy placement walk every policy shares, and the plan it produces.
//!
//! A round walks the queue once, in queue order. For each job it lists the candidate nodes
//! (available, able to run the job, with a free slot counting what this round already gave
//! them) and asks the policy to pick one. A job with no candidate is skipped, not waited on,
//! so it never blocks jobs behind it (no head-of-line blocking), while jobs competing for the
//! same node still get it in queue order because earlier jobs choose first. The walk stops once
//! every slot of the fleet is taken.
//!
//! Cost: jobs with the same requirements share one eligibility list (computed once per round)
//! and, once a requirement set finds no free node, later jobs with it are skipped after a hash
//! lookup, since slots only fill up during a round.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::eligibility::{can_run_now, is_available};
use crate::resident::{ResidentSet, Touch};
use crate::snapshot::Snapshot;
use crate::view::{JobId, JobView, ModelFile, NodeId, NodeView};

/// A node's learnt speed, if it is a usable number.
fn learnt_speed(node: &NodeView) -> Option<f64> {
    node.speed.filter(|s| s.is_finite() && *s > 0.0)
}

/// The median learnt speed among `nodes`, or [`DEFAULT_SPEED`](crate::DEFAULT_SPEED) when none
/// is measured.
fn unmeasured_speed(nodes: &[NodeView]) -> f64 {
    let mut speeds: Vec<f64> = nodes.iter().filter_map(learnt_speed).collect();
    if speeds.is_empty() {
        return crate::DEFAULT_SPEED;
    }
    speeds.sort_by(f64::total_cmp);
    let mid = speeds.len() / 2;
    if speeds.len() % 2 == 1 {
        speeds[mid]
    } else {
        (speeds[mid - 1] + speeds[mid]) / 2.0
    }
}

/// One decision: send this job to this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The job to dispatch.
    pub job: JobId,
    /// The node to dispatch it to.
    pub node: NodeId,
}

/// The outcome of one placement round: assignments in queue order. Jobs not listed stay
/// queued for a later round.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Assignments in the order their jobs appear in the queue.
    pub assignments: Vec<Assignment>,
}

impl Plan {
    /// Returns the node a job was assigned to, if any (a linear scan).
    pub fn node_of(&self, job: &JobId) -> Option<&NodeId> {
        self.assignments
            .iter()
            .find(|a| &a.job == job)
            .map(|a| &a.node)
    }
}

/// Node state during a round: the snapshot's numbers plus what this round already assigned.
///
/// Node indices are positions in [`Snapshot::nodes`] (name order).
#[derive(Debug)]
pub struct Round<'s> {
    nodes: &'s [NodeView],
    free: Vec<u32>,
    planned: Vec<u32>,
    planned_cost: Vec<u64>,
    /// Per node, the checkpoints expected in VRAM with their estimated sizes, least recently
    /// used first, counting this round's assignments.
    resident: Vec<ResidentSet<&'s str>>,
    /// Speed assumed for a node not measured yet (see [`Round::speed`]), worked out on first
    /// use: only expected-finish asks, and most rounds of a large fleet need no guess.
    unmeasured_speed: std::cell::OnceCell<f64>,
}

impl<'s> Round<'s> {
    pub(crate) fn new(snapshot: &'s Snapshot) -> Self {
        let nodes = snapshot.nodes();
        Self {
            unmeasured_speed: std::cell::OnceCell::new(),
            nodes,
            free: nodes
                .iter()
                .map(|n| if is_available(n) { n.free_slots() } else { 0 })
                .collect(),
            planned: vec![0; nodes.len()],
            planned_cost: vec![0; nodes.len()],
            resident: nodes.iter().map(|n| n.resident.borrowed()).collect(),
        }
    }

    /// Returns the node at `index`.
    pub fn node(&self, index: usize) -> &'s NodeView {
        &self.nodes[index]
    }

    /// Returns the speed to plan node `index` with, in cost units per second: its learnt
    /// speed, or for a node not measured yet the median learnt speed of the fleet (the
    /// constant [`DEFAULT_SPEED`](crate::DEFAULT_SPEED) while no node is measured).
    ///
    /// A new node is most likely a GPU like the ones already serving, and a guess from the
    /// fleet is in the unit and time scale the fleet actually runs at. A fixed guess that is
    /// too slow would keep the node from ever getting the one job that measures it; one too
    /// fast would have jobs wait for it. Either way the guess is short-lived: a node not
    /// measured takes one job at a time, and its first finished job replaces the guess.
    pub fn speed(&self, index: usize) -> f64 {
        learnt_speed(&self.nodes[index]).unwrap_or_else(|| {
            *self
                .unmeasured_speed
                .get_or_init(|| unmeasured_speed(self.nodes))
        })
    }

    /// Returns the node's load counting this round's assignments: running + pending + in
    /// flight + planned.
    pub fn load(&self, index: usize) -> u32 {
        self.nodes[index].load().saturating_add(self.planned[index])
    }

    /// Returns the node's free slots left in this round.
    pub fn free_slots(&self, index: usize) -> u32 {
        self.free[index]
    }

    /// Returns the node's estimated backlog in cost units, counting this round's assignments.
    pub fn backlog_cost(&self, index: usize) -> u64 {
        self.nodes[index]
            .backlog_cost
            .saturating_add(self.planned_cost[index])
    }

    /// Whether `checkpoint` is expected in VRAM once the node has run what it holds and what
    /// this round gave it.
    pub fn is_resident(&self, index: usize, checkpoint: &str) -> bool {
        self.resident[index].contains(checkpoint)
    }

    /// The checkpoints expected in VRAM on the node, least recently used first.
    pub fn residents(&self, index: usize) -> impl Iterator<Item = &'s str> + '_ {
        self.resident[index].iter().map(|m| m.checkpoint)
    }

    /// The checkpoints a load of `checkpoint` by a job needing `vram` bytes would push out of
    /// the node's VRAM, least recently used first; none when it is already resident.
    pub fn evictions(
        &self,
        index: usize,
        checkpoint: &str,
        vram: u64,
    ) -> impl Iterator<Item = &'s str> + '_ {
        self.resident[index]
            .evictions(checkpoint, vram, self.nodes[index].vram_total)
            .copied()
    }

    /// Assigns `job` to the node; returns what its checkpoint load does to the node's VRAM
    /// (`None` for a job that loads no checkpoint).
    pub(crate) fn assign(&mut self, index: usize, job: &'s JobView) -> Option<Touch<&'s str>> {
        debug_assert!(
            self.free[index] > 0,
            "a node must have a free slot to be assigned a job"
        );
        self.free[index] -= 1;
        self.planned[index] += 1;
        self.planned_cost[index] = self.planned_cost[index].saturating_add(job.cost);
        let checkpoint = job.checkpoint.as_deref()?;
        Some(self.resident[index].touch(checkpoint, job.vram_need, self.nodes[index].vram_total))
    }
}

/// Jobs with equal requirements can run on exactly the same nodes.
type Requirements<'s> = (
    &'s BTreeMap<String, String>,
    &'s BTreeSet<String>,
    &'s BTreeSet<ModelFile>,
    u64,
);

/// Walks the queue of `snapshot` once and assigns each job to the candidate `choose` picks.
///
/// `choose(job, candidates, round)` gets the indices of the job's candidate nodes (in name
/// order, never empty) and returns a *position in that slice*, or `None` to leave the job
/// queued. A position out of range also leaves the job queued, so a policy bug cannot place a
/// job on an ineligible or full node.
pub fn greedy_plan<'s, F>(snapshot: &'s Snapshot, mut choose: F) -> Plan
where
    F: FnMut(&'s JobView, &[usize], &Round<'s>) -> Option<usize>,
{
    let mut round = Round::new(snapshot);
    let mut slots_left: u64 = round.free.iter().map(|&f| u64::from(f)).sum();
    let mut eligible_by_requirements: HashMap<Requirements<'s>, Vec<usize>> = HashMap::new();
    let mut candidates = Vec::new();
    let mut plan = Plan::default();

    for job in snapshot.jobs() {
        if slots_left == 0 {
            break;
        }

        // Nodes that can run this job and still have a slot. Dropping full nodes from the
        // shared list keeps later lookups short; an empty list stays empty for the round.
        let key = (
            &job.required_labels,
            &*job.required_classes,
            &*job.required_models,
            job.vram_need,
        );
        let eligible = eligible_by_requirements.entry(key).or_insert_with(|| {
            (0..snapshot.nodes().len())
                .filter(|&i| round.free[i] > 0 && can_run_now(job, &snapshot.nodes()[i]))
                .collect()
        });
        eligible.retain(|&i| round.free[i] > 0);
        if eligible.is_empty() {
            continue;
        }
        candidates.clear();
        candidates.extend_from_slice(eligible);

        // NOTE: the choice is greedy per job. A flexible job early in the queue may take the
        // only node a pickier job behind it could use, leaving that job waiting for the next
        // free slot even though another node would have suited the first. Solving the round as
        // a matching would avoid it at a much higher cost; with late binding and short rounds
        // the pickier job only waits for the next slot on its node.
        let Some(&node) = choose(job, &candidates, &round).and_then(|pos| candidates.get(pos))
        else {
            continue;
        };
        round.assign(node, job);
        slots_left -= 1;
        plan.assignments.push(Assignment {
            job: job.id.clone(),
            node: snapshot.nodes()[node].id.clone(),
        });
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::QueueOrder;
    use std::sync::Arc;

    fn snapshot_for_test(jobs: Vec<JobView>, nodes: Vec<NodeView>) -> Snapshot {
        Snapshot::new(jobs, nodes, QueueOrder::Arrival).expect("valid snapshot")
    }

    fn first(_: &JobView, _: &[usize], _: &Round<'_>) -> Option<usize> {
        Some(0)
    }

    #[test]
    fn an_unmeasured_node_is_planned_at_the_median_learnt_speed() {
        let node = |name: &str, speed: Option<f64>| {
            let mut node = NodeView::new(name);
            node.speed = speed;
            node
        };
        let speeds = |nodes: Vec<NodeView>| {
            let snapshot = snapshot_for_test(Vec::new(), nodes);
            let round = Round::new(&snapshot);
            (0..snapshot.nodes().len())
                .map(|i| round.speed(i))
                .collect::<Vec<_>>()
        };
        // Nothing measured: the constant, in cost units per second.
        assert_eq!(
            speeds(vec![node("a", None), node("b", Some(f64::NAN))]),
            [crate::DEFAULT_SPEED; 2]
        );
        // Odd count: the middle one; unusable speeds are not counted.
        assert_eq!(
            speeds(vec![
                node("a", Some(30.0)),
                node("b", Some(10.0)),
                node("c", Some(0.0)),
                node("d", Some(20.0)),
                node("e", None),
            ]),
            [30.0, 10.0, 20.0, 20.0, 20.0]
        );
        // Even count: halfway between the middle two.
        assert_eq!(
            speeds(vec![
                node("a", Some(10.0)),
                node("b", Some(40.0)),
                node("c", None),
            ]),
            [10.0, 40.0, 25.0]
        );
    }

    #[test]
    fn job_that_fits_nowhere_does_not_block_the_jobs_behind_it() {
        let mut picky = JobView::new("picky", 1);
        Arc::make_mut(&mut picky.required_classes).insert("Exotic".into());
        picky.priority = 10;
        let plain = JobView::new("plain", 2);
        let snapshot = snapshot_for_test(vec![picky, plain], vec![NodeView::new("a")]);

        let plan = greedy_plan(&snapshot, first);
        assert_eq!(
            plan.assignments,
            vec![Assignment {
                job: "plain".into(),
                node: "a".into()
            }]
        );
    }

    #[test]
    fn slots_count_probe_load_in_flight_and_this_round() {
        let mut node = NodeView::new("a");
        node.slot_limit = 3;
        node.queue_running = 1;
        node.in_flight = 1;
        let jobs = (0..5).map(|i| JobView::new(format!("j{i}"), i)).collect();
        let plan = greedy_plan(&snapshot_for_test(jobs, vec![node]), first);
        assert_eq!(plan.assignments.len(), 1, "3 slots minus 2 held leaves one");
        assert_eq!(
            plan.assignments[0].job,
            JobId::from("j0"),
            "the oldest job goes first"
        );
    }

    #[test]
    fn out_of_range_choice_leaves_the_job_queued() {
        let snapshot = snapshot_for_test(vec![JobView::new("j", 1)], vec![NodeView::new("a")]);
        let plan = greedy_plan(&snapshot, |_, candidates, _| Some(candidates.len()));
        assert!(plan.assignments.is_empty());
    }

    #[test]
    fn round_tracks_planned_cost_and_resident_models() {
        let mut job = JobView::new("j", 1);
        job.cost = 500;
        job.checkpoint = Some("xl".into());
        let mut node = NodeView::new("a");
        node.backlog_cost = 100;
        let snapshot = snapshot_for_test(vec![job, JobView::new("k", 2)], vec![node]);
        let mut seen = Vec::new();
        greedy_plan(&snapshot, |job, candidates, round| {
            seen.push((
                job.id.0.clone(),
                round.backlog_cost(candidates[0]),
                round.residents(0).collect::<Vec<_>>(),
            ));
            Some(0)
        });
        assert_eq!(
            seen,
            vec![("j".into(), 100, vec![]), ("k".into(), 600, vec!["xl"])]
        );
    }

    #[test]
    fn round_predicts_which_checkpoints_a_load_evicts() {
        const GIB: u64 = 1 << 30;
        let mut node = NodeView::new("a");
        node.vram_total = 24 * GIB;
        node.resident = [("sd15", 2 * GIB), ("xl", 8 * GIB)]
            .into_iter()
            .map(|(c, vram)| crate::view::Resident {
                checkpoint: c.into(),
                vram,
            })
            .collect();
        let mut flux = JobView::new("f", 1);
        flux.checkpoint = Some("flux".into());
        flux.vram_need = 13 * GIB;
        let mut big = JobView::new("b", 2);
        big.checkpoint = Some("big".into());
        big.vram_need = 20 * GIB;
        let snapshot = snapshot_for_test(vec![flux, big], vec![node]);
        let mut seen = Vec::new();
        greedy_plan(&snapshot, |job, _, round| {
            let ckpt = job.checkpoint.as_deref().unwrap();
            seen.push((
                round.evictions(0, ckpt, job.vram_need).collect::<Vec<_>>(),
                round.evictions(0, "sd15", 1).count(),
                round.residents(0).collect::<Vec<_>>(),
            ));
            Some(0)
        });
        assert_eq!(
            seen,
            vec![
                // 2 + 8 + 13 fits in 24 GiB; sd15 is already resident.
                (vec![], 0, vec!["sd15", "xl"]),
                // 20 GiB leaves room for nothing else.
                (vec!["sd15", "xl", "flux"], 0, vec!["sd15", "xl", "flux"]),
            ]
        );
    }
}
