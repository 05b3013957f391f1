//! Nodes found in DNS join the fleet, run jobs, and leave it when their address goes away,
//! finishing the job they hold first. Loopback only: the resolver is swapped for one the test
//! controls, or is the system one on an IP literal (which resolves without any DNS server).

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use comfy_api::{ClientConfig, NodeClient, Outcome, PromptRequest};
use comfy_sim::NodeConfig as SimConfig;
use coordinator::config::{Config, DnsSourceConfig};
use coordinator::fleet::discovery::{ResolveFuture, Resolver};
use coordinator::{Coordinator, StartOptions};

/// A resolver whose answer the test sets.
#[derive(Debug, Default)]
struct ScriptedResolver {
    answer: Mutex<Vec<IpAddr>>,
}

impl ScriptedResolver {
    fn set(&self, addresses: &[IpAddr]) {
        *self.answer.lock().expect("answer lock") = addresses.to_vec();
    }
}

impl Resolver for ScriptedResolver {
    fn resolve<'a>(&'a self, _host: &'a str, _port: u16) -> ResolveFuture<'a> {
        let answer = self.answer.lock().expect("answer lock").clone();
        Box::pin(async move { Ok(answer) })
    }
}

/// A workflow of two image nodes; the simulated node below spends about a second on each.
fn workflow(color: u32) -> String {
    format!(
        r#"{{"1": {{"class_type": "EmptyImage", "inputs": {{"width": 64, "height": 64, "batch_size": 1, "color": {color}}}}},
            "2": {{"class_type": "SaveImage", "inputs": {{"filename_prefix": "discovery", "images": ["1", 0]}}}}}}"#
    )
}

