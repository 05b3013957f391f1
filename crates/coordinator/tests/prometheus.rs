//! The metrics exposition checked by Prometheus's own tools: `promtool check metrics` lints
//! the text, and a real Prometheus server scrapes the coordinator while jobs run and reads the
//! job counters back through its query API.
//!
//! Both need the Debian package `prometheus` (installed by `tests/run.sh`); without it these
//! tests fail rather than pass silently.

mod support;

use std::io::Write;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use comfy_sim::NodeConfig as SimConfig;
use coordinator::Coordinator;
use fleet_proto::v1::job_service_client::JobServiceClient;

/// A tiny workflow every simulated node can run: an image, inverted, saved.
fn workflow(seed: u32) -> Vec<u8> {
    format!(
        r#"{{"1": {{"class_type": "EmptyImage", "inputs": {{"width": 64, "height": 64, "batch_size": 1, "color": {seed}}}}},
            "2": {{"class_type": "SaveImage", "inputs": {{"filename_prefix": "m", "images": ["1", 0]}}}}}}"#
    )
    .into_bytes()
}

struct Fleet {
    coordinator: Coordinator,
    _sims: Vec<comfy_sim::SimNode>,
    _data: tempfile::TempDir,
}

async fn start_fleet() -> Fleet {
    let nodes = (0..2)
        .map(|index| SimConfig::named(&format!("sim-{index}")).with_time_scale(0.0))
        .collect();
    let fleet = support::start_sim_fleet(nodes).await;
    Fleet {
        coordinator: fleet.coordinator,
        _sims: fleet.sims,
        _data: fleet.data,
    }
}

async fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < limit,
            "condition not reached within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn run_jobs(fleet: &Fleet, count: u32) {
    let url = format!("http://{}", fleet.coordinator.grpc_addr());
    let mut client = JobServiceClient::connect(url).await.expect("gRPC connects");
    for seed in 0..count {
        support::submit_workflow(&mut client, workflow(seed)).await;
    }
    let metrics = fleet.coordinator.metrics().clone();
    let finished = move || {
        metrics
            .jobs_finished
            .with_label_values(&["succeeded"])
            .get()
            >= u64::from(count)
    };
    wait_until(Duration::from_secs(30), finished).await;
}

fn tool(name: &str) -> String {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output();
    match found {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        _ => panic!(
            "{name} is not installed: install the Debian package `prometheus` (tests/run.sh does)"
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exposition_passes_promtool_lint() {
    let fleet = start_fleet().await;
    run_jobs(&fleet, 3).await;
    let body = reqwest::get(format!("http://{}/metrics", fleet.coordinator.http_addr()))
        .await
        .expect("metrics answer")
        .text()
        .await
        .expect("metrics body");
    assert!(
        body.contains("comfyfleet_jobs_finished_total{outcome=\"succeeded\"} 3"),
        "counter moved: {body}"
    );

    let mut child = Command::new(tool("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(body.as_bytes())
        .expect("metrics written");
    let out = child.wait_with_output().expect("promtool finishes");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool check metrics complains:\n{report}"
    );
}

/// Kills the Prometheus server when the test ends, however it ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("addr")
        .port()
}

async fn query(port: u16, promql: &str) -> Option<f64> {
    let url = format!("http://127.0.0.1:{port}/api/v1/query");
    let body = reqwest::Client::new()
        .get(url)
        .query(&[("query", promql)])
        .send()
        .await
        .ok()?
        .bytes()
        .await
        .ok()?;
    let answer: serde_json::Value = serde_json::from_slice(&body).ok()?;
    let value = answer.pointer("/data/result/0/value/1")?.as_str()?;
    value.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_prometheus_scrapes_the_job_counters() {
    let fleet = start_fleet().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: comfyfleet\n    static_configs:\n      - targets: ['{}']\n",
        fleet.coordinator.http_addr()
    );
    let config_path = dir.path().join("prometheus.yml");
    std::fs::write(&config_path, config).expect("config written");
    let server = Command::new(tool("prometheus"))
        .arg(format!("--config.file={}", config_path.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus starts");
    let _server = KillOnDrop(server);

    // Before any job: the scrape works and reads zero.
    let started = Instant::now();
    loop {
        if query(port, "comfyfleet_jobs_submitted_total").await == Some(0.0) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "prometheus never scraped the coordinator"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    run_jobs(&fleet, 5).await;
    let started = Instant::now();
    loop {
        let finished = query(
            port,
            "comfyfleet_jobs_finished_total{outcome=\"succeeded\"}",
        )
        .await;
        let submitted = query(port, "comfyfleet_jobs_submitted_total").await;
        if finished == Some(5.0) && submitted == Some(5.0) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "prometheus read finished={finished:?} submitted={submitted:?}, expected 5 and 5"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let up = query(port, "sum(comfyfleet_node_up)").await;
    assert_eq!(
        up,
        Some(2.0),
        "both nodes are up as seen through prometheus"
    );
}
