//! Unit tests of the expected-finish rules: estimates, node-side selection, holding, aging.

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::*;
use crate::policy::Policy;
use crate::snapshot::QueueOrder;
use crate::view::NodeView;
use std::sync::Arc;

fn node_for_test(name: &str, speed: f64, backlog: u64, resident: Option<&str>) -> NodeView {
    let mut node = NodeView::new(name);
    node.speed = Some(speed);
    node.backlog_cost = backlog;
    if let Some(checkpoint) = resident {
        node.resident.touch(checkpoint, 0, 0);
    }
    node.slot_limit = 4;
    node
}

/// A one-slot node at 100 units/s, busy with 100 units, and a free node at `slow_speed`.
fn busy_fast_and_free_slow(slow_speed: f64) -> Vec<NodeView> {
    let mut fast = node_for_test("fast", 100.0, 100, None);
    fast.slot_limit = 1;
    fast.queue_running = 1;
    vec![fast, node_for_test("slow", slow_speed, 0, None)]
}

fn job_for_test(id: &str, arrival: u64, cost: u64, checkpoint: Option<&str>) -> JobView {
    let mut job = JobView::new(id, arrival);
    job.cost = cost;
    job.checkpoint = checkpoint.map(str::to_owned);
    job
}

fn deterministic() -> ExpectedFinish {
    let config = ExpectedFinishConfig {
        pick_among: 1,
        ..ExpectedFinishConfig::default()
    };
    ExpectedFinish::new(config).expect("valid settings")
}

fn plan_for_test(
    mut policy: ExpectedFinish,
    jobs: Vec<JobView>,
    nodes: Vec<NodeView>,
    seed: u64,
) -> Vec<String> {
    let snapshot = Snapshot::new(jobs, nodes, QueueOrder::Arrival).expect("valid snapshot");
    let plan = policy.plan(&snapshot, &mut StdRng::seed_from_u64(seed));
    plan.assignments.into_iter().map(|a| a.node.0).collect()
}

#[test]
fn a_fast_busy_gpu_beats_a_slow_idle_one() {
    // Fast: (100 + 100) / 100 = 2 s. Slow: 100 / 10 = 10 s.
    let nodes = vec![
        node_for_test("fast", 100.0, 100, None),
        node_for_test("slow", 10.0, 0, None),
    ];
    let jobs = vec![job_for_test("j", 1, 100, None)];
    assert_eq!(plan_for_test(deterministic(), jobs, nodes, 0), ["fast"]);
}

#[test]
fn model_load_penalty_sends_the_job_to_the_node_holding_its_checkpoint() {
    // a: 1 s + 20 s load. b: 5 s, checkpoint resident.
    let nodes = vec![
        node_for_test("a", 100.0, 0, None),
        node_for_test("b", 100.0, 400, Some("xl")),
    ];
    let jobs = vec![job_for_test("j", 1, 100, Some("xl"))];
    assert_eq!(plan_for_test(deterministic(), jobs, nodes, 0), ["b"]);
}

#[test]
fn does_not_evict_a_checkpoint_other_queued_jobs_still_need() {
    // Without the thrash penalty, j would go to idle b (1 s + 20 s load) rather than busy
    // a (11 s + 20 s); evicting sd15, which "later" still needs, costs b 40 s more.
    let a = node_for_test("a", 100.0, 1_000, Some("old"));
    let mut b = node_for_test("b", 100.0, 0, Some("sd15"));
    Arc::make_mut(&mut b.classes).insert("OnlyOnB".into());
    let mut wants_sd15 = job_for_test("later", 2, 100, Some("sd15"));
    Arc::make_mut(&mut wants_sd15.required_classes).insert("OnlyOnB".into());
    let nodes = vec![a, b];
    let jobs = vec![job_for_test("j", 1, 100, Some("xl")), wants_sd15];
    assert_eq!(plan_for_test(deterministic(), jobs, nodes, 0), ["a", "b"]);
}

#[test]
fn near_ties_are_broken_by_the_seeded_rng() {
    let nodes: Vec<NodeView> = (0..4)
        .map(|i| node_for_test(&format!("n{i}"), 100.0, 0, None))
        .collect();
    let picks: std::collections::BTreeSet<Vec<String>> = (0..16)
        .map(|seed| {
            plan_for_test(
                ExpectedFinish::default(),
                vec![job_for_test("j", 1, 100, None)],
                nodes.clone(),
                seed,
            )
        })
        .collect();
    assert_eq!(
        picks,
        [vec!["n0".to_owned()], vec!["n1".to_owned()]]
            .into_iter()
            .collect(),
        "equal estimates: the two best (by name) must both be picked for some seed"
    );
}

