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
    assert!(message.contains("steps in 1..=10000"), "{message}");
}

#[test]
fn values_that_would_crash_or_stall_a_run_are_refused_up_front() {
    let cases: [(&str, &str, &str); 12] = [
        ("time_scale = 0.01", "time_scale = 1e300", "time_scale"),
        (
            "bursts = [{ at_s = 5.0, jobs = 30 }]",
            "bursts = [{ at_s = 1e300, jobs = 30 }]",
            "burst at_s",
        ),
        (
            "bursts = [{ at_s = 5.0, jobs = 30 }]",
            "bursts = [{ at_s = nan, jobs = 30 }]",
            "burst at_s",
        ),
        (
            "bursts = [{ at_s = 5.0, jobs = 30 }]",
            "bursts = [{ at_s = -1.0, jobs = 30 }]",
            "burst at_s",
        ),
        ("jobs = 400", "jobs = 10000000000", "at most 1000000"),
        (
            "    steps = 10\n",
            "    steps = 10\n    width = 0\n",
            "multiples of 8",
        ),
        (
            "    steps = 10\n",
            "    steps = 10\n    width = 100\n",
            "multiples of 8",
        ),
        (
            "checkpoint = \"a.safetensors\"",
            "checkpoint = \"nowhere.safetensors\"",
            "on no node",
        ),
        ("count = 2", "count = 100000000000", "at most 2000 nodes"),
        ("name = \"gpu\"", "name = \"g p/u\"", "ASCII letters"),
        (
            "seed = 3",
            "seed = 3\n    [coordinator]\n    deadline_s = 0",
            "deadline_s",
        ),
        (
            "seed = 3",
            "seed = 3\n    [coordinator]\n    probe_interval_ms = 0",
            "probe_interval_ms",
        ),
    ];
    for (from, to, needle) in cases {
        let text = TEXT.replace(from, to);
        assert_ne!(text, TEXT, "the case {to:?} must change the scenario");
        let error = Scenario::parse(&text, Path::new("bad.toml")).expect_err(to);
        assert!(error.to_string().contains(needle), "{to}: {error}");
    }
    // A group whose name another group's expansion already gave.
    let twice = TEXT.replace(
        "    [load]",
        "    [[nodes]]\n    name = \"gpu-1\"\n    gpu = \"x\"\n    vram_gib = 8\n    \
         seconds_per_step = 0.1\n    checkpoints = [\"a.safetensors\"]\n    [load]",
    );
    let error = Scenario::parse(&twice, Path::new("bad.toml")).expect_err("gpu-1 twice");
    assert!(
        error
            .to_string()
            .contains("node gpu-1: name used more than once"),
        "{error}"
    );
    // A deadline before the last arrival (400 jobs at 10/s ≈ 40 s, at 0.01: 0.4 s of wall).
    let slow = TEXT.replace("time_scale = 0.01", "time_scale = 10.0");
    let error = Scenario::parse(&slow, Path::new("bad.toml")).expect_err("deadline too short");
    assert!(
        error
            .to_string()
            .contains("ends before the last job arrives"),
        "{error}"
    );
}

#[test]
fn a_scenario_file_is_read_up_to_a_limit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("big.toml");
    std::fs::write(&path, vec![b'#'; (1 << 20) + 1]).expect("write");
    let error = Scenario::load(&path).expect_err("too long");
    assert!(
        error.to_string().contains("longer than 1024 KiB"),
        "{error}"
    );
    let error = Scenario::load(Path::new("/dev/zero")).expect_err("endless");
    assert!(error.to_string().contains("longer than"), "{error}");
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

#[test]
fn keep_up_loads_follow_the_demand_windows() {
    let s = scenario();
    // Hand-made trace on two nodes (20 units/s each at 0.05 s per step) with 10 s windows,
    // so one node does 200 units per window. Mix entry 0 is 10 units, entry 1 is 80.
    let job = |at_s: f64, kind: usize| TraceJob {
        at_s,
        kind,
        seed: 0,
    };
    let mut trace = Vec::new();
    // Window 0: 15 a-jobs (150 units, one holder) and 3 b-jobs (240 units, two holders):
    // three holders wanted on two nodes, so one node switches within the window.
    trace.extend((0..15).map(|i| job(f64::from(i) * 0.5, 0)));
    trace.extend((0..3).map(|i| job(f64::from(i), 1)));
    // Window 1: only a, 300 units: two holders.
    trace.extend((0..30).map(|i| job(10.0 + f64::from(i) * 0.3, 0)));
    // Window 2: only b, 160 units: one holder.
    trace.extend((0..2).map(|i| job(20.0 + f64::from(i), 1)));
    trace.sort_by(|x, y| x.at_s.total_cmp(&y.at_s));
    // Window 0: one switch within it, and both nodes load b (the larger shortfall), 3.
    // Window 1: both nodes load a, 2. Window 2: one node loads b, 1.
    assert_eq!(s.keep_up_model_loads(&trace, 1.0), Some(3 + 2 + 1));
    // Doubling the work per job: window 0 wants 2 a-holders and 3 b-holders, capped at the
    // 2 nodes each: 2 switches within it, and both nodes load a (tie, name order), 4.
    // Window 1 wants 3 a-holders and has the 2 there are. Window 2: both nodes load b, 2.
    assert_eq!(s.keep_up_model_loads(&trace, 2.0), Some(4 + 2));

    let mut steady = s.clone();
    steady.load.alternate_every_s = None;
    assert_eq!(
        steady.keep_up_model_loads(&trace, 1.0),
        None,
        "demand does not move"
    );
}

