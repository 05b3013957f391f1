//! Runs the tutorial-style Python client (requests + websocket-client) against a simulated node.
//! Fails, not skips, when python3 or the packages are missing: the workspace test command, tests/run.sh, installs them.

mod support;

#[tokio::test]
async fn tutorial_python_client_gets_a_png() {
    support::shared_dir();
    let node = support::node_with(comfy_sim::NodeConfig::named("py").with_time_scale(0.01)).await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/tutorial_client.py"
    );
    let check = tokio::process::Command::new("python3")
        .args(["-c", "import requests, websocket"])
        .output()
        .await;
    let check = check.expect("python3 must be installed for this test");
    assert!(
        check.status.success(),
        "python packages missing (bash tests/run.sh installs them from tests/python-requirements.txt): {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        tokio::process::Command::new("python3")
            .arg(script)
            .arg(node.addr().to_string())
            .output(),
    )
    .await
    .expect("python client finishes within 60 s")
    .expect("python3 runs");
    assert!(
        out.status.success(),
        "python client failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("tutorial client ok"));
}
