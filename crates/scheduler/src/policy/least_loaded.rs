//! Least-loaded: send each job to the candidate holding the fewest prompts.
//!
//! Load is running + pending (from the last probe) + our prompts in flight + what this round
//! already assigned, so a burst spreads across the fleet instead of piling onto the node that
//! looked idle at the last probe. Ties go to the node with the most free VRAM (fewer evictions),
//! then to the first name, which makes the plan deterministic without any randomness.

use rand::RngCore;

use super::{Policy, least_loaded_position};
use crate::plan::{Plan, greedy_plan};
use crate::snapshot::Snapshot;

/// Picks the candidate with the smallest load; ties to most free VRAM, then name.
#[derive(Debug, Clone, Copy, Default)]
pub struct LeastLoaded;

impl Policy for LeastLoaded {
    fn name(&self) -> &'static str {
        "least-loaded"
    }

    fn plan(&mut self, snapshot: &Snapshot, _rng: &mut dyn RngCore) -> Plan {
        greedy_plan(snapshot, |_, candidates, round| {
            least_loaded_position(candidates, round)
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

    fn node_for_test(name: &str, running: u32, vram_free: u64) -> NodeView {
        let mut node = NodeView::new(name);
        node.queue_running = running;
        node.vram_free = vram_free;
        node.slot_limit = 4;
        node
    }

    fn assigned_nodes(nodes: Vec<NodeView>, num_jobs: u64) -> Vec<String> {
        let jobs = (0..num_jobs)
            .map(|i| JobView::new(format!("j{i}"), i))
            .collect();
        let snapshot = Snapshot::new(jobs, nodes, QueueOrder::Arrival).expect("valid snapshot");
        let plan = LeastLoaded.plan(&snapshot, &mut StdRng::seed_from_u64(0));
        plan.assignments.into_iter().map(|a| a.node.0).collect()
    }

    #[test]
    fn goes_to_the_node_with_fewest_prompts() {
        let nodes = vec![
            node_for_test("a", 2, 0),
            node_for_test("b", 0, 0),
            node_for_test("c", 1, 0),
        ];
        assert_eq!(assigned_nodes(nodes, 1), ["b"]);
    }

    #[test]
    fn ties_go_to_most_free_vram_then_name() {
        let nodes = vec![
            node_for_test("a", 0, 1),
            node_for_test("b", 0, 9),
            node_for_test("c", 0, 9),
        ];
        assert_eq!(assigned_nodes(nodes, 1), ["b"]);
    }

    #[test]
    fn a_burst_spreads_over_the_fleet() {
        let nodes = vec![node_for_test("a", 0, 0), node_for_test("b", 0, 0)];
        assert_eq!(assigned_nodes(nodes, 4), ["a", "b", "a", "b"]);
    }
}