#[test]
fn offered_load_is_sampler_work_over_fleet_capacity() {
    // Alternating demand weighs the entries equally: (10 + 20·4) / 2 = 45 units per job;
    // two nodes at 0.05 s per step do 40 units per second; 10 jobs per second offer 11.25×.
    let alternating = scenario();
    assert!((alternating.offered_load() - 11.25).abs() < 1e-9);
    // Without alternation the weights count: (3·10 + 1·80) / 4 = 27.5 units per job.
    let weighted = TEXT
        .replace("    alternate_every_s = 10.0\n", "")
        .replace("class = \"a\"", "class = \"a\"\n    weight = 3.0");
    let weighted = Scenario::parse(&weighted, Path::new("<text>")).expect("scenario parses");
    assert!((weighted.offered_load() - 6.875).abs() < 1e-9);
}

#[test]
fn a_scaled_scenario_replays_the_same_jobs_at_another_rate() {
    let text = TEXT
        .replace("    alternate_every_s = 10.0\n", "")
        .replace("    bursts = [{ at_s = 5.0, jobs = 30 }]\n", "");
    let base = Scenario::parse(&text, Path::new("<text>")).expect("scenario parses");
    let half = base.with_rate_scale(0.5).expect("valid factor");
    assert_eq!(half.name, "t-x0.5");
    assert!((half.load.rate - 5.0).abs() < 1e-12);
    assert!((half.offered_load() * 2.0 - base.offered_load()).abs() < 1e-9);
    assert!(half.description.contains("×0.5"), "{}", half.description);
    let (a, b) = (base.trace(), half.trace());
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(
            (x.kind, x.seed),
            (y.kind, y.seed),
            "same jobs in the same order"
        );
        assert!(
            (y.at_s - 2.0 * x.at_s).abs() < 1e-9,
            "half the rate, twice the gaps"
        );
    }
    assert_eq!(
        base.with_rate_scale(1.25).expect("valid").name,
        "t-x1.25",
        "labels keep their decimals and drop trailing zeros"
    );
}

#[test]
fn rate_scales_outside_the_range_or_without_a_poisson_load_are_refused() {
    let s = scenario();
    for factor in [0.0, -1.0, f64::NAN, f64::INFINITY, MAX_RATE_SCALE + 0.5] {
        let err = s.with_rate_scale(factor).expect_err("refused");
        assert!(err.to_string().contains("--rate-scale"), "{err}");
    }
    let bursts_only = TEXT
        .replace("    jobs = 400\n", "")
        .replace("    rate = 10.0\n", "");
    let bursts_only = Scenario::parse(&bursts_only, Path::new("<text>")).expect("parses");
    let err = bursts_only
        .with_rate_scale(0.5)
        .expect_err("nothing to scale");
    assert!(err.to_string().contains("only bursts"), "{err}");
}

#[test]
fn a_name_that_is_not_one_plain_file_name_is_refused() {
    for bad in ["", "../escape", "a/b", ".hidden", "sp ace", &"n".repeat(65)] {
        let text = TEXT.replace("name = \"t\"", &format!("name = {bad:?}"));
        let err = Scenario::parse(&text, Path::new("<text>")).expect_err(bad);
        assert!(
            err.to_string().contains("names the result files"),
            "{bad}: {err}"
        );
    }
    let text = TEXT.replace("name = \"t\"", "name = \"slow-gpu_v2.1\"");
    Scenario::parse(&text, Path::new("<text>")).expect("letters, digits, '-', '_' and '.'");
}

#[test]
fn every_shipped_scenario_is_valid_and_slow_gpu_sweeps_at_the_documented_factors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("scenarios folder") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            Scenario::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            seen += 1;
        }
    }
    assert!(seen >= 6, "only {seen} scenarios found");
    let slow = Scenario::load(&dir.join("slow-gpu.toml")).expect("slow-gpu");
    for factor in [0.5, 0.75, 1.0, 1.25] {
        slow.with_rate_scale(factor)
            .unwrap_or_else(|e| panic!("×{factor}: {e}"));
    }
}
