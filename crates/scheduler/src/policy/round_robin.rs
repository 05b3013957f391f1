//! Round-robin: a baseline that hands jobs to nodes in turn, ignoring load.
//!
//! The cursor is the name of the last node given a job, not an index, so nodes joining or
//! leaving the fleet between rounds do not make it skip or repeat others. Each job goes to the
//! first candidate whose name comes after the cursor, wrapping around.

use rand::RngCore;

use super::Policy;
use crate::plan::{Plan, greedy_plan};
use crate::snapshot::Snapshot;
use crate::view::NodeId;

/// Gives each job to the next candidate after the last node used, in name order.
#[derive(Debug, Clone, Default)]
pub struct RoundRobin {
    last: Option<NodeId>,
}

impl Policy for RoundRobin {
    fn name(&self) -> &'static str {
        "round-robin"
    }

    fn plan(&mut self, snapshot: &Snapshot, _rng: &mut dyn RngCore) -> Plan {
        let last = &mut self.last;
        greedy_plan(snapshot, |_, candidates, round| {
            let pos = last
                .as_ref()
                .and_then(|l| candidates.iter().position(|&i| &round.node(i).id > l))
                .unwrap_or(0);
            *last = Some(round.node(candidates[pos]).id.clone());
            Some(pos)
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

    fn plan_for_test(policy: &mut RoundRobin, num_jobs: u64, names: &[&str]) -> Vec<String> {
        let jobs = (0..num_jobs)
            .map(|i| JobView::new(format!("j{i}"), i))
            .collect();
        let nodes = names.iter().map(|n| NodeView::new(*n)).collect();
        let snapshot = Snapshot::new(jobs, nodes, QueueOrder::Arrival).expect("valid snapshot");
        let plan = policy.plan(&snapshot, &mut StdRng::seed_from_u64(0));
        plan.assignments.into_iter().map(|a| a.node.0).collect()
    }

    #[test]
    fn turns_continue_across_rounds() {
        let mut policy = RoundRobin::default();
        assert_eq!(plan_for_test(&mut policy, 1, &["a", "b", "c"]), ["a"]);
        assert_eq!(plan_for_test(&mut policy, 1, &["a", "b", "c"]), ["b"]);
        assert_eq!(
            plan_for_test(&mut policy, 3, &["a", "b", "c"]),
            ["c", "a", "b"]
        );
    }

    #[test]
    fn a_vanished_cursor_node_does_not_reset_the_turn() {
        let mut policy = RoundRobin::default();
        assert_eq!(plan_for_test(&mut policy, 2, &["a", "b", "c"]), ["a", "b"]);
        assert_eq!(
            plan_for_test(&mut policy, 1, &["a", "c"]),
            ["c"],
            "b left; c is next"
        );
    }
}