#[test]
fn rejects_impossible_settings() {
    for config in [
        ExpectedFinishConfig {
            model_load_secs: -1.0,
            ..ExpectedFinishConfig::default()
        },
        ExpectedFinishConfig {
            near_best_ratio: f64::NAN,
            ..ExpectedFinishConfig::default()
        },
        ExpectedFinishConfig {
            pick_among: 0,
            ..ExpectedFinishConfig::default()
        },
    ] {
        let err = ExpectedFinish::new(config).expect_err("setting out of range");
        assert!(
            err.to_string()
                .starts_with("policy expected-finish: setting "),
            "{err}"
        );
    }
}

/// Plans one round with `policy` and returns (job, node) pairs in queue order.
fn pairs(
    policy: &mut ExpectedFinish,
    jobs: Vec<JobView>,
    nodes: Vec<NodeView>,
) -> Vec<(String, String)> {
    let snapshot = Snapshot::new(jobs, nodes, QueueOrder::Arrival).expect("valid snapshot");
    let plan = policy.plan(&snapshot, &mut StdRng::seed_from_u64(7));
    plan.assignments
        .into_iter()
        .map(|a| (a.job.0, a.node.0))
        .collect()
}

fn with(config: ExpectedFinishConfig) -> ExpectedFinish {
    ExpectedFinish::new(ExpectedFinishConfig {
        pick_among: 1,
        ..config
    })
    .expect("valid settings")
}

fn one_slot(name: &str, resident: Option<&str>) -> NodeView {
    let mut node = node_for_test(name, 100.0, 0, resident);
    node.slot_limit = 1;
    node
}

fn pair(job: &str, node: &str) -> (String, String) {
    (job.to_owned(), node.to_owned())
}

#[test]
fn a_free_node_takes_the_queued_job_that_needs_its_resident_checkpoint() {
    let mut policy = deterministic();
    let jobs = vec![
        job_for_test("wants-y", 1, 100, Some("y")),
        job_for_test("wants-x", 2, 100, Some("x")),
    ];
    let placed = pairs(&mut policy, jobs, vec![one_slot("a", Some("x"))]);
    assert_eq!(placed, [pair("wants-x", "a")]);
    assert_eq!(
        policy.skips_of(&"wants-y".into()),
        1,
        "the head was overtaken once"
    );
    assert_eq!(policy.skips_of(&"wants-x".into()), 0);
}

#[test]
fn without_a_matching_job_the_head_switches_the_node() {
    let mut policy = deterministic();
    let jobs = vec![
        job_for_test("wants-y", 1, 100, Some("y")),
        job_for_test("wants-z", 2, 100, Some("z")),
    ];
    let placed = pairs(&mut policy, jobs, vec![one_slot("a", Some("x"))]);
    assert_eq!(placed, [pair("wants-y", "a")]);
}

#[test]
fn node_side_selection_looks_only_within_the_window() {
    let mut policy = with(ExpectedFinishConfig {
        window: 2,
        ..ExpectedFinishConfig::default()
    });
    let jobs = vec![
        job_for_test("wants-y", 1, 100, Some("y")),
        job_for_test("y2", 2, 100, Some("y")),
        job_for_test("y3", 3, 100, Some("y")),
        job_for_test("wants-x", 4, 100, Some("x")),
    ];
    let placed = pairs(&mut policy, jobs, vec![one_slot("a", Some("x"))]);
    assert_eq!(
        placed,
        [pair("wants-y", "a")],
        "wants-x is 3 places behind the head"
    );
}

#[test]
fn an_overtaken_job_is_placed_once_due_and_blocks_jumps_over_it() {
    let mut policy = with(ExpectedFinishConfig {
        max_skips: 2,
        ..ExpectedFinishConfig::default()
    });
    // Each round node a (resident x) frees one slot and a new x job is queued behind y.
    let mut winners = Vec::new();
    for round in 0..4_u64 {
        let jobs = vec![
            job_for_test("old-y", 0, 100, Some("y")),
            job_for_test(&format!("x{round}"), 10 + round, 100, Some("x")),
        ];
        let placed = pairs(&mut policy, jobs, vec![one_slot("a", Some("x"))]);
        assert_eq!(placed.len(), 1, "one slot per round");
        winners.push(placed[0].0.clone());
        if placed[0].0 == "old-y" {
            break;
        }
    }
    assert_eq!(
        winners,
        ["x0", "x1", "old-y"],
        "two overtakes, then the old job goes"
    );
}

