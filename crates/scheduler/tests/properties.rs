//! Property tests of placement: for random fleets and queues, every policy's plan keeps the
//! invariants the coordinator relies on, and feasibility agrees with the filters.

mod support;

use std::collections::{HashMap, HashSet};

use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use scheduler::eligibility::{can_run_now, could_ever_run, is_available};
use scheduler::{
    Feasibility, JobId, NodeId, Plan, PolicyConfig, PolicyKind, QueueOrder, Snapshot, build_policy,
    feasibility,
};
use support::{fleet_strategy, oracle_can_run_now, queue_strategy};

fn order_strategy() -> impl Strategy<Value = QueueOrder> {
    prop_oneof![Just(QueueOrder::Arrival), Just(QueueOrder::FairShare)]
}

fn kind_strategy() -> impl Strategy<Value = PolicyKind> {
    proptest::sample::select(&PolicyKind::ALL[..])
}

/// Plans with a fresh policy of `kind` and an RNG seeded with `seed`.
fn plan_with(kind: PolicyKind, snapshot: &Snapshot, seed: u64) -> Plan {
    let config = PolicyConfig {
        kind,
        ..PolicyConfig::default()
    };
    let mut policy = build_policy(&config).expect("default settings are valid");
    policy.plan(snapshot, &mut StdRng::seed_from_u64(seed))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn plans_keep_every_invariant(
        nodes in fleet_strategy(10),
        jobs in queue_strategy(30),
        kind in kind_strategy(),
        order in order_strategy(),
        seed in any::<u64>(),
    ) {
        let snapshot = Snapshot::new(jobs, nodes, order).expect("generated names are distinct");
        let plan = plan_with(kind, &snapshot, seed);
        let job_by_id: HashMap<&JobId, usize> =
            snapshot.jobs().iter().enumerate().map(|(i, j)| (&j.id, i)).collect();
        let node_by_id: HashMap<&NodeId, usize> =
            snapshot.nodes().iter().enumerate().map(|(i, n)| (&n.id, i)).collect();

        // Each job at most once, each on a node that exists, is available and can run it.
        let mut placed = HashSet::new();
        let mut given: HashMap<usize, u32> = HashMap::new();
        for a in &plan.assignments {
            prop_assert!(placed.insert(&a.job), "{kind}: job {} placed twice", a.job);
            let job = &snapshot.jobs()[job_by_id[&a.job]];
            let n = node_by_id[&a.node];
            let node = &snapshot.nodes()[n];
            prop_assert!(is_available(node), "{kind}: {} placed on unavailable {}", job.id, node.id);
            prop_assert!(can_run_now(job, node), "{kind}: {} placed on unable {}", job.id, node.id);
            prop_assert!(
                oracle_can_run_now(job, node),
                "{kind}: {} placed on {}, which the independent check rejects", job.id, node.id
            );
            *given.entry(n).or_default() += 1;
        }

        // No node beyond its slots (running + pending + in flight + new <= limit).
        for (&n, &count) in &given {
            let node = &snapshot.nodes()[n];
            prop_assert!(
                count <= node.free_slots(),
                "{kind}: {} got {count} jobs with {} free slots", node.id, node.free_slots()
            );
        }

        // Assignments come in queue order.
        let positions: Vec<usize> = plan.assignments.iter().map(|a| job_by_id[&a.job]).collect();
        prop_assert!(positions.windows(2).all(|w| w[0] < w[1]), "{kind}: plan out of queue order");

        // Expected-finish reorders and holds on purpose, within its aging bound; that has its
        // own properties below.
        if kind == PolicyKind::ExpectedFinish {
            return Ok(());
        }

        // No head-of-line blocking and no idle capacity: a job left queued has no node that
        // could take it with a slot still free after the plan.
        let free_after = |n: usize| {
            snapshot.nodes()[n].free_slots().saturating_sub(given.get(&n).copied().unwrap_or(0))
        };
        for job in snapshot.jobs().iter().filter(|j| !placed.contains(&j.id)) {
            for (n, node) in snapshot.nodes().iter().enumerate() {
                prop_assert!(
                    !(free_after(n) > 0 && oracle_can_run_now(job, node)),
                    "{kind}: {} left queued while {} had a free slot for it", job.id, node.id
                );
            }
        }

        // Priority among competitors: a queued job never loses a node it could use to a job
        // behind it in the queue.
        for a in &plan.assignments {
            let later = job_by_id[&a.job];
            let node = &snapshot.nodes()[node_by_id[&a.node]];
            for earlier in snapshot.jobs()[..later].iter().filter(|j| !placed.contains(&j.id)) {
                prop_assert!(
                    !can_run_now(earlier, node),
                    "{kind}: {} took {} before {}, which is ahead and could run there",
                    a.job, node.id, earlier.id
                );
            }
        }
    }

    #[test]
    fn same_inputs_give_the_same_plan_whatever_their_order(
        nodes in fleet_strategy(10),
        jobs in queue_strategy(30),
        kind in kind_strategy(),
        order in order_strategy(),
        seed in any::<u64>(),
    ) {
        let snapshot = Snapshot::new(jobs.clone(), nodes.clone(), order).expect("distinct names");
        let reversed = Snapshot::new(
            jobs.into_iter().rev().collect(),
            nodes.into_iter().rev().collect(),
            order,
        )
        .expect("distinct names");
        let first = plan_with(kind, &snapshot, seed);
        prop_assert_eq!(&first, &plan_with(kind, &snapshot, seed), "{} is not deterministic", kind);
        prop_assert_eq!(&first, &plan_with(kind, &reversed, seed), "{} depends on input order", kind);
    }

    #[test]
    fn feasibility_agrees_with_the_filters(
        nodes in fleet_strategy(8),
        jobs in queue_strategy(6),
    ) {
        for job in &jobs {
            let capable: Vec<&NodeId> =
                nodes.iter().filter(|n| could_ever_run(job, n)).map(|n| &n.id).collect();
            let runnable_now = nodes.iter().any(|n| can_run_now(job, n));
            match feasibility(job, &nodes) {
                Feasibility::Runnable => prop_assert!(runnable_now, "{}: runnable but no node can", job.id),
                Feasibility::OnlyUnavailable { nodes: waiting } => {
                    prop_assert!(!runnable_now, "{}: an available node could run it", job.id);
                    let mut expected: Vec<NodeId> = capable.iter().map(|&id| id.clone()).collect();
                    expected.sort();
                    prop_assert_eq!(waiting, expected);
                }
                Feasibility::Infeasible(why) => {
                    prop_assert!(capable.is_empty(), "{}: infeasible but {:?} could run it", job.id, capable);
                    prop_assert_eq!(&why.job, &job.id);
                    // Whatever is called missing everywhere is missing on every known node.
                    for class in &why.classes_nowhere {
                        prop_assert!(nodes.iter().all(|n| n.inventory_known && !n.classes.contains(class)));
                    }
                    for model in &why.models_nowhere {
                        prop_assert!(nodes.iter().all(|n| n.inventory_known && !n.has_model(model)));
                    }
                    for (k, v) in &why.labels_nowhere {
                        prop_assert!(nodes.iter().all(|n| n.labels.get(k) != Some(v)));
                    }
                    if let Some((need, largest)) = why.vram_short {
                        prop_assert!(nodes.iter().all(|n| n.vram_total <= largest) && need > largest);
                    }
                    // Something concrete is always named.
                    prop_assert!(why.no_nodes || why.closest.as_ref().is_some_and(|c| !c.1.is_empty()));
                    // ... and the message, which leaves out what it has said once, too.
                    let text = why.to_string();
                    prop_assert!(text.contains("; ") || text.ends_with("the fleet has no nodes"), "{}", text);
                }
            }
        }
    }

    #[test]
    fn placed_jobs_are_runnable_by_feasibility(
        nodes in fleet_strategy(8),
        jobs in queue_strategy(20),
        kind in kind_strategy(),
    ) {
        let snapshot = Snapshot::new(jobs, nodes, QueueOrder::Arrival).expect("distinct names");
        let plan = plan_with(kind, &snapshot, 1);
        for a in &plan.assignments {
            let job = snapshot.jobs().iter().find(|j| j.id == a.job).expect("placed job is queued");
            prop_assert_eq!(feasibility(job, snapshot.nodes()), Feasibility::Runnable);
        }
    }
}
