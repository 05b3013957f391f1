//! An independent client: Python grpcio with stubs generated from `proto/` at test time.
//!
//! The Rust tests use the same generated code as the server, so a mistake in the contract's
//! encoding could go unnoticed. Here a Python client built only from the `.proto` files
//! submits the shared SDXL tutorial workflow and watches it to success. Missing python3 or
//! packages fail the test (tests/run.sh installs them); they never skip it.

use std::process::Command;

use comfyfleet_tests::{TestFleet, shared_dir, sim_config, v1 as pb};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpc_client_runs_the_sdxl_tutorial_workflow() {
    let fleet = TestFleet::start(vec![sim_config("gpu-a", 0.01)]).await;
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let out = tempfile::tempdir().expect("stub dir");
    let workflow = shared_dir().join("workflows/sdxl-baseline-tutorial.json");
    let address = fleet.grpc_addr().to_string();
    let (script, proto) = (
        format!("{root}/tests/python/grpc_client.py"),
        format!("{root}/proto"),
    );
    let out_dir = out.path().to_path_buf();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .arg(address)
            .arg(proto)
            .arg(workflow)
            .arg(out_dir)
            .output()
    })
    .await
    .expect("join")
    .expect("python3 must be installed (tests/run.sh)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "python client failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|error| panic!("python output {stdout:?}: {error}"));
    assert_eq!(report["submitted_state"], "JOB_STATE_QUEUED");
    assert_eq!(report["final_state"], "JOB_STATE_SUCCEEDED");
    assert_eq!(report["tenant"], "python");
    let kinds: Vec<&str> = report["kinds"]
        .as_array()
        .expect("kinds")
        .iter()
        .filter_map(|kind| kind.as_str())
        .collect();
    assert_eq!(kinds.first(), Some(&"queued"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"succeeded"), "{kinds:?}");
    let sequences: Vec<u64> = report["sequences"]
        .as_array()
        .expect("sequences")
        .iter()
        .filter_map(serde_json::Value::as_u64)
        .collect();
    assert_eq!(sequences, (1..=kinds.len() as u64).collect::<Vec<_>>());
    assert!(!report["outputs"].as_array().expect("outputs").is_empty());

    // The Rust view of the same job agrees.
    let job_id = report["job_id"].as_str().expect("job id");
    let job = fleet.get(job_id).await;
    assert_eq!(job.state(), pb::JobState::Succeeded);
    assert_eq!(job.last_sequence, kinds.len() as u64);
}