#[test]
fn holds_a_job_for_a_much_faster_busy_node() {
    // fast: (100 + 100) / 100 = 2 s but full; slow: 100 / 10 = 10 s and free.
    let nodes = busy_fast_and_free_slow(10.0);
    let mut policy = with(ExpectedFinishConfig {
        max_holds: 1,
        ..ExpectedFinishConfig::default()
    });
    let jobs = vec![job_for_test("j", 1, 100, None)];
    assert!(
        pairs(&mut policy, jobs.clone(), nodes.clone()).is_empty(),
        "held"
    );
    assert_eq!(policy.holds_of(&"j".into()), 1);
    assert_eq!(
        policy.skips_of(&"j".into()),
        0,
        "holding is not an overtake"
    );
    assert_eq!(
        pairs(&mut policy, jobs, nodes),
        [pair("j", "slow")],
        "once due the job takes the free slow node rather than wait again"
    );
}

#[test]
fn a_second_node_loads_a_model_only_when_enough_jobs_wait_for_the_first() {
    // a holds x and is busy; b is free and cold. Each x job takes 1 s, a load 5 s. Holding
    // for a is better until three jobs already wait for it: then b's 6 s wins (a job is held
    // only when a is expected to finish it in under 0.8 of b's time).
    let mut a = node_for_test("a", 100.0, 100, Some("x"));
    a.slot_limit = 1;
    a.queue_running = 1;
    let b = node_for_test("b", 100.0, 0, None);
    let mut policy = with(ExpectedFinishConfig {
        model_load_secs: 5.0,
        hold_ratio: 0.8,
        ..ExpectedFinishConfig::default()
    });
    let jobs = (1..=6)
        .map(|i| job_for_test(&format!("x{i}"), i, 100, Some("x")))
        .collect();
    let placed = pairs(&mut policy, jobs, vec![a, b]);
    assert_eq!(
        placed,
        [pair("x4", "b"), pair("x5", "b"), pair("x6", "b")],
        "x1..x3 wait for a; from x4 on, loading x on b pays"
    );
    for held in ["x1", "x2", "x3"] {
        // Held once; x4, x5 and x6 then take b, which it declined, so they did not overtake it.
        assert_eq!(policy.holds_of(&held.into()), 1, "{held}");
        assert_eq!(policy.skips_of(&held.into()), 0, "{held}");
    }
}

#[test]
fn settings_out_of_range_are_rejected() {
    let err = ExpectedFinish::new(ExpectedFinishConfig {
        hold_ratio: 1.5,
        ..ExpectedFinishConfig::default()
    })
    .expect_err("ratio above 1");
    assert!(err.to_string().contains("hold_ratio"), "{err}");
}

#[test]
fn a_node_of_unknown_speed_takes_one_job_at_a_time() {
    // Both idle, neither measured: each gets one job, the third stays queued until a speed is
    // learnt (the shared greedy walk would fill every slot).
    let mut a = NodeView::new("a");
    a.slot_limit = 2;
    let mut b = NodeView::new("b");
    b.slot_limit = 2;
    let jobs = (0..3)
        .map(|i| job_for_test(&format!("j{i}"), i, 100, None))
        .collect();
    let placed = plan_for_test(deterministic(), jobs, vec![a.clone(), b.clone()], 0);
    assert_eq!(placed.len(), 2, "{placed:?}");
    assert_ne!(placed[0], placed[1]);

    // Once a node's speed is known its second slot is used.
    a.speed = Some(100.0);
    a.queue_running = 1;
    a.backlog_cost = 100;
    b.queue_running = 1;
    b.backlog_cost = 100;
    let jobs = vec![job_for_test("k", 9, 100, None)];
    assert_eq!(plan_for_test(deterministic(), jobs, vec![a, b], 0), ["a"]);
}

#[test]
fn a_busy_unmeasured_node_is_not_mistaken_for_an_instant_one() {
    // Cost units are 512×512 sampler steps, and so is the default speed. Two nodes not
    // measured yet: one busy with two 20-step drafts' work, one idle. The draft goes to the
    // idle one rather than being held; with a default speed in the wrong unit, the busy node
    // looked able to finish any job at once, and every job waited for it.
    let mut busy = NodeView::new("busy");
    busy.slot_limit = 1;
    busy.queue_running = 1;
    busy.backlog_cost = 40;
    let mut idle = NodeView::new("idle");
    idle.slot_limit = 1;
    let jobs = vec![job_for_test("draft", 0, 20, None)];
    assert_eq!(
        plan_for_test(deterministic(), jobs, vec![busy, idle], 0),
        ["idle"]
    );
}

