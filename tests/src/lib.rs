//! Shared harness of the end-to-end tests: real emulated ComfyUI nodes, a real coordinator and
//! real gRPC clients over HTTP/2, all on 127.0.0.1 with ports picked by the OS.
//!
//! The coordinator is only trusted through its public API, so every helper here goes through
//! the gRPC services (or, for ground truth, straight to a node's HTTP routes). Waiting is
//! always done by polling a condition with a deadline ([`wait_until`]), never by fixed sleeps,
//! so the suite stays fast on an idle machine and tolerant on a loaded one.

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use comfy_sim::{GpuConfig, ModelFile, ModelFolder, NodeConfig, SimNode};
use coordinator::config::{Config, NodeConfig as FleetNodeConfig};
use coordinator::{Coordinator, StartOptions};
use fleet_proto::v1 as pb;
use fleet_proto::v1::fleet_service_client::FleetServiceClient;
use fleet_proto::v1::job_service_client::JobServiceClient;
use tonic::transport::Channel;

pub use fleet_proto::v1;

pub mod process;

/// One gibibyte.
pub const GIB: u64 = 1 << 30;

/// How long one whole job may take in these tests before a wait gives up.
pub const JOB_TIMEOUT: Duration = Duration::from_secs(30);

/// The shared ground-truth folder: `COMFYFLEET_SHARED_DIR`, else `<workspace>/../shared`.
///
/// # Panics
/// When the folder (with its `workflows/`) is missing: these tests must not pass vacuously.
pub fn shared_dir() -> PathBuf {
    let dir = std::env::var_os("COMFYFLEET_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared")));
    assert!(
        dir.join("workflows").is_dir(),
        "shared folder {} with workflows/ is missing: set COMFYFLEET_SHARED_DIR",
        dir.display()
    );
    dir
}

/// Reads a shared workflow (path relative to `workflows/`) byte for byte.
///
/// # Panics
/// When the file cannot be read.
pub fn workflow_bytes(relative: &str) -> Vec<u8> {
    let path = shared_dir().join("workflows").join(relative);
    std::fs::read(&path).unwrap_or_else(|error| panic!("read {}: {error}", path.display()))
}

/// The shared SD1.5 txt2img workflow with its sampler set to `steps` steps and `seed`.
///
/// A distinct seed per job keeps a node's cache from serving a job without running it.
pub fn sd15_workflow(steps: u32, seed: u64) -> Vec<u8> {
    let mut graph: serde_json::Value =
        serde_json::from_slice(&workflow_bytes("sd15-txt2img-basic-salad.json"))
            .expect("the shared SD1.5 workflow is JSON");
    let inputs = &mut graph["3"]["inputs"];
    inputs["steps"] = steps.into();
    inputs["seed"] = seed.into();
    serde_json::to_vec(&graph).expect("JSON serialises")
}

/// A seed no other job of the test run uses.
pub fn fresh_seed() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let pid = u64::from(std::process::id());
    (pid << 32) + NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A quick simulated node holding the SD1.5 and SDXL models the shared workflows name.
///
/// `time_scale` multiplies every simulated duration (model loads, steps).
pub fn sim_config(name: &str, time_scale: f64) -> NodeConfig {
    NodeConfig {
        name: name.to_owned(),
        gpu: GpuConfig::cuda("NVIDIA GeForce RTX 4090", 24 * GIB),
        time_scale,
        models: standard_models(false),
        ..NodeConfig::default()
    }
}

