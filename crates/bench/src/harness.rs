//! A whole system under test in one process: simulated ComfyUI nodes on 127.0.0.1, a real
//! coordinator in front of them, and gRPC clients connected to it.
//!
//! Every benchmark run starts a fresh harness so runs cannot leak queue, cache or model state
//! into each other. The coordinator is started exactly as `comfyfleet up` does (the library's
//! `Coordinator::start` with ports 0 and a temporary data directory); only the settings a
//! benchmark must control (policy, probe interval, down grace, queue limits) differ from the
//! defaults.

use std::time::{Duration, Instant};

use comfy_sim::SimNode;
use coordinator::config::{Config, NodeConfig};
use coordinator::{Coordinator, StartOptions};
use fleet_proto::v1::fleet_service_client::FleetServiceClient;
use fleet_proto::v1::job_service_client::JobServiceClient;
use fleet_proto::v1::{ListNodesRequest, NodeHealth};
use tonic::transport::{Channel, Endpoint};
use tracing::{debug, info};

use crate::error::BenchError;

/// Settings of one harness.
#[derive(Debug, Clone)]
pub struct HarnessOptions {
    /// The placement policy.
    pub policy: scheduler::PolicyConfig,
    /// Time between node probes (also how fast a killed node is noticed).
    pub probe_interval: Duration,
    /// How long a node may be unreachable before its jobs are requeued.
    pub node_down_grace: Duration,
    /// Prompts kept on one node at a time; `None` keeps the coordinator's default.
    pub slots_per_node: Option<u32>,
    /// Number of gRPC connections the client spreads its calls over.
    pub channels: usize,
}

impl Default for HarnessOptions {
    fn default() -> Self {
        Self {
            policy: scheduler::PolicyConfig::default(),
            probe_interval: Duration::from_millis(250),
            node_down_grace: Duration::from_secs(2),
            slots_per_node: None,
            channels: 4,
        }
    }
}

/// The running system under test.
pub struct Harness {
    /// The simulated nodes, in configuration order.
    pub sims: Vec<SimNode>,
    coordinator: Coordinator,
    jobs: Vec<JobServiceClient<Channel>>,
    fleet: FleetServiceClient<Channel>,
    // Dropped last: the journal lives here.
    _data_dir: tempfile::TempDir,
}

impl Harness {
    /// Starts the nodes, then a coordinator over them, then connects clients.
    ///
    /// # Errors
    /// A node or the coordinator fails to start, or the gRPC endpoint cannot be reached.
    pub async fn start(
        nodes: Vec<comfy_sim::NodeConfig>,
        options: &HarnessOptions,
    ) -> Result<Self, BenchError> {
        let data_dir = tempfile::Builder::new()
            .prefix("comfyfleet-bench-")
            .tempdir()
            .map_err(BenchError::TempDir)?;
        let mut sims = Vec::with_capacity(nodes.len());
        let mut config = Config {
            grpc_listen: ([127, 0, 0, 1], 0).into(),
            http_listen: ([127, 0, 0, 1], 0).into(),
            data_dir: data_dir.path().to_path_buf(),
            ..Config::default()
        };
        config.probe.interval = options.probe_interval;
        config.probe.jitter = options.probe_interval / 10;
        config.dispatch.node_down_grace = options.node_down_grace;
        if let Some(slots) = options.slots_per_node {
            config.dispatch.slots_per_node = slots;
        }
        // The benchmarks measure placement and relaying, not admission control.
        config.limits.max_queued_jobs = 1_000_000;
        config.limits.max_queued_jobs_per_tenant = 1_000_000;
        config.limits.max_watchers_per_job = 4;
        let mut simulated = Vec::new();
        for node in nodes {
            let name = node.name.clone();
            let sim = comfy_sim::spawn(node, ([127, 0, 0, 1], 0).into())
                .await
                .map_err(|source| BenchError::Sim {
                    node: name.clone(),
                    source,
                })?;
            let url = sim
                .url()
                .parse()
                .map_err(|error| BenchError::Invalid(format!("node {name}: url: {error}")))?;
            config.nodes.push(NodeConfig {
                name: name.clone(),
                url,
                labels: Default::default(),
            });
            simulated.push(name);
            sims.push(sim);
        }
        let coordinator = Coordinator::start(
            config,
            StartOptions {
                policy: Some(options.policy.clone()),
                simulated,
                ..StartOptions::default()
            },
        )
        .await?;
        let addr = format!("http://{}", coordinator.grpc_addr());
        let mut jobs = Vec::new();
        for _ in 0..options.channels.max(1) {
            // Separate endpoints give separate HTTP/2 connections, so thousands of concurrent
            // watch streams are not serialised behind one connection's stream limit.
            let channel = connect(&addr).await?;
            jobs.push(JobServiceClient::new(channel).max_decoding_message_size(64 << 20));
        }
        let fleet = FleetServiceClient::new(connect(&addr).await?);
        info!(%addr, nodes = sims.len(), policy = options.policy.kind.as_str(), "harness started");
        Ok(Self {
            sims,
            coordinator,
            jobs,
            fleet,
            _data_dir: data_dir,
        })
    }

    /// A job client; `index` picks one of the connections round-robin.
    pub fn jobs(&self, index: usize) -> JobServiceClient<Channel> {
        self.jobs[index % self.jobs.len()].clone()
    }

    /// Waits until every node is up with its GPU known, then one more probe interval so the
    /// coordinator has read every node's classes and models (read right after the first good
    /// probe).
    ///
    /// # Errors
    /// [`BenchError::NotReady`] naming the nodes still not up after `timeout`.
    pub async fn wait_ready(
        &mut self,
        timeout: Duration,
        probe_interval: Duration,
    ) -> Result<(), BenchError> {
        let deadline = Instant::now() + timeout;
        loop {
            let nodes = self
                .fleet
                .list_nodes(ListNodesRequest {})
                .await
                .map_err(|status| BenchError::rpc("list nodes", status))?
                .into_inner()
                .nodes;
            let waiting: Vec<String> = nodes
                .iter()
                .filter(|node| node.health() != NodeHealth::Up || node.vram_total == 0)
                .map(|node| node.name.clone())
                .collect();
            if waiting.is_empty() && nodes.len() == self.sims.len() {
                debug!("every node is up");
                tokio::time::sleep(probe_interval * 2).await;
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(BenchError::NotReady(format!(
                    "nodes not up after {timeout:?}: {}",
                    waiting.join(", ")
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the coordinator, then the nodes.
    pub async fn shutdown(self) {
        self.coordinator.shutdown().await;
        for sim in self.sims {
            sim.shutdown();
        }
    }
}

async fn connect(addr: &str) -> Result<Channel, BenchError> {
    let endpoint =
        Endpoint::from_shared(addr.to_owned()).map_err(|source| BenchError::Connect {
            addr: addr.to_owned(),
            source,
        })?;
    endpoint
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|source| BenchError::Connect {
            addr: addr.to_owned(),
            source,
        })
}
