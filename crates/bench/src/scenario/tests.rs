//! Parsing, checking, trace drawing and bounds of scenarios, on one small scenario text.

use std::path::Path;

use super::*;

const TEXT: &str = r#"
    name = "t"
    time_scale = 0.01
    seed = 3
    [[nodes]]
    name = "gpu"
    count = 2
    gpu = "NVIDIA GeForce RTX 4090"
    vram_gib = 24
    seconds_per_step = 0.05
    checkpoints = ["a.safetensors", "b.safetensors"]
    [load]
    jobs = 400
    rate = 10.0
    alternate_every_s = 10.0
    bursts = [{ at_s = 5.0, jobs = 30 }]
    [[load.mix]]
    class = "a"
    checkpoint = "a.safetensors"
    steps = 10
    [[load.mix]]
    class = "b"
    checkpoint = "b.safetensors"
    steps = 20
    width = 1024
    height = 1024
"#;

fn scenario() -> Scenario {
    Scenario::parse(TEXT, Path::new("<text>")).expect("scenario parses")
}

#[test]
fn traces_are_seeded_sorted_and_complete() {
    let s = scenario();
    let a = s.trace();
    let b = s.trace();
    assert_eq!(a.len(), 430);
    assert!(a.windows(2).all(|w| w[0].at_s <= w[1].at_s));
    let seeds_a: Vec<u64> = a.iter().map(|job| job.seed).collect();
    let seeds_b: Vec<u64> = b.iter().map(|job| job.seed).collect();
    assert_eq!(seeds_a, seeds_b, "same seed, same trace");
    assert_eq!(a.iter().filter(|job| job.at_s == 5.0).count(), 30);
    // 400 arrivals at 10/s take about 40 s.
    let last = a.last().map(|job| job.at_s).unwrap_or_default();
    assert!((30.0..55.0).contains(&last), "last arrival {last}");
}

#[test]
fn demand_alternates_between_mix_entries() {
    let s = scenario();
    let trace = s.trace();
    let share_of_a = |window: usize| {
        let jobs: Vec<_> = trace
            .iter()
            .filter(|job| (job.at_s / 10.0).floor() as usize == window && job.at_s != 5.0)
            .collect();
        jobs.iter().filter(|job| job.kind == 0).count() as f64 / jobs.len() as f64
    };
    assert!(share_of_a(0) > 0.6, "window 0 favours a: {}", share_of_a(0));
    assert!(share_of_a(1) < 0.4, "window 1 favours b: {}", share_of_a(1));
}

#[test]
fn lower_bound_counts_work_and_loads() {
    let s = scenario();
    let trace = s.trace();
    let work: f64 = trace
        .iter()
        .map(|job| s.load.mix[job.kind].cost_units())
        .sum();
    // Two nodes at 20 units/s each, two distinct 2 GB checkpoints loading 3 s each.
    let expected = (work / 40.0 + 6.0 / 2.0) * 0.01;
    let bound = s.lower_bound_s(&trace, 1.0);
    assert!(
        bound >= expected - 1e-9,
        "bound {bound} < work bound {expected}"
    );
    // A measured service factor scales the work (and the arrival bound's last job), not the
    // model loads.
    let scaled = s.lower_bound_s(&trace, 2.0);
    let expected_scaled = (2.0 * work / 40.0 + 6.0 / 2.0) * 0.01;
    assert!(
        scaled >= expected_scaled - 1e-9 && scaled > bound,
        "scaled bound {scaled} vs {expected_scaled} and {bound}"
    );
}

#[test]
fn inconsistent_scenarios_are_refused_with_every_problem() {
    let bad = TEXT
        .replace("time_scale = 0.01", "time_scale = 0")
        .replace("steps = 10", "steps = 0");
    let error = Scenario::parse(&bad, Path::new("bad.toml")).expect_err("invalid");
    let message = error.to_string();
    assert!(message.starts_with("scenario bad.toml: "), "{message}");
    assert!(message.contains("time_scale"), "{message}");
    assert!(message.contains("steps > 0"), "{message}");
}

#[test]
fn groups_expand_to_named_nodes() {
    let names: Vec<String> = scenario()
        .node_configs()
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(names, vec!["gpu-0", "gpu-1"]);
}