/// Model folders of a test node; `big` adds the Flux/Wan/SD3.5 families.
pub fn standard_models(big: bool) -> Vec<ModelFolder> {
    let mut checkpoints = vec![
        "v1-5-pruned-emaonly.safetensors",
        "v1-5-pruned-emaonly.ckpt",
        "dreamshaper_8.safetensors",
        "dreamshaperPixelart_v10.safetensors",
        "landscapePhotoreal_v1.safetensors",
        "sd_xl_base_1.0.safetensors",
        "sd_xl_refiner_1.0.safetensors",
    ];
    let mut text_encoders = vec!["clip_l.safetensors"];
    let mut vae = vec!["sdxl_vae.safetensors", "vae-ft-mse-840000-ema-pruned.ckpt"];
    let mut diffusion = vec![];
    if big {
        checkpoints.extend([
            "sd3.5_medium.safetensors",
            "flux1-dev-fp8.safetensors",
            "ltx-video-2b-v0.9.1.safetensors",
        ]);
        text_encoders.extend([
            "clip_g.safetensors",
            "t5xxl_fp8_e4m3fn.safetensors",
            "t5xxl_fp16.safetensors",
            "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
            "qwen_3_4b.safetensors",
            "llava_llama3_fp8_scaled.safetensors",
        ]);
        vae.extend([
            "wan_2.1_vae.safetensors",
            "ae.safetensors",
            "hunyuan_video_vae_bf16.safetensors",
        ]);
        diffusion.extend([
            "wan2.1_t2v_1.3B_bf16.safetensors",
            "z_image_turbo_bf16.safetensors",
            "flux1-dev.safetensors",
            "hunyuan_video_t2v_720p_bf16.safetensors",
        ]);
    }
    let folder = |name: &str, files: &[&str]| ModelFolder {
        folder: name.to_owned(),
        files: files.iter().map(|file| ModelFile::named(file)).collect(),
    };
    vec![
        folder("checkpoints", &checkpoints),
        folder("text_encoders", &text_encoders),
        folder("vae", &vae),
        folder("diffusion_models", &diffusion),
        folder(
            "loras",
            &["epiNoiseoffset_v2.safetensors", "example_lora.safetensors"],
        ),
        folder("upscale_models", &["RealESRGAN_x4plus.pth"]),
        folder("controlnet", &["control_v11p_sd15_canny.safetensors"]),
    ]
}

/// Polls `condition` until it holds, failing the test after `timeout` with `what`.
///
/// # Panics
/// When the condition does not hold in time.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if condition().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a watch stream delivered, up to its end.
#[derive(Debug, Clone)]
pub struct Watched {
    /// The first item: the job when the watch began.
    pub snapshot: pb::Job,
    /// Every event, in the order received.
    pub events: Vec<pb::JobEvent>,
    /// Gaps announced by the stream.
    pub gaps: Vec<pb::EventGap>,
}

impl Watched {
    /// The terminal event (the last one), if the stream ended with one.
    pub fn terminal(&self) -> Option<&pb::job_event::Kind> {
        self.events
            .last()
            .and_then(|event| event.kind.as_ref())
            .filter(|kind| is_terminal(kind))
    }

    /// Asserts that the job ended with a Succeeded event.
    ///
    /// # Panics
    /// When it did not.
    pub fn assert_succeeded(&self) {
        assert!(
            matches!(self.terminal(), Some(pb::job_event::Kind::Succeeded(_))),
            "{:?}",
            self.kinds()
        );
    }

    /// The failure of a job that ended with a Failed event.
    ///
    /// # Panics
    /// When the job did not fail.
    pub fn failure(&self) -> &pb::Failure {
        match self.terminal() {
            Some(pb::job_event::Kind::Failed(failed)) => failed
                .failure
                .as_ref()
                .expect("a Failed event carries its failure"),
            other => panic!("expected the job to fail, it ended with {other:?}"),
        }
    }

    /// The outputs of a job that ended with a Succeeded event.
    ///
    /// # Panics
    /// When the job did not succeed.
    pub fn outputs(&self) -> &[pb::Output] {
        match self.terminal() {
            Some(pb::job_event::Kind::Succeeded(done)) => &done.outputs,
            other => panic!("expected the job to succeed, it ended with {other:?}"),
        }
    }

    /// Short names of the event kinds, in order (for assertions and failure messages).
    pub fn kinds(&self) -> Vec<&'static str> {
        self.events
            .iter()
            .map(|event| event.kind.as_ref().map_or("none", kind_name))
            .collect()
    }
}

/// Whether an event kind ends a job.
pub fn is_terminal(kind: &pb::job_event::Kind) -> bool {
    use pb::job_event::Kind;
    matches!(
        kind,
        Kind::Succeeded(_) | Kind::Failed(_) | Kind::Cancelled(_)
    )
}