#[test]
fn an_unmeasured_node_is_planned_at_the_fleet_median_speed() {
    // Measured nodes run at 200, 300 and 400 units/s, all busy with 600 units; the new node,
    // idle and not measured, is guessed at 300/s. A 300-unit job is 1 s there against at best
    // (600 + 300) / 400 = 2.25 s on a busy node, so it goes to the new node. At the fixed
    // default (20/s, 15 s) it would have waited for a busy one, and the new node would never
    // have run the job that measures it.
    let measured = |name: &str, speed: f64| {
        let mut node = node_for_test(name, speed, 600, None);
        node.slot_limit = 2;
        node.queue_running = 1;
        node
    };
    let mut new = NodeView::new("new");
    new.slot_limit = 1;
    let fleet = vec![
        measured("a", 200.0),
        measured("b", 300.0),
        measured("c", 400.0),
        new.clone(),
    ];
    let jobs = vec![job_for_test("j", 0, 300, None)];
    assert_eq!(plan_for_test(deterministic(), jobs, fleet, 0), ["new"]);
}

#[test]
fn a_small_job_may_take_the_slow_node_a_held_big_job_declined_without_aging_it() {
    // fast: busy with 100 units at 100/s. slow: free at 25/s. The big job (100 units) is 2 s on
    // fast behind its backlog but 4 s on slow, so it waits for fast; the small one behind it
    // (10 units) is 0.4 s on slow and takes it.
    let fleet = busy_fast_and_free_slow(25.0);
    let mut policy = with(ExpectedFinishConfig {
        max_skips: 1,
        ..ExpectedFinishConfig::default()
    });
    let jobs = vec![
        job_for_test("big", 1, 100, None),
        job_for_test("small", 2, 10, None),
    ];
    assert_eq!(pairs(&mut policy, jobs, fleet), [pair("small", "slow")]);
    assert_eq!(policy.skips_of(&"big".into()), 0, "it declined slow itself");
    assert_eq!(policy.holds_of(&"big".into()), 1);
}

#[test]
fn a_job_held_in_max_holds_rounds_takes_the_free_node() {
    let nodes = busy_fast_and_free_slow(10.0);
    let mut policy = with(ExpectedFinishConfig {
        max_holds: 3,
        ..ExpectedFinishConfig::default()
    });
    let jobs = vec![job_for_test("j", 1, 100, None)];
    for round in 1..=3 {
        assert!(
            pairs(&mut policy, jobs.clone(), nodes.clone()).is_empty(),
            "round {round}: held"
        );
    }
    assert_eq!(pairs(&mut policy, jobs, nodes), [pair("j", "slow")]);
}

#[test]
fn a_checkpoint_in_recent_demand_is_not_evicted_for_one_odd_job() {
    // Round 1: four x jobs arrive and run on a. Round 2: the queue holds one y job; a is idle
    // with x resident, b holds y but has 30 s of work. Loading y on a costs 20 s, evicting x
    // (80% of recent arrivals) 40 s more, so y waits for b; counting queued jobs only, a's
    // 21 s beats b's 31 s and a switches.
    let run = |demand_window| {
        let mut policy = with(ExpectedFinishConfig {
            demand_window,
            ..ExpectedFinishConfig::default()
        });
        let a = node_for_test("a", 100.0, 0, Some("x"));
        let xs = (1..=4)
            .map(|i| job_for_test(&format!("x{i}"), i, 100, Some("x")))
            .collect();
        assert_eq!(pairs(&mut policy, xs, vec![a.clone()]).len(), 4);
        let mut b = node_for_test("b", 100.0, 3_000, Some("y"));
        b.slot_limit = 1;
        b.queue_running = 1;
        pairs(
            &mut policy,
            vec![job_for_test("y1", 5, 100, Some("y"))],
            vec![a, b],
        )
    };
    assert!(run(32).is_empty(), "y1 waits for the node holding y");
    assert_eq!(
        run(0),
        [pair("y1", "a")],
        "queued demand alone lets a switch"
    );
}

