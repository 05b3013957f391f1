//! Property tests of expected-finish's queue reordering: node-side checkpoint selection and
//! holding may let a job wait, but every such wait is counted and bounded (no starvation).
//! A job passed on a node it declined (it was held for a faster busy one) counts as held, not
//! overtaken; held rounds have their own bound.

mod support;

use std::collections::HashMap;

use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use scheduler::eligibility::is_available;
use scheduler::{
    ExpectedFinish, ExpectedFinishConfig, Health, JobId, NodeView, Policy, QueueOrder, Snapshot,
};
use support::{fleet_strategy, oracle_can_run_now, queue_strategy};

fn config_strategy() -> impl Strategy<Value = ExpectedFinishConfig> {
    (
        1_u32..=4,
        0_usize..=6,
        prop_oneof![Just(0.0), 0.5_f64..=1.0],
        1_usize..=3,
        1_u32..=4,
    )
        .prop_map(|(max_skips, window, hold_ratio, pick_among, max_holds)| {
            ExpectedFinishConfig {
                max_skips,
                max_holds,
                window,
                hold_ratio,
                pick_among,
                model_load_secs: 2.0,
                thrash_penalty_secs: 3.0,
                ..ExpectedFinishConfig::default()
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// In one round, a job kept waiting while a node it could use had a free slot, or passed
    /// by a later job on such a node, has that recorded against the aging bound.
    #[test]
    fn every_wait_it_imposes_is_counted(
        nodes in fleet_strategy(8),
        jobs in queue_strategy(25),
        config in config_strategy(),
        seed in any::<u64>(),
    ) {
        let snapshot = Snapshot::new(jobs, nodes, QueueOrder::Arrival).expect("distinct names");
        let mut policy = ExpectedFinish::new(config.clone()).expect("valid settings");
        let plan = policy.plan(&snapshot, &mut StdRng::seed_from_u64(seed));
        let node_of: HashMap<&JobId, &scheduler::NodeId> =
            plan.assignments.iter().map(|a| (&a.job, &a.node)).collect();
        let mut given: HashMap<&scheduler::NodeId, u32> = HashMap::new();
        for a in &plan.assignments {
            *given.entry(&a.node).or_default() += 1;
        }
        for (q, job) in snapshot.jobs().iter().enumerate() {
            prop_assert!(policy.skips_of(&job.id) <= config.max_skips, "{} over the bound", job.id);
            prop_assert!(policy.holds_of(&job.id) <= config.max_holds, "{} held too often", job.id);
            if node_of.contains_key(&job.id) {
                continue;
            }
            // A node of unknown speed takes one job at a time under this policy, so its
            // second slot is not idle for anyone until it has finished a job.
            let idle_for_it = snapshot.nodes().iter().any(|n| {
                let given = given.get(&n.id).copied().unwrap_or(0);
                let unproven_and_busy = n.speed.is_none() && n.load() + given > 0;
                is_available(n)
                    && n.free_slots() > given
                    && !unproven_and_busy
                    && oracle_can_run_now(job, n)
            });
            let passed = snapshot.jobs()[q + 1..].iter().any(|later| {
                node_of.get(&later.id).is_some_and(|node| {
                    let node = snapshot.nodes().iter().find(|n| &n.id == *node).expect("known node");
                    oracle_can_run_now(job, node)
                })
            });
            if idle_for_it || passed {
                prop_assert!(
                    policy.skips_of(&job.id) + policy.holds_of(&job.id) >= 1,
                    "{} waited (idle slot {idle_for_it}, passed {passed}) without being counted",
                    job.id
                );
            }
        }
    }

    /// Over many rounds on a fleet whose nodes free up in turns, no job is passed on a node it
    /// could use more than `max_skips` times in rounds where it was not held, no job is held in
    /// more than `max_holds` rounds, and every runnable job is eventually placed.
    #[test]
    fn no_job_starves(
        nodes in fleet_strategy(5),
        jobs in queue_strategy(25),
        config in config_strategy(),
        seed in any::<u64>(),
    ) {
        let mut nodes: Vec<NodeView> = nodes
            .into_iter()
            .map(|mut n| {
                n.health = Health::Up;
                n.draining = false;
                n.inventory_known = true;
                n.slot_limit = n.slot_limit.clamp(1, 2);
                n
            })
            .collect();
        let mut queue: Vec<_> = jobs
            .into_iter()
            .filter(|j| nodes.iter().any(|n| oracle_can_run_now(j, n)))
            .collect();
        let mut policy = ExpectedFinish::new(config.clone()).expect("valid settings");
        let mut rng = StdRng::seed_from_u64(seed);
        let mut passed: HashMap<JobId, u32> = HashMap::new();
        let mut holds: HashMap<JobId, u32> = HashMap::new();
        let rounds = 40 * (queue.len() + 1);
        for round in 0..rounds {
            if queue.is_empty() {
                break;
            }
            // Every third round a node is full; otherwise it has all its slots free.
            for (i, node) in nodes.iter_mut().enumerate() {
                let full = (i + round) % 3 == 0;
                node.queue_running = if full { node.slot_limit } else { 0 };
                node.queue_pending = 0;
                node.in_flight = 0;
            }
            let snapshot = Snapshot::new(queue.clone(), nodes.clone(), QueueOrder::Arrival)
                .expect("distinct names");
            let plan = policy.plan(&snapshot, &mut rng);
            let node_of: HashMap<&JobId, &scheduler::NodeId> =
                plan.assignments.iter().map(|a| (&a.job, &a.node)).collect();
            let ordered = snapshot.jobs();
            for (q, job) in ordered.iter().enumerate() {
                let held_now = policy.holds_of(&job.id) > *holds.get(&job.id).unwrap_or(&0);
                holds.insert(job.id.clone(), policy.holds_of(&job.id));
                if held_now {
                    prop_assert!(!node_of.contains_key(&job.id), "{} held and placed", job.id);
                    prop_assert!(policy.holds_of(&job.id) <= config.max_holds);
                    continue;
                }
                if node_of.contains_key(&job.id) {
                    continue;
                }
                for later in &ordered[q + 1..] {
                    if let Some(&node) = node_of.get(&later.id) {
                        let node = nodes.iter().find(|n| &n.id == node).expect("known node");
                        if oracle_can_run_now(job, node) {
                            *passed.entry(job.id.clone()).or_default() += 1;
                        }
                    }
                }
            }
            for a in &plan.assignments {
                let job = ordered.iter().find(|j| j.id == a.job).expect("queued job");
                let node = nodes.iter_mut().find(|n| n.id == a.node).expect("known node");
                if let Some(checkpoint) = job.checkpoint.as_deref() {
                    node.resident.touch(checkpoint, job.vram_need, node.vram_total);
                }
            }
            queue.retain(|j| !node_of.contains_key(&j.id));
        }
        for (job, count) in &passed {
            prop_assert!(*count <= config.max_skips, "{job} passed {count} times, bound {}", config.max_skips);
        }
        prop_assert!(queue.is_empty(), "jobs never placed: {:?}", queue.iter().map(|j| &j.id).collect::<Vec<_>>());
    }
}
