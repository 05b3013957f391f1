//! Keeps the benchmark harness working: runs `comfyfleet-bench --quick` (a tiny placement
//! scenario under two policies and a 50-job overhead run against real simulated nodes) and
//! checks structural facts only (every job finished, the JSON has its fields); the figures
//! themselves depend on the machine and are not asserted.

use std::process::Command;

use serde_json::Value;

#[test]
fn quick_mode_finishes_every_job_and_writes_the_report() {
    let out = tempfile::tempdir().expect("temporary directory");
    let output = Command::new(env!("CARGO_BIN_EXE_comfyfleet-bench"))
        .arg("--quick")
        .arg("--out")
        .arg(out.path())
        .output()
        .expect("the benchmark binary runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "--quick failed:\n{stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("| policy |"),
        "no placement table:\n{stdout}"
    );

    let text = std::fs::read_to_string(out.path().join("quick.json")).expect("quick.json");
    let result: Value = serde_json::from_str(&text).expect("quick.json is JSON");

    let placement = &result["placement"];
    let jobs = placement["jobs"].as_u64().expect("placement.jobs");
    assert!(jobs > 0);
    assert!(placement["lower_bound_s"].as_f64().expect("lower_bound_s") > 0.0);
    let reference = &placement["clairvoyant"]["end_to_end"];
    assert_eq!(reference["count"].as_u64(), Some(jobs), "{placement}");
    assert!(
        reference["p95_ms"].as_f64().unwrap_or(0.0) > 0.0,
        "{reference}"
    );
    let runs = placement["runs"].as_array().expect("placement.runs");
    let policies: Vec<&str> = runs
        .iter()
        .filter_map(|run| run["policy"].as_str())
        .collect();
    assert_eq!(policies, vec!["least-loaded", "least-loaded-affinity"]);
    for run in runs {
        let policy = run["policy"].as_str().unwrap_or("?");
        assert_eq!(
            run["outcomes"]["succeeded"].as_u64(),
            Some(jobs),
            "{policy}: {run}"
        );
        assert_eq!(run["lost"].as_u64(), Some(0), "{policy}");
        assert!(run["makespan_s"].as_f64().unwrap_or(0.0) > 0.0, "{policy}");
        assert_eq!(run["queue_wait"]["count"].as_u64(), Some(jobs), "{policy}");
        assert_eq!(run["jobs"].as_array().map(Vec::len), Some(jobs as usize));
        assert!(
            run["model_loads_total"].as_u64().unwrap_or(0) >= 1,
            "{policy}: no model load seen"
        );
        let shares = run["busy_share"].as_object().expect("busy_share");
        assert_eq!(shares.len(), 2, "{policy}: one share per node");
        for field in [
            "retries",
            "forbidden_placements",
            "placements",
            "end_to_end",
            "model_loads",
        ] {
            assert!(!run[field].is_null(), "{policy}: missing {field}");
        }
    }

    let overhead = &result["overhead"];
    assert_eq!(overhead["jobs"].as_u64(), Some(50));
    assert_eq!(
        overhead["outcomes"]["succeeded"].as_u64(),
        Some(50),
        "{overhead}"
    );
    for figure in [
        "dispatch_overhead",
        "coordinator_dispatch",
        "relay_node_to_watcher",
        "relay_append_to_watcher",
        "completion_relay",
        "end_to_end",
    ] {
        let count = overhead[figure]["count"].as_u64().unwrap_or(0);
        assert!(count >= 50, "{figure}: {count} samples");
        assert!(!overhead[figure]["p99_ms"].is_null(), "{figure}: no p99");
    }
    assert!(overhead["throughput"].as_f64().unwrap_or(0.0) > 0.0);
    let svg = std::fs::read_to_string(out.path().join("quick.svg")).expect("quick.svg");
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    // Three latency bars per policy, and its makespan and loads written under them.
    assert_eq!(svg.matches("<title>").count(), 3 * runs.len(), "{svg}");
    assert_eq!(svg.matches("× bound").count(), runs.len(), "{svg}");
    assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
}