#[test]
fn a_checkpoint_that_fits_beside_the_resident_one_is_no_thrash() {
    // As above, but a is a 24 GiB GPU holding a checkpoint whose job needed 16 GiB and y needs
    // 3 GiB: both stay in VRAM, so loading y evicts nothing and a takes it; had a only 12 GiB
    // by the second round, y would evict x.
    const GIB: u64 = 1 << 30;
    let run = |vram_total| {
        let mut policy = with(ExpectedFinishConfig::default());
        let mut a = node_for_test("a", 100.0, 0, Some("x"));
        a.vram_total = 24 * GIB;
        let xs = (1..=4)
            .map(|i| {
                let mut job = job_for_test(&format!("x{i}"), i, 100, Some("x"));
                job.vram_need = 16 * GIB;
                job
            })
            .collect();
        assert_eq!(pairs(&mut policy, xs, vec![a.clone()]).len(), 4);
        a.vram_total = vram_total;
        a.resident = crate::ResidentSet::new();
        a.resident.touch("x", 16 * GIB, vram_total);
        let mut b = node_for_test("b", 100.0, 3_000, Some("y"));
        b.vram_total = 24 * GIB;
        b.slot_limit = 1;
        b.queue_running = 1;
        let mut y = job_for_test("y1", 5, 100, Some("y"));
        y.vram_need = 3 * GIB;
        pairs(&mut policy, vec![y], vec![a, b])
    };
    assert_eq!(run(24 * GIB), [pair("y1", "a")], "fits beside x");
    assert!(
        run(12 * GIB).is_empty(),
        "would evict x, which recent jobs want"
    );
}

#[test]
fn a_large_gpu_holding_two_checkpoints_runs_either_without_a_load() {
    // The 24 GiB node ran Flux and then SD 1.5; both fit, so both are still loaded. An SD 1.5
    // job finishes there in 1 s, against 2 s on the slower 8 GiB node that holds SD 1.5 too;
    // counting only the last checkpoint, a Flux job would have been charged a 20 s load.
    const GIB: u64 = 1 << 30;
    let big = |last: &str| {
        let mut node = node_for_test("big", 100.0, 0, None);
        node.vram_total = 24 * GIB;
        let first = if last == "flux" { "sd15" } else { "flux" };
        for checkpoint in [first, last] {
            let vram = if checkpoint == "flux" { 12 * GIB } else { GIB };
            node.resident.touch(checkpoint, vram, node.vram_total);
        }
        node
    };
    let mut small = node_for_test("small", 50.0, 0, None);
    small.vram_total = 8 * GIB;
    small.resident.touch("sd15", GIB, small.vram_total);
    let job = |id: &str, checkpoint: &str| {
        let mut job = job_for_test(id, 1, 100, Some(checkpoint));
        job.vram_need = if checkpoint == "flux" { 12 * GIB } else { GIB };
        job
    };
    for last in ["flux", "sd15"] {
        let mut policy = with(ExpectedFinishConfig::default());
        let placed = pairs(
            &mut policy,
            vec![job("sd", "sd15")],
            vec![big(last), small.clone()],
        );
        assert_eq!(placed, [pair("sd", "big")], "last used: {last}");
        let mut policy = with(ExpectedFinishConfig::default());
        let mut flux = job("f", "flux");
        flux.cost = 1_000;
        let mut other = big(last);
        other.id = crate::NodeId("other".into());
        other.resident = crate::ResidentSet::new();
        other.resident.touch("sdxl", 6 * GIB, other.vram_total);
        // 10 s on either 24 GiB node; only "other" would have to load.
        let placed = pairs(&mut policy, vec![flux], vec![big(last), other]);
        assert_eq!(placed, [pair("f", "big")], "last used: {last}");
    }
}

#[test]
fn a_learnt_load_time_replaces_the_configured_one() {
    // As above, but the configured load time is 100 s while the coordinator has learnt that x
    // loads in 5 s: the learnt figure decides, so from x4 on b loads x.
    let mut a = node_for_test("a", 100.0, 100, Some("x"));
    a.slot_limit = 1;
    a.queue_running = 1;
    let b = node_for_test("b", 100.0, 0, None);
    let config = ExpectedFinishConfig {
        model_load_secs: 100.0,
        hold_ratio: 0.8,
        ..ExpectedFinishConfig::default()
    };
    let jobs = |load_secs: Option<f64>| {
        (1..=6)
            .map(|i| {
                let mut job = job_for_test(&format!("x{i}"), i, 100, Some("x"));
                job.load_secs = load_secs;
                job
            })
            .collect::<Vec<_>>()
    };
    let nodes = vec![a, b];
    let placed = pairs(&mut with(config.clone()), jobs(Some(5.0)), nodes.clone());
    assert_eq!(placed, [pair("x4", "b"), pair("x5", "b"), pair("x6", "b")]);
    let placed = pairs(&mut with(config.clone()), jobs(None), nodes.clone());
    assert!(placed.is_empty(), "a 100 s load never pays: {placed:?}");
    let placed = pairs(&mut with(config), jobs(Some(f64::NAN)), nodes);
    assert!(
        placed.is_empty(),
        "a learnt figure that is not a number is ignored"
    );
}
