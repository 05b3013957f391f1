//! Least-loaded with model affinity: prefer a node that already holds the job's checkpoint.
//!
//! Loading a checkpoint into VRAM costs seconds to a minute, so a node that just ran the same
//! checkpoint is worth a slightly longer queue. A node without the job's checkpoint counts as
//! carrying `miss_penalty` extra prompts; ties go to the node with the checkpoint, then most
//! free VRAM, then name. The "resident" checkpoint is the one of the last job the node ran or
//! was given this round, so consecutive jobs of one model gather on the same nodes.

use std::cmp::Reverse;

use rand::RngCore;

use super::Policy;
use crate::plan::{Plan, greedy_plan};
use crate::snapshot::Snapshot;

/// Least-loaded, with nodes lacking the job's checkpoint counted as more loaded.
#[derive(Debug, Clone, Copy)]
pub struct LeastLoadedAffinity {
    miss_penalty: u32,
}

impl LeastLoadedAffinity {
    /// Default extra load for a node without the job's checkpoint.
    pub const DEFAULT_MISS_PENALTY: u32 = 1;

    /// Creates the policy; `miss_penalty` is the extra load charged to a node whose resident
    /// checkpoint differs from the job's (0 reduces it to least-loaded with an affinity
    /// tie-break).
    pub fn new(miss_penalty: u32) -> Self {
        Self { miss_penalty }
    }
}

impl Default for LeastLoadedAffinity {
    fn default() -> Self {
        Self::new(Self::DEFAULT_MISS_PENALTY)
    }
}

impl Policy for LeastLoadedAffinity {
    fn name(&self) -> &'static str {
        "least-loaded-affinity"
    }

    fn plan(&mut self, snapshot: &Snapshot, _rng: &mut dyn RngCore) -> Plan {
        let penalty = self.miss_penalty;
        greedy_plan(snapshot, |job, candidates, round| {
            candidates
                .iter()
                .enumerate()
                .min_by_key(|&(pos, &i)| {
                    // A job without a checkpoint loses nothing anywhere.
                    let miss = job
                        .checkpoint
                        .as_deref()
                        .is_some_and(|c| !round.is_resident(i, c));
                    let score = round.load(i).saturating_add(if miss { penalty } else { 0 });
                    (score, miss, Reverse(round.node(i).vram_free), pos)
                })
                .map(|(pos, _)| pos)
        })
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;
    use crate::snapshot::QueueOrder;
    use crate::view::{JobView, NodeView};

    fn node_for_test(name: &str, running: u32, resident: Option<&str>) -> NodeView {
        let mut node = NodeView::new(name);
        node.queue_running = running;
        if let Some(checkpoint) = resident {
            node.resident.touch(checkpoint, 0, 0);
        }
        node.slot_limit = 4;
        node
    }

    fn job_for_test(id: &str, arrival: u64, checkpoint: &str) -> JobView {
        let mut job = JobView::new(id, arrival);
        job.checkpoint = Some(checkpoint.to_owned());
        job
    }

    fn plan_for_test(
        policy: LeastLoadedAffinity,
        jobs: Vec<JobView>,
        nodes: Vec<NodeView>,
    ) -> Vec<String> {
        let snapshot = Snapshot::new(jobs, nodes, QueueOrder::Arrival).expect("valid snapshot");
        let plan = { policy }.plan(&snapshot, &mut StdRng::seed_from_u64(0));
        plan.assignments.into_iter().map(|a| a.node.0).collect()
    }

    #[test]
    fn prefers_the_node_holding_the_checkpoint_over_a_slightly_emptier_one() {
        let nodes = vec![
            node_for_test("a", 0, Some("sd15")),
            node_for_test("b", 1, Some("xl")),
        ];
        let jobs = vec![job_for_test("j", 1, "xl")];
        assert_eq!(
            plan_for_test(LeastLoadedAffinity::default(), jobs, nodes),
            ["b"]
        );
    }

    #[test]
    fn load_still_wins_beyond_the_penalty() {
        let nodes = vec![
            node_for_test("a", 0, Some("sd15")),
            node_for_test("b", 3, Some("xl")),
        ];
        let jobs = vec![job_for_test("j", 1, "xl")];
        assert_eq!(
            plan_for_test(LeastLoadedAffinity::default(), jobs, nodes),
            ["a"]
        );
    }

    #[test]
    fn jobs_of_one_model_gather_on_the_node_that_loaded_it() {
        let nodes = vec![node_for_test("a", 0, None), node_for_test("b", 0, None)];
        let jobs = vec![
            job_for_test("x1", 1, "xl"),
            job_for_test("s1", 2, "sd15"),
            job_for_test("x2", 3, "xl"),
            job_for_test("s2", 4, "sd15"),
        ];
        assert_eq!(
            plan_for_test(LeastLoadedAffinity::default(), jobs, nodes),
            ["a", "b", "a", "b"]
        );
    }
}
