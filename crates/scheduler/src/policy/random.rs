//! Random: a baseline that picks a uniformly random candidate with the caller's seeded RNG.
//!
//! Useful to measure how much the informed policies gain. Reproducible: the same RNG state
//! gives the same plan.

use rand::{Rng, RngCore};

use super::Policy;
use crate::plan::{Plan, greedy_plan};
use crate::snapshot::Snapshot;

/// Picks a uniformly random candidate.
#[derive(Debug, Clone, Copy, Default)]
pub struct Random;

impl Policy for Random {
    fn name(&self) -> &'static str {
        "random"
    }

    fn plan(&mut self, snapshot: &Snapshot, rng: &mut dyn RngCore) -> Plan {
        greedy_plan(snapshot, |_, candidates, _| {
            Some(rng.random_range(0..candidates.len()))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;
    use crate::snapshot::QueueOrder;
    use crate::view::{JobView, NodeView};

    fn nodes_of_plan(seed: u64) -> Vec<String> {
        let jobs = (0..8).map(|i| JobView::new(format!("j{i}"), i)).collect();
        let nodes = (0..8).map(|i| NodeView::new(format!("n{i}"))).collect();
        let snapshot = Snapshot::new(jobs, nodes, QueueOrder::Arrival).expect("valid snapshot");
        let plan = Random.plan(&snapshot, &mut StdRng::seed_from_u64(seed));
        plan.assignments.into_iter().map(|a| a.node.0).collect()
    }

    #[test]
    fn same_seed_same_plan_and_seeds_matter() {
        assert_eq!(nodes_of_plan(7), nodes_of_plan(7));
        let distinct: BTreeSet<Vec<String>> = (0..10).map(nodes_of_plan).collect();
        assert!(
            distinct.len() > 1,
            "different seeds must be able to give different plans"
        );
    }
}