async fn start_sim(seconds_per_megapixel: f64) -> comfy_sim::SimNode {
    let mut sim_config = SimConfig::named("pod-0").with_time_scale(1.0);
    sim_config.seconds_per_megapixel = seconds_per_megapixel;
    comfy_sim::spawn(sim_config, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("simulated node starts")
}

/// The port the simulated node listens on.
fn port_of(sim: &comfy_sim::SimNode) -> u16 {
    sim.url()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port")
}

fn config_with_source(data: &tempfile::TempDir, host: &str, port: u16) -> Config {
    let mut config = Config {
        grpc_listen: "127.0.0.1:0".parse().expect("addr"),
        http_listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: data.path().to_path_buf(),
        ..Config::default()
    };
    config.probe.interval = Duration::from_millis(100);
    config.probe.jitter = Duration::from_millis(10);
    config.dispatch.node_down_grace = Duration::from_secs(30);
    config.discovery.sources.push(DnsSourceConfig {
        name: "comfyui".into(),
        host: host.into(),
        port,
        scheme: "http".into(),
        labels: [("pool".to_owned(), "found".to_owned())].into(),
        interval: Duration::from_millis(100),
    });
    config
}

async fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn node_up_with_classes(coordinator: &Coordinator, name: &str) -> bool {
    coordinator.fleet().get(name).is_some_and(|node| {
        let status = node.status();
        status.health == scheduler::Health::Up && status.classes.is_some()
    })
}

async fn readyz(coordinator: &Coordinator) -> u16 {
    reqwest::get(format!("http://{}/readyz", coordinator.http_addr()))
        .await
        .expect("readyz answers")
        .status()
        .as_u16()
}

fn facade(coordinator: &Coordinator) -> NodeClient {
    NodeClient::new(
        "facade",
        &format!("http://{}", coordinator.http_addr()),
        ClientConfig::default(),
    )
    .expect("client")
}

async fn submit(client: &NodeClient, color: u32) -> String {
    let request = PromptRequest::from_raw(
        serde_json::value::RawValue::from_string(workflow(color)).expect("raw"),
    );
    client.prompt(&request).await.expect("accepted").prompt_id
}

async fn wait_for_success(client: &NodeClient, prompt_id: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(entry)) = client.history_entry(prompt_id).await {
            assert_eq!(entry.outcome(), Outcome::Success, "prompt {prompt_id}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "prompt {prompt_id} did not finish"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn metrics_text(coordinator: &Coordinator) -> String {
    reqwest::get(format!("http://{}/metrics", coordinator.http_addr()))
        .await
        .expect("metrics answer")
        .text()
        .await
        .expect("metrics body")
}

#[test]
fn sources_come_from_the_file_with_defaults_and_from_the_environment() {
    let text = r#"
        [[discovery.sources]]
        name = "comfyui"
        host = "comfyui.gpu.svc.cluster.local"
        labels = { gpu = "l4" }
    "#;
    let mut config = Config::from_toml_str(text, "test.toml".as_ref()).expect("parses");
    config.validate().expect("valid");
    let source = &config.discovery.sources[0];
    assert_eq!(source.port, 8188);
    assert_eq!(source.scheme, "http");
    assert_eq!(source.interval, Duration::from_secs(5));
    assert_eq!(source.labels.get("gpu").map(String::as_str), Some("l4"));

    let unknown = config
        .apply_env([(
            "COMFYFLEET_DISCOVERY_SOURCES".to_owned(),
            "a=pods.example.internal:8190, b=[fd00::5]:8188".to_owned(),
        )])
        .expect("applies");
    assert!(unknown.is_empty());
    config.validate().expect("valid");
    let hosts: Vec<(&str, &str, u16)> = config
        .discovery
        .sources
        .iter()
        .map(|s| (s.name.as_str(), s.host.as_str(), s.port))
        .collect();
    assert_eq!(
        hosts,
        vec![("a", "pods.example.internal", 8190), ("b", "fd00::5", 8188)]
    );
    let err = config
        .apply_env([(
            "COMFYFLEET_DISCOVERY_SOURCES".to_owned(),
            "a=no-port".to_owned(),
        )])
        .expect_err("no port");
    assert!(
        err.to_string().contains("COMFYFLEET_DISCOVERY_SOURCES"),
        "got {err}"
    );
}

#[test]
fn bad_sources_are_all_reported() {
    let text = r#"
        [[discovery.sources]]
        name = "dup"
        host = "a.example"
        port = 0
        [[discovery.sources]]
        name = "dup"
        host = "http://a.example/"
        scheme = "ftp"
        interval = "0s"
    "#;
    let config = Config::from_toml_str(text, "test.toml".as_ref()).expect("parses");
    let err = config.validate().expect_err("invalid").to_string();
    for needle in [
        "port must not be 0",
        "name used more than once",
        "host must be a DNS name",
        "scheme must be http or https",
        "interval must be greater than zero",
    ] {
        assert!(err.contains(needle), "{needle:?} missing from {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ip_literal_source_adds_its_node_through_the_system_resolver() {
    let sim = start_sim(0.0).await;
    let port = port_of(&sim);
    let data = tempfile::tempdir().expect("temp dir");
    let coordinator = Coordinator::start(
        config_with_source(&data, "127.0.0.1", port),
        StartOptions::default(),
    )
    .await
    .expect("coordinator starts");
    let name = "comfyui-127-0-0-1";
    wait_for("the found node is up", Duration::from_secs(10), || {
        node_up_with_classes(&coordinator, name)
    })
    .await;
    let node = coordinator.fleet().get(name).expect("in the fleet");
    assert_eq!(node.spec.url, format!("http://127.0.0.1:{port}"));
    assert_eq!(
        node.spec.labels.get("pool").map(String::as_str),
        Some("found")
    );
    assert_eq!(
        coordinator.fleet().nodes().len(),
        1,
        "added once, not per round"
    );
    assert_eq!(readyz(&coordinator).await, 200);

    let client = facade(&coordinator);
    let prompt_id = submit(&client, 3).await;
    wait_for_success(&client, &prompt_id, Duration::from_secs(20)).await;
    assert_eq!(node.status().jobs_done, 1, "the job ran on the found node");
    coordinator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_address_drains_its_node_which_leaves_after_its_job() {
    // About one second per image node: long enough to change DNS while the job runs.
    let sim = start_sim(250.0).await;
    let port = port_of(&sim);
    let data = tempfile::tempdir().expect("temp dir");
    let resolver = Arc::new(ScriptedResolver::default());
    let first: IpAddr = [127, 0, 0, 1].into();
    // Nothing listens on this loopback address: a replacement pod that is not up yet.
    let second: IpAddr = [127, 0, 0, 2].into();
    let coordinator = Coordinator::start(
        config_with_source(&data, "comfyui.gpu.svc.cluster.local", port),
        StartOptions {
            resolver: Some(resolver.clone()),
            ..StartOptions::default()
        },
    )
    .await
    .expect("coordinator starts");
    assert_eq!(readyz(&coordinator).await, 503, "no node yet");

    resolver.set(&[first]);
    let first_name = "comfyui-127-0-0-1";
    wait_for("the found node is up", Duration::from_secs(10), || {
        node_up_with_classes(&coordinator, first_name)
    })
    .await;
    assert_eq!(readyz(&coordinator).await, 200);
    let node = coordinator.fleet().get(first_name).expect("in the fleet");
    assert!(
        metrics_text(&coordinator)
            .await
            .contains(&format!("node=\"{first_name}\""))
    );

    let client = facade(&coordinator);
    let running = submit(&client, 5).await;
    wait_for("the job is on the node", Duration::from_secs(10), || {
        !node.prompts.is_empty()
    })
    .await;

    // The pod's address leaves the Service; a new one appears.
    resolver.set(&[second]);
    wait_for("the node drains", Duration::from_secs(5), || {
        node.status().leaving
    })
    .await;
    assert!(
        !node.prompts.is_empty(),
        "the job was still running when the drain began"
    );
    assert!(
        coordinator.fleet().get(first_name).is_some(),
        "a node holding a job stays in the fleet"
    );
    assert!(node.view().draining, "placement sees it drained");
    let second_name = "comfyui-127-0-0-2";
    assert!(
        coordinator.fleet().get(second_name).is_some(),
        "new address added"
    );

    // A job submitted now must not go to the leaving node; it waits for a node to come up.
    let queued = submit(&client, 6).await;

    wait_for_success(&client, &running, Duration::from_secs(20)).await;
    wait_for("the drained node leaves", Duration::from_secs(5), || {
        coordinator.fleet().get(first_name).is_none()
    })
    .await;
    assert_eq!(node.status().jobs_done, 1, "only the first job ran there");
    let deadline = Instant::now() + Duration::from_secs(5);
    while metrics_text(&coordinator)
        .await
        .contains(&format!("node=\"{first_name}\""))
    {
        assert!(
            Instant::now() < deadline,
            "the node's metrics are forgotten"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        readyz(&coordinator).await,
        503,
        "the new node never came up"
    );

    // The address comes back: a fresh node record runs the queued job.
    resolver.set(&[first, second]);
    wait_for("the address rejoins", Duration::from_secs(10), || {
        node_up_with_classes(&coordinator, first_name)
    })
    .await;
    wait_for_success(&client, &queued, Duration::from_secs(20)).await;
    let rejoined = coordinator.fleet().get(first_name).expect("in the fleet");
    assert!(!Arc::ptr_eq(&rejoined, &node), "a new node record");
    assert_eq!(rejoined.status().jobs_done, 1);
    coordinator.shutdown().await;
}

/// Drains or undrains `name` the way an operator does, over gRPC.
async fn operator_drain(coordinator: &Coordinator, name: &str, drain: bool) {
    use fleet_proto::v1 as pb;
    let mut fleet = pb::fleet_service_client::FleetServiceClient::connect(format!(
        "http://{}",
        coordinator.grpc_addr()
    ))
    .await
    .expect("gRPC connects");
    let name = name.to_owned();
    if drain {
        fleet
            .drain_node(pb::DrainNodeRequest { name })
            .await
            .expect("drain");
    } else {
        fleet
            .undrain_node(pb::UndrainNodeRequest { name })
            .await
            .expect("undrain");
    }
}

fn operator_drained(coordinator: &Coordinator, name: &str) -> Option<bool> {
    let node = coordinator.fleet().get(name)?;
    let draining = node.status().draining;
    Some(draining)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_drain_holds_for_a_found_node_that_leaves_returns_or_joins_after_a_restart() {
    let sim = start_sim(0.0).await;
    let port = port_of(&sim);
    let data = tempfile::tempdir().expect("temp dir");
    let address: IpAddr = [127, 0, 0, 1].into();
    let name = "comfyui-127-0-0-1";
    let start = |resolver: Arc<ScriptedResolver>| {
        Coordinator::start(
            config_with_source(&data, "comfyui.gpu.svc.cluster.local", port),
            StartOptions {
                resolver: Some(resolver),
                ..StartOptions::default()
            },
        )
    };

    let resolver = Arc::new(ScriptedResolver::default());
    resolver.set(&[address]);
    let coordinator = start(resolver.clone()).await.expect("coordinator starts");
    wait_for("the found node is up", Duration::from_secs(10), || {
        node_up_with_classes(&coordinator, name)
    })
    .await;
    operator_drain(&coordinator, name, true).await;

    // The address leaves the Service and comes back: a new node record, still drained.
    resolver.set(&[]);
    wait_for("the node leaves", Duration::from_secs(5), || {
        coordinator.fleet().get(name).is_none()
    })
    .await;
    resolver.set(&[address]);
    wait_for("the address rejoins", Duration::from_secs(10), || {
        node_up_with_classes(&coordinator, name)
    })
    .await;
    assert_eq!(operator_drained(&coordinator, name), Some(true));
    assert!(
        metrics_text(&coordinator).await.contains(&format!(
            "comfyfleet_node_health{{node=\"{name}\",state=\"draining\"}} 1"
        )),
        "{}",
        metrics_text(&coordinator).await
    );
    coordinator.shutdown().await;

    // Restarted while DNS has no answer yet: the node found later starts drained.
    let resolver = Arc::new(ScriptedResolver::default());
    let coordinator = start(resolver.clone()).await.expect("coordinator restarts");
    assert_eq!(operator_drained(&coordinator, name), None, "not found yet");
    resolver.set(&[address]);
    wait_for("the node is found", Duration::from_secs(10), || {
        node_up_with_classes(&coordinator, name)
    })
    .await;
    assert_eq!(operator_drained(&coordinator, name), Some(true));
    // A job waits rather than run there; undrained, the node runs it.
    let client = facade(&coordinator);
    let queued = submit(&client, 7).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let node = coordinator.fleet().get(name).expect("in the fleet");
    assert_eq!(node.status().jobs_done, 0, "a drained node ran a job");
    operator_drain(&coordinator, name, false).await;
    wait_for_success(&client, &queued, Duration::from_secs(20)).await;
    assert_eq!(operator_drained(&coordinator, name), Some(false));
    coordinator.shutdown().await;
}

#[test]
fn the_kubernetes_overlay_configuration_is_valid_and_discovers_the_statefulset() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/kubernetes/overlays/with-comfyui/comfyfleet.toml"
    );
    let text = std::fs::read_to_string(path).expect("the overlay's configuration is readable");
    let config = Config::from_toml_str(&text, path.as_ref()).expect("parses");
    config.validate().expect("valid");
    assert!(
        config.nodes.is_empty(),
        "no static node list beside discovery"
    );
    let sources = &config.discovery.sources;
    assert_eq!(sources.len(), 1);
    assert_eq!(
        (sources[0].host.as_str(), sources[0].port),
        ("comfyui", 8188)
    );
}