/// A short name for an event kind.
pub fn kind_name(kind: &pb::job_event::Kind) -> &'static str {
    use pb::job_event::Kind;
    match kind {
        Kind::Queued(_) => "queued",
        Kind::Dispatched(_) => "dispatched",
        Kind::Started(_) => "started",
        Kind::NodeExecuting(_) => "node_executing",
        Kind::Progress(_) => "progress",
        Kind::NodesCached(_) => "nodes_cached",
        Kind::NodeExecuted(_) => "node_executed",
        Kind::PreviewImage(_) => "preview_image",
        Kind::Succeeded(_) => "succeeded",
        Kind::Failed(_) => "failed",
        Kind::Retrying(_) => "retrying",
        Kind::Cancelled(_) => "cancelled",
    }
}

/// Sims, a coordinator in front of them and gRPC clients to it.
pub struct TestFleet {
    /// The simulated nodes, in the order given.
    pub sims: Vec<SimNode>,
    coordinator: Option<Coordinator>,
    jobs: JobServiceClient<Channel>,
    fleet: FleetServiceClient<Channel>,
    _data_dir: tempfile::TempDir,
}

impl TestFleet {
    /// Starts one sim per config and a coordinator with test settings in front of them, and
    /// waits until every node is up.
    pub async fn start(nodes: Vec<NodeConfig>) -> Self {
        Self::start_with(nodes, |_| {}).await
    }

    /// Like [`TestFleet::start`], letting the test adjust the coordinator's configuration.
    pub async fn start_with(nodes: Vec<NodeConfig>, adjust: impl FnOnce(&mut Config)) -> Self {
        let mut sims = Vec::new();
        for node in nodes {
            let name = node.name.clone();
            let sim = comfy_sim::spawn(node, "127.0.0.1:0".parse().expect("address"))
                .await
                .unwrap_or_else(|error| panic!("start sim {name}: {error}"));
            sims.push(sim);
        }
        let data_dir = tempfile::tempdir().expect("temporary data dir");
        let mut config = Config {
            grpc_listen: "127.0.0.1:0".parse().expect("address"),
            http_listen: "127.0.0.1:0".parse().expect("address"),
            data_dir: data_dir.path().to_path_buf(),
            nodes: sims
                .iter()
                .map(|sim| FleetNodeConfig {
                    name: sim.name().to_owned(),
                    url: url::Url::parse(&sim.url()).expect("sim url"),
                    labels: Default::default(),
                })
                .collect(),
            ..Config::default()
        };
        config.probe.interval = Duration::from_millis(100);
        config.probe.jitter = Duration::from_millis(10);
        config.websocket.reconnect_min = Duration::from_millis(50);
        config.websocket.reconnect_max = Duration::from_millis(500);
        config.dispatch.node_down_grace = Duration::from_secs(1);
        adjust(&mut config);
        let options = StartOptions {
            simulated: sims.iter().map(|sim| sim.name().to_owned()).collect(),
            ..StartOptions::default()
        };
        let coordinator = Coordinator::start(config, options)
            .await
            .unwrap_or_else(|error| panic!("start coordinator: {error}"));
        let endpoint = format!("http://{}", coordinator.grpc_addr());
        let channel = Channel::from_shared(endpoint)
            .expect("endpoint")
            .connect()
            .await
            .expect("connect to the coordinator");
        let fleet = Self {
            sims,
            coordinator: Some(coordinator),
            jobs: JobServiceClient::new(channel.clone()),
            fleet: FleetServiceClient::new(channel),
            _data_dir: data_dir,
        };
        let expected = fleet.sims.len();
        wait_until("every node up", Duration::from_secs(10), || async {
            let nodes = fleet.nodes().await;
            nodes.len() == expected && nodes.iter().all(|node| node.health() == pb::NodeHealth::Up)
        })
        .await;
        fleet
    }

    /// A job client (cheap to clone, safe to use concurrently).
    pub fn jobs(&self) -> JobServiceClient<Channel> {
        self.jobs.clone()
    }

    /// A fleet client.
    pub fn fleet_client(&self) -> FleetServiceClient<Channel> {
        self.fleet.clone()
    }

    /// The sim named `name`.
    ///
    /// # Panics
    /// When there is none.
    pub fn sim(&self, name: &str) -> &SimNode {
        self.sims
            .iter()
            .find(|sim| sim.name() == name)
            .unwrap_or_else(|| panic!("no sim named {name}"))
    }

    /// The coordinator's gRPC address.
    pub fn grpc_addr(&self) -> std::net::SocketAddr {
        self.coordinator
            .as_ref()
            .expect("coordinator running")
            .grpc_addr()
    }

