//! Shared helpers for the coordinator's integration tests.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use coordinator::job::{Job, JobSpec};

/// Returns the shared ground-truth folder, failing the test with a clear message if missing.
pub fn shared_dir() -> PathBuf {
    let dir = std::env::var_os("COMFYFLEET_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared")));
    assert!(
        dir.join("workflows").is_dir(),
        "shared folder {} with workflows/ is missing: set COMFYFLEET_SHARED_DIR",
        dir.display()
    );
    dir
}

/// Reads one of the shared workflows byte for byte.
pub fn workflow_bytes(name: &str) -> Vec<u8> {
    let path = shared_dir().join("workflows").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Returns a fixed instant plus `secs`, for deterministic timestamps.
pub fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
}

/// Builds a queued job for `tenant` with `priority`, created at `at(secs)`.
pub fn job_for_test(tenant: &str, priority: i32, secs: u64) -> Job {
    let mut spec = JobSpec::new(format!("{{\"n\":{secs}}}").into_bytes(), tenant);
    spec.priority = priority;
    Job::new(spec, at(secs))
}

/// A coordinator in front of simulated nodes, on free loopback ports, with its own data dir.
pub struct SimFleet {
    /// The running coordinator.
    pub coordinator: coordinator::Coordinator,
    /// The simulated nodes, in the order given.
    pub sims: Vec<comfy_sim::SimNode>,
    /// The coordinator's data directory; removed when dropped.
    pub data: tempfile::TempDir,
}

/// Starts one simulated node per config and a coordinator in front of them (probing every
/// 100 ms), and waits until every node is up with its classes known.
pub async fn start_sim_fleet(nodes: Vec<comfy_sim::NodeConfig>) -> SimFleet {
    start_sim_fleet_with(nodes, |_| {}).await
}

/// Like [`start_sim_fleet`], letting the test adjust the coordinator's configuration first.
pub async fn start_sim_fleet_with(
    nodes: Vec<comfy_sim::NodeConfig>,
    adjust: impl FnOnce(&mut coordinator::config::Config),
) -> SimFleet {
    use coordinator::config::{Config, NodeConfig};

    let data = tempfile::tempdir().expect("temp dir");
    let mut config = Config {
        grpc_listen: "127.0.0.1:0".parse().expect("addr"),
        http_listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: data.path().to_path_buf(),
        ..Config::default()
    };
    config.probe.interval = Duration::from_millis(100);
    config.probe.jitter = Duration::from_millis(10);
    let mut sims = Vec::new();
    for node in nodes {
        let sim = comfy_sim::spawn(node, "127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("simulated node starts");
        config.nodes.push(NodeConfig {
            name: sim.name().to_owned(),
            url: sim.url().parse().expect("url"),
            labels: Default::default(),
        });
        sims.push(sim);
    }
    adjust(&mut config);
    let coordinator = coordinator::Coordinator::start(config, Default::default())
        .await
        .expect("coordinator starts");
    let started = std::time::Instant::now();
    loop {
        let ready = coordinator.fleet().nodes().iter().all(|node| {
            let status = node.status();
            status.health == scheduler::Health::Up && status.classes.is_some()
        });
        if ready {
            return SimFleet {
                coordinator,
                sims,
                data,
            };
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "nodes did not come up within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Submits `workflow` with every other field at its default; panics when it is refused.
pub async fn submit_workflow(
    client: &mut fleet_proto::v1::job_service_client::JobServiceClient<tonic::transport::Channel>,
    workflow: Vec<u8>,
) {
    client
        .submit_job(fleet_proto::v1::SubmitJobRequest {
            workflow,
            ..Default::default()
        })
        .await
        .expect("job accepted");
}
