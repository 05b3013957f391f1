//! A tutorial-style Python ComfyUI client (requests + websocket-client) against a coordinator
//! with three simulated nodes: it must run unchanged, and jobs must spread across the nodes.

mod support;

use std::process::Command;

use comfy_sim::NodeConfig as SimConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tutorial_python_client_drives_the_fleet() {
    let probe = Command::new("python3")
        .args(["-c", "import requests, websocket"])
        .output()
        .expect("python3 must be installed to run this test");
    assert!(
        probe.status.success(),
        "python3 lacks requests / websocket-client (tests/run.sh installs them): {}",
        String::from_utf8_lossy(&probe.stderr)
    );

    // A little simulated work per prompt, so a burst of prompts needs several nodes.
    let nodes = (0..3)
        .map(|index| SimConfig::named(&format!("gpu-{index}")).with_time_scale(0.2))
        .collect();
    let support::SimFleet {
        coordinator,
        sims: _sims,
        data: _data,
    } = support::start_sim_fleet(nodes).await;

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/facade_client.py");
    let base = format!("http://{}", coordinator.http_addr());
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .arg(base)
            .output()
            .expect("python3 runs")
    })
    .await
    .expect("joins");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "python client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("\nok"), "{stdout}");
    coordinator.shutdown().await;
}