    /// The coordinator's HTTP address (health, metrics).
    pub fn http_addr(&self) -> std::net::SocketAddr {
        self.coordinator
            .as_ref()
            .expect("coordinator running")
            .http_addr()
    }

    /// Submits a workflow with default options; the job id or the refusal.
    pub async fn submit(&self, workflow: &[u8]) -> Result<String, tonic::Status> {
        self.submit_request(pb::SubmitJobRequest {
            workflow: workflow.to_vec(),
            ..pb::SubmitJobRequest::default()
        })
        .await
    }

    /// Submits a full request; the job id or the refusal.
    pub async fn submit_request(
        &self,
        request: pb::SubmitJobRequest,
    ) -> Result<String, tonic::Status> {
        let response = self.jobs().submit_job(request).await?.into_inner();
        Ok(response.job_id)
    }

    /// Submits `workflow` and watches the job to its end; returns its id and what was seen.
    ///
    /// # Panics
    /// When the submission is refused, or as [`TestFleet::watch_to_end`].
    pub async fn run(&self, workflow: &[u8]) -> (String, Watched) {
        let id = self.submit(workflow).await.expect("submit");
        let watched = self.watch_to_end(&id).await;
        (id, watched)
    }

    /// Watches a job from its first event to the end of the stream.
    pub async fn watch_to_end(&self, job_id: &str) -> Watched {
        self.watch_after(job_id, 0).await
    }

    /// Watches a job from after `after_sequence` to the end of the stream.
    ///
    /// # Panics
    /// On a stream error or when the stream does not end within [`JOB_TIMEOUT`].
    pub async fn watch_after(&self, job_id: &str, after_sequence: u64) -> Watched {
        let collect = async {
            let mut stream = self
                .jobs()
                .watch_job(pb::WatchJobRequest {
                    job_id: job_id.to_owned(),
                    after_sequence,
                    include_previews: false,
                })
                .await
                .unwrap_or_else(|status| panic!("watch {job_id}: {status}"))
                .into_inner();
            collect_watch(job_id, &mut stream).await
        };
        tokio::time::timeout(JOB_TIMEOUT, collect)
            .await
            .unwrap_or_else(|_| panic!("job {job_id}: watch did not end in {JOB_TIMEOUT:?}"))
    }

    /// The job's current snapshot.
    ///
    /// # Panics
    /// When the call fails.
    pub async fn get(&self, job_id: &str) -> pb::Job {
        self.jobs()
            .get_job(pb::GetJobRequest {
                job_id: job_id.to_owned(),
            })
            .await
            .unwrap_or_else(|status| panic!("get {job_id}: {status}"))
            .into_inner()
            .job
            .expect("GetJob answers a job")
    }

    /// Every node as the coordinator sees it.
    ///
    /// # Panics
    /// When the call fails.
    pub async fn nodes(&self) -> Vec<pb::Node> {
        self.fleet_client()
            .list_nodes(pb::ListNodesRequest {})
            .await
            .expect("ListNodes")
            .into_inner()
            .nodes
    }

    /// Cancels a job; the call's result.
    pub async fn cancel(
        &self,
        job_id: &str,
        reason: &str,
    ) -> Result<pb::CancelJobResponse, tonic::Status> {
        Ok(self
            .jobs()
            .cancel_job(pb::CancelJobRequest {
                job_id: job_id.to_owned(),
                reason: reason.to_owned(),
            })
            .await?
            .into_inner())
    }

    /// Fetches one output's bytes through `FetchOutput`; the header and the bytes.
    pub async fn fetch_output(
        &self,
        job_id: &str,
        index: u32,
    ) -> Result<(pb::OutputHeader, Vec<u8>), tonic::Status> {
        let mut stream = self
            .jobs()
            .fetch_output(pb::FetchOutputRequest {
                job_id: job_id.to_owned(),
                selector: Some(pb::fetch_output_request::Selector::OutputIndex(index)),
                chunk_size: 0,
            })
            .await?
            .into_inner();
        let mut header = None;
        let mut bytes = Vec::new();
        while let Some(message) = stream.message().await? {
            match message.item {
                Some(pb::fetch_output_response::Item::Header(h)) => {
                    assert!(header.is_none(), "job {job_id}: two output headers");
                    header = Some(h);
                }
                Some(pb::fetch_output_response::Item::Chunk(chunk)) => {
                    assert!(header.is_some(), "job {job_id}: a chunk before the header");
                    bytes.extend_from_slice(&chunk);
                }
                None => panic!("job {job_id}: empty FetchOutput message"),
            }
        }
        let header = header.unwrap_or_else(|| panic!("job {job_id}: no output header"));
        Ok((header, bytes))
    }

    /// Waits until the job's state is `state`.
    pub async fn wait_for_state(&self, job_id: &str, state: pb::JobState) {
        wait_until(
            &format!("job {job_id} in {state:?}"),
            JOB_TIMEOUT,
            || async { self.get(job_id).await.state() == state },
        )
        .await;
    }

    /// Stops the coordinator (the sims stop when the fleet is dropped).
    pub async fn shutdown(mut self) {
        if let Some(coordinator) = self.coordinator.take() {
            coordinator.shutdown().await;
        }
    }
}

/// Reads a watch stream to its end, checking it is shaped as the contract says.
///
/// # Panics
/// On a stream error, a missing or repeated snapshot.
pub async fn collect_watch(
    job_id: &str,
    stream: &mut tonic::Streaming<pb::WatchJobResponse>,
) -> Watched {
    let mut snapshot = None;
    let mut events = Vec::new();
    let mut gaps = Vec::new();
    while let Some(message) = stream
        .message()
        .await
        .unwrap_or_else(|status| panic!("watch {job_id}: stream error {status}"))
    {
        match message.item {
            Some(pb::watch_job_response::Item::Snapshot(job)) => {
                assert!(
                    snapshot.is_none() && events.is_empty(),
                    "job {job_id}: snapshot not first or sent twice"
                );
                snapshot = Some(job);
            }
            Some(pb::watch_job_response::Item::Event(event)) => {
                assert!(snapshot.is_some(), "job {job_id}: event before snapshot");
                events.push(event);
            }
            Some(pb::watch_job_response::Item::Gap(gap)) => gaps.push(gap),
            None => panic!("job {job_id}: empty watch message"),
        }
    }
    Watched {
        snapshot: snapshot.unwrap_or_else(|| panic!("job {job_id}: no snapshot")),
        events,
        gaps,
    }
}

/// GET `url` on a node; status and body bytes.
///
/// # Panics
/// When the node cannot be reached.
pub async fn http_get(url: &str) -> (u16, Vec<u8>) {
    let response = reqwest::get(url)
        .await
        .unwrap_or_else(|error| panic!("GET {url}: {error}"));
    let status = response.status().as_u16();
    let body = response
        .bytes()
        .await
        .unwrap_or_else(|error| panic!("GET {url}: body: {error}"));
    (status, body.to_vec())
}

/// The node's `/history/{prompt_id}` entry as JSON, if it has one.
pub async fn node_history(sim: &SimNode, prompt_id: &str) -> Option<serde_json::Value> {
    let (status, body) = http_get(&format!("{}/history/{prompt_id}", sim.url())).await;
    assert_eq!(
        status,
        200,
        "node {}: GET /history answered {status}",
        sim.name()
    );
    let all: serde_json::Value = serde_json::from_slice(&body).expect("history is JSON");
    all.get(prompt_id).cloned()
}

/// Watches `job_id` from its first event until its first progress event, and returns the
/// events read (that one included); the stream is dropped there, as a watcher that
/// disconnects mid-job would.
///
/// # Panics
/// When the watch is refused or the stream breaks.
pub async fn read_until_progress(
    jobs: &mut JobServiceClient<Channel>,
    job_id: &str,
) -> Vec<pb::JobEvent> {
    let mut stream = jobs
        .watch_job(pb::WatchJobRequest {
            job_id: job_id.to_owned(),
            after_sequence: 0,
            include_previews: false,
        })
        .await
        .expect("watch")
        .into_inner();
    let mut seen = Vec::new();
    while let Some(message) = stream.message().await.expect("stream") {
        if let Some(pb::watch_job_response::Item::Event(event)) = message.item {
            let is_progress = matches!(event.kind, Some(pb::job_event::Kind::Progress(_)));
            seen.push(event);
            if is_progress {
                break;
            }
        }
    }
    seen
}
