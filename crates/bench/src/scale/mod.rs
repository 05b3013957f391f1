//! `scale`: what a large fleet and a deep queue cost the coordinator process.
//!
//! Three figures the coordinator is held to, each measured on the real `comfyfleet serve`
//! binary running as its own process (so its CPU time and memory are its own, not mixed with
//! the emulated nodes' or the client's):
//!
//! - **probe cost**: `nodes` emulated ComfyUI nodes (comfy-sim, in this process, each on its
//!   own 127.0.0.1 port) behind one coordinator that probes each of them every
//!   `probe_interval` (`/system_stats` and `/queue`) and keeps one WebSocket per node. After
//!   the fleet is up and has settled, the coordinator's CPU time (`utime + stime` from
//!   `/proc/<pid>/stat`) is read over a window with no jobs at all, and given as a share of
//!   one core; the probes it actually completed in the window are counted from its own
//!   `comfyfleet_node_probe_duration_seconds` histogram, so a coordinator that silently
//!   probed less often could not pass. Target: under 10% of one core for 1,000 nodes at 1 s.
//! - **queue memory**: one emulated node, drained over the gRPC `DrainNode` call once it is
//!   up, so every job is accepted, made durable and then waits in the coordinator's queue
//!   (a drained node keeps its classes and models, so the jobs are feasible and wait for
//!   it). `jobs` SDXL-like text-to-image jobs with distinct seeds are submitted concurrently
//!   over gRPC; the coordinator's `VmRSS` and `VmHWM` (`/proc/<pid>/status`) are read before
//!   and after, giving bytes per queued job. The jobs are then cancelled and the coordinator
//!   stopped with SIGTERM, so the run ends cleanly. Target: 100,000 queued jobs under
//!   300 MiB resident.
//! - **sustained throughput** ([`throughput`]): zero-work nodes, clients in a closed loop;
//!   finished jobs per second and the coordinator's CPU per job. Target: 5,000 jobs/s on
//!   two cores.
//!
//! Many sockets are open at once (two per node on each side at least), so this process raises
//! its soft `RLIMIT_NOFILE` to the hard limit first; the coordinator raises its own the same
//! way at start.
//!
//! NOTE: the emulated nodes run in this process on the same cores as the coordinator, so on a
//! small machine they compete with it for CPU. That does not inflate the coordinator's CPU
//! time (it is the time the process itself ran), but it can make probes slower in wall time;
//! the report gives the probes actually completed per second so a starved run shows.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use comfy_sim::SimNode;
use fleet_proto::v1::fleet_service_client::FleetServiceClient;
use fleet_proto::v1::job_service_client::JobServiceClient;
use fleet_proto::v1::{
    CancelJobRequest, DrainNodeRequest, ListNodesRequest, NodeHealth, SubmitJobRequest,
};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::{Channel, Endpoint};
use tracing::{info, warn};

use crate::error::BenchError;
use crate::stats::{Summary, summarize};
use crate::workflow::{self, Txt2Img};

pub mod throughput;

pub use throughput::{ThroughputOptions, ThroughputReport};

/// The probe-cost target: share of one core.
pub const PROBE_TARGET_PERCENT: f64 = 10.0;
/// The queue-memory target: resident MiB with the queue full.
pub const MEMORY_TARGET_MIB: f64 = 300.0;

/// Settings of the probe-cost part.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// Emulated nodes.
    pub nodes: usize,
    /// The coordinator's `probe.interval`.
    pub interval: Duration,
    /// Time allowed for every node to come up.
    pub ready_timeout: Duration,
    /// Time after the fleet is up before measuring (inventory reads, connection set-up).
    pub settle: Duration,
    /// The measured window.
    pub window: Duration,
}

/// Settings of the queue-memory part.
#[derive(Debug, Clone)]
pub struct MemoryOptions {
    /// Jobs to queue.
    pub jobs: usize,
    /// Submissions in flight at once.
    pub concurrency: usize,
    /// gRPC connections the submissions are spread over.
    pub channels: usize,
    /// Cancel every job afterwards (otherwise the coordinator is stopped with them queued).
    pub cancel: bool,
}

/// Settings of one `scale` run.
#[derive(Debug, Clone)]
pub struct ScaleOptions {
    /// The `comfyfleet` binary.
    pub binary: PathBuf,
    /// Where the coordinators' logs and generated configurations are kept.
    pub work_dir: PathBuf,
    /// The probe-cost part; `None` skips it.
    pub probe: Option<ProbeOptions>,
    /// The queue-memory part; `None` skips it.
    pub memory: Option<MemoryOptions>,
    /// The throughput part; `None` skips it.
    pub throughput: Option<ThroughputOptions>,
}

/// Figures of the probe-cost part.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    /// Emulated nodes configured.
    pub nodes: usize,
    /// Nodes up (per `ListNodes`) when the window started.
    pub nodes_up_start: usize,
    /// Nodes up when the window ended.
    pub nodes_up_end: usize,
    /// The probe interval, in milliseconds.
    pub interval_ms: u64,
    /// Seconds from starting the coordinator until every node was up.
    pub ready_s: f64,
    /// Length of the measured window, in seconds (wall).
    pub window_s: f64,
    /// Coordinator CPU seconds (user + system) in the window.
    pub cpu_s: f64,
    /// Of which user time.
    pub user_s: f64,
    /// Of which system time.
    pub system_s: f64,
    /// `cpu_s / window_s`, in percent of one core.
    pub cpu_percent_of_core: f64,
    /// Probe rounds completed per second in the window (all nodes).
    pub probes_per_s: f64,
    /// Probe rounds expected per second (`nodes / interval`, jitter ignored).
    pub probes_expected_per_s: f64,
    /// Failed probes in the window.
    pub probe_failures: f64,
    /// Coordinator CPU per probe round, in microseconds.
    pub cpu_us_per_probe: f64,
    /// Resident set at the end of the window, in MiB.
    pub rss_mib: f64,
    /// Peak resident set so far, in MiB.
    pub hwm_mib: f64,
    /// Coordinator threads.
    pub threads: u64,
    /// Open file descriptors of the coordinator.
    pub open_fds: usize,
    /// CPU of this process (the emulated nodes and the client) in the window, in percent of
    /// one core, for context.
    pub emulator_cpu_percent_of_core: f64,
    /// Target, in percent of one core.
    pub target_percent: f64,
    /// Whether the target was met with every node up.
    pub met: bool,
}

/// Figures of the queue-memory part.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryReport {
    /// Jobs offered.
    pub jobs: usize,
    /// Jobs accepted.
    pub accepted: usize,
    /// Jobs refused, by gRPC code.
    pub refused: std::collections::BTreeMap<String, usize>,
    /// Jobs the coordinator reports queued (`comfyfleet_jobs_queued`) after the submissions.
    pub queued_reported: f64,
    /// Bytes of one workflow (they differ only in the seed).
    pub workflow_bytes: usize,
    /// Submissions in flight at once.
    pub concurrency: usize,
    /// Resident set before the first submission, in MiB.
    pub rss_before_mib: f64,
    /// Resident set with every job queued, in MiB.
    pub rss_after_mib: f64,
    /// Peak resident set, in MiB.
    pub hwm_after_mib: f64,
    /// `(rss_after - rss_before) / accepted`.
    pub bytes_per_job: f64,
    /// Seconds from the first submission to the last answer.
    pub submit_s: f64,
    /// Accepted jobs per second.
    pub submit_per_s: f64,
    /// Latency of one `SubmitJob`, as seen by the client.
    pub submit_rpc: Summary,
    /// Resident set sampled about every second while submitting: (seconds, accepted, MiB).
    pub rss_curve: Vec<(f64, usize, f64)>,
    /// Jobs cancelled afterwards.
    pub cancelled: usize,
    /// Cancellations per second.
    pub cancel_per_s: f64,
    /// Resident set after the cancellations, in MiB.
    pub rss_after_cancel_mib: f64,
    /// Whether the coordinator exited with status 0 after SIGTERM.
    pub clean_exit: bool,
    /// Seconds from SIGTERM to exit.
    pub exit_s: f64,
    /// Target, in MiB.
    pub target_mib: f64,
    /// Whether the target was met with every job accepted.
    pub met: bool,
}

/// The result of one `scale` run.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleReport {
    /// The probe-cost part, if run.
    pub probe: Option<ProbeReport>,
    /// The queue-memory part, if run.
    pub memory: Option<MemoryReport>,
    /// The throughput part, if run.
    pub throughput: Option<ThroughputReport>,
    /// The soft and hard `RLIMIT_NOFILE` of this process after raising it.
    pub nofile_limit: (u64, u64),
    /// `COMFYFLEET_*` variables passed on to the coordinators (they override the generated
    /// configuration).
    pub coordinator_env: Vec<String>,
}

/// Runs the parts `options` asks for, one after the other, each on a fresh coordinator.
///
/// # Errors
/// The binary cannot be started, the fleet never comes up, or the coordinator cannot be read.
pub async fn run(options: &ScaleOptions) -> Result<ScaleReport, BenchError> {
    let nofile_limit = raise_nofile_limit()?;
    std::fs::create_dir_all(&options.work_dir).map_err(|source| BenchError::Output {
        path: options.work_dir.clone(),
        source,
    })?;
    let probe = match &options.probe {
        Some(probe) => Some(probe_cost(options, probe).await?),
        None => None,
    };
    let memory = match &options.memory {
        Some(memory) => Some(queue_memory(options, memory).await?),
        None => None,
    };
    let throughput = match &options.throughput {
        Some(throughput) => Some(throughput::sustained_throughput(options, throughput).await?),
        None => None,
    };
    Ok(ScaleReport {
        probe,
        memory,
        throughput,
        nofile_limit,
        coordinator_env: coordinator_env(),
    })
}

/// The `COMFYFLEET_*` variables of this process, as `NAME=value`.
fn coordinator_env() -> Vec<String> {
    let mut vars: Vec<String> = std::env::vars()
        .filter(|(name, _)| name.starts_with("COMFYFLEET_") && name != "COMFYFLEET_BIN")
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    vars.sort();
    vars
}

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit; returns (soft, hard).
///
/// # Errors
/// The limit cannot be read or set.
pub fn raise_nofile_limit() -> Result<(u64, u64), BenchError> {
    let (_, hard) = rlimit::Resource::NOFILE
        .get()
        .map_err(|error| BenchError::Invalid(format!("RLIMIT_NOFILE: {error}")))?;
    let soft = rlimit::increase_nofile_limit(hard)
        .map_err(|error| BenchError::Invalid(format!("RLIMIT_NOFILE: {error}")))?;
    Ok((soft, hard))
}

/// The `comfyfleet` binary: `explicit` if given, else `COMFYFLEET_BIN`, else the one beside
/// this executable (`<target>/<profile>/comfyfleet`, built by
/// `cargo build --release -p bench -p comfyfleet`).
///
/// # Errors
/// No such file.
pub fn coordinator_binary(explicit: Option<&Path>) -> Result<PathBuf, BenchError> {
    let path = match explicit {
        Some(path) => path.to_path_buf(),
        None => match std::env::var_os("COMFYFLEET_BIN") {
            Some(path) => PathBuf::from(path),
            None => profile_dir()?.join("comfyfleet"),
        },
    };
    if !path.is_file() {
        return Err(BenchError::Invalid(format!(
            "coordinator binary {}: not found; build it with `cargo build --release -p bench -p comfyfleet` or name it with --coordinator-bin or COMFYFLEET_BIN",
            path.display()
        )));
    }
    Ok(path)
}

/// The cargo profile folder this executable runs from (`<target>/<profile>`), where the
/// `comfyfleet` binary of the same build lives.
///
/// # Errors
/// The executable's own path cannot be read.
pub fn profile_dir() -> Result<PathBuf, BenchError> {
    let exe = std::env::current_exe()
        .map_err(|error| BenchError::Invalid(format!("own path: {error}")))?;
    let dir = exe
        .parent()
        .ok_or_else(|| BenchError::Invalid("own path has no folder".into()))?;
    // Test binaries live one level deeper, in <profile>/deps.
    let dir = if dir.ends_with("deps") {
        dir.parent().unwrap_or(dir)
    } else {
        dir
    };
    Ok(dir.to_path_buf())
}

/// What the generated configuration sets beyond the defaults.
#[derive(Debug, Clone)]
pub struct ConfigSettings {
    /// gRPC address.
    pub grpc_listen: SocketAddr,
    /// HTTP address.
    pub http_listen: SocketAddr,
    /// Journal folder.
    pub data_dir: PathBuf,
    /// `probe.interval`.
    pub probe_interval: Duration,
    /// `limits.max_queued_jobs` and `limits.max_queued_jobs_per_tenant`.
    pub max_queued_jobs: u64,
}

/// The coordinator's TOML configuration listing `nodes` as (name, url).
pub fn config_toml(settings: &ConfigSettings, nodes: &[(String, String)]) -> String {
    use toml::{Table, Value};
    let millis = |duration: Duration| Value::String(format!("{}ms", duration.as_millis()));
    let mut root = Table::new();
    root.insert(
        "grpc_listen".into(),
        Value::String(settings.grpc_listen.to_string()),
    );
    root.insert(
        "http_listen".into(),
        Value::String(settings.http_listen.to_string()),
    );
    root.insert(
        "data_dir".into(),
        Value::String(settings.data_dir.display().to_string()),
    );
    root.insert("log_format".into(), Value::String("json".into()));
    let mut probe = Table::new();
    probe.insert("interval".into(), millis(settings.probe_interval));
    // The default jitter (100 ms) spreads probes of a 1 s interval; keep it below the interval
    // for shorter ones, as the configuration requires.
    probe.insert("jitter".into(), millis(settings.probe_interval / 10));
    root.insert("probe".into(), Value::Table(probe));
    let mut limits = Table::new();
    let max = i64::try_from(settings.max_queued_jobs).unwrap_or(i64::MAX);
    limits.insert("max_queued_jobs".into(), Value::Integer(max));
    limits.insert("max_queued_jobs_per_tenant".into(), Value::Integer(max));
    root.insert("limits".into(), Value::Table(limits));
    let nodes = nodes
        .iter()
        .map(|(name, url)| {
            let mut node = Table::new();
            node.insert("name".into(), Value::String(name.clone()));
            node.insert("url".into(), Value::String(url.clone()));
            Value::Table(node)
        })
        .collect();
    root.insert("nodes".into(), Value::Array(nodes));
    root.to_string()
}

/// A cheap emulated node: no simulated work, only the classes the benchmarks' workflows use,
/// a short history.
pub fn cheap_node(name: String) -> comfy_sim::NodeConfig {
    comfy_sim::NodeConfig {
        name,
        gpu: comfy_sim::GpuConfig::cuda("NVIDIA GeForce RTX 4090", 24 << 30),
        time_scale: 0.0,
        node_classes: [
            "CheckpointLoaderSimple",
            "CLIPTextEncode",
            "EmptyLatentImage",
            "KSampler",
            "VAEDecode",
            "SaveImage",
            "EmptyImage",
        ]
        .map(str::to_owned)
        .to_vec(),
        history_cap: 64,
        ws_backlog_bytes: 1 << 20,
        ..comfy_sim::NodeConfig::default()
    }
}

/// The job of the queue-memory part: an SDXL text-to-image graph at 1024×1024, 30 steps.
pub fn sdxl_job(seed: u64) -> Vec<u8> {
    workflow::txt2img(&Txt2Img {
        checkpoint: "sd_xl_base_1.0.safetensors".into(),
        steps: 30,
        width: 1024,
        height: 1024,
        seed,
    })
}

async fn probe_cost(
    options: &ScaleOptions,
    probe: &ProbeOptions,
) -> Result<ProbeReport, BenchError> {
    if probe.nodes == 0 {
        return Err(BenchError::Invalid("--nodes must be at least 1".into()));
    }
    eprintln!("scale: starting {} emulated nodes", probe.nodes);
    let sims = spawn_sims(probe.nodes).await?;
    let nodes: Vec<(String, String)> = sims
        .iter()
        .map(|sim| (sim.name().to_owned(), sim.url()))
        .collect();
    let mut coordinator = CoordinatorProcess::start(
        &options.binary,
        &options.work_dir,
        "probe",
        &nodes,
        probe.interval,
        10_000,
    )
    .await?;
    let mut fleet = FleetServiceClient::new(connect(coordinator.grpc_addr).await?);
    eprintln!(
        "scale: coordinator pid {} probing {} nodes every {:?}; waiting for them to come up",
        coordinator.pid(),
        probe.nodes,
        probe.interval
    );
    let started = Instant::now();
    let up = wait_up(
        &mut fleet,
        &mut coordinator,
        probe.nodes,
        probe.ready_timeout,
    )
    .await?;
    let ready_s = started.elapsed().as_secs_f64();
    if up < probe.nodes {
        warn!(
            up,
            nodes = probe.nodes,
            "not every node came up; measuring anyway"
        );
    }
    eprintln!(
        "scale: {up}/{} nodes up after {ready_s:.1} s; settling {:?}",
        probe.nodes, probe.settle
    );
    tokio::time::sleep(probe.settle).await;

    let pid = coordinator.pid();
    let ticks = clock_ticks();
    let nodes_up_start = count_up(&mut fleet).await?;
    let metrics_before = scrape(coordinator.http_addr).await?;
    let self_before = read_stat(std::process::id()).ok_or_else(|| gone("this process"))?;
    let before = read_stat(pid).ok_or_else(|| gone("coordinator"))?;
    let window_start = Instant::now();
    eprintln!("scale: measuring for {:?}", probe.window);
    tokio::time::sleep(probe.window).await;
    let after = read_stat(pid).ok_or_else(|| gone("coordinator"))?;
    let self_after = read_stat(std::process::id()).ok_or_else(|| gone("this process"))?;
    let window_s = window_start.elapsed().as_secs_f64();
    let metrics_after = scrape(coordinator.http_addr).await?;
    let nodes_up_end = count_up(&mut fleet).await?;
    let memory = read_memory(pid).ok_or_else(|| gone("coordinator"))?;
    let open_fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| dir.count())
        .unwrap_or(0);

    let user_s = (after.utime - before.utime) as f64 / ticks;
    let system_s = (after.stime - before.stime) as f64 / ticks;
    let cpu_s = user_s + system_s;
    let probes = metric_sum(
        &metrics_after,
        "comfyfleet_node_probe_duration_seconds_count",
    ) - metric_sum(
        &metrics_before,
        "comfyfleet_node_probe_duration_seconds_count",
    );
    let failures = metric_sum(&metrics_after, "comfyfleet_node_probe_failures_total")
        - metric_sum(&metrics_before, "comfyfleet_node_probe_failures_total");
    let self_cpu = (self_after.utime + self_after.stime - self_before.utime - self_before.stime)
        as f64
        / ticks;
    let cpu_percent_of_core = 100.0 * cpu_s / window_s;
    let report = ProbeReport {
        nodes: probe.nodes,
        nodes_up_start,
        nodes_up_end,
        interval_ms: u64::try_from(probe.interval.as_millis()).unwrap_or(u64::MAX),
        ready_s,
        window_s,
        cpu_s,
        user_s,
        system_s,
        cpu_percent_of_core,
        probes_per_s: probes / window_s,
        probes_expected_per_s: probe.nodes as f64 / probe.interval.as_secs_f64(),
        probe_failures: failures,
        cpu_us_per_probe: if probes > 0.0 {
            cpu_s * 1e6 / probes
        } else {
            0.0
        },
        rss_mib: kib_to_mib(memory.rss_kib),
        hwm_mib: kib_to_mib(memory.hwm_kib),
        threads: after.threads,
        open_fds,
        emulator_cpu_percent_of_core: 100.0 * self_cpu / window_s,
        target_percent: PROBE_TARGET_PERCENT,
        met: cpu_percent_of_core < PROBE_TARGET_PERCENT
            && nodes_up_start == probe.nodes
            && nodes_up_end == probe.nodes,
    };
    info!(
        cpu_percent = report.cpu_percent_of_core,
        "probe cost measured"
    );
    let (clean, _) = coordinator.stop().await;
    if !clean {
        warn!("the probe-cost coordinator did not exit cleanly on SIGTERM");
    }
    for sim in sims {
        sim.shutdown();
    }
    Ok(report)
}

async fn queue_memory(
    options: &ScaleOptions,
    memory: &MemoryOptions,
) -> Result<MemoryReport, BenchError> {
    if memory.jobs == 0 || memory.concurrency == 0 {
        return Err(BenchError::Invalid(
            "--jobs and --concurrency must be at least 1".into(),
        ));
    }
    let sims = spawn_sims(1).await?;
    let nodes = vec![(sims[0].name().to_owned(), sims[0].url())];
    let mut coordinator = CoordinatorProcess::start(
        &options.binary,
        &options.work_dir,
        "memory",
        &nodes,
        Duration::from_secs(1),
        // Room for every job, so admission never refuses one.
        memory.jobs as u64 + 1_000,
    )
    .await?;
    let mut fleet = FleetServiceClient::new(connect(coordinator.grpc_addr).await?);
    let up = wait_up(&mut fleet, &mut coordinator, 1, Duration::from_secs(30)).await?;
    if up != 1 {
        return Err(BenchError::NotReady("the node did not come up".into()));
    }
    // One more probe round so its classes and models are known.
    tokio::time::sleep(Duration::from_secs(2)).await;
    fleet
        .drain_node(DrainNodeRequest {
            name: nodes[0].0.clone(),
        })
        .await
        .map_err(|status| BenchError::rpc("drain node", status))?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pid = coordinator.pid();
    let before = read_memory(pid).ok_or_else(|| gone("coordinator"))?;

    let mut channels = Vec::new();
    for _ in 0..memory.channels.max(1) {
        channels.push(connect(coordinator.grpc_addr).await?);
    }
    let next = Arc::new(AtomicUsize::new(0));
    let accepted_count = Arc::new(AtomicUsize::new(0));
    eprintln!(
        "scale: submitting {} jobs, {} at a time, to a drained node",
        memory.jobs, memory.concurrency
    );
    let started = Instant::now();
    let sampler = {
        let accepted = Arc::clone(&accepted_count);
        tokio::spawn(async move {
            let mut curve = Vec::new();
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let Some(memory) = read_memory(pid) else {
                    break;
                };
                curve.push((
                    started.elapsed().as_secs_f64(),
                    accepted.load(Ordering::Relaxed),
                    kib_to_mib(memory.rss_kib),
                ));
            }
            curve
        })
    };
    let mut workers = Vec::new();
    for worker in 0..memory.concurrency {
        let mut client = JobServiceClient::new(channels[worker % channels.len()].clone());
        let next = Arc::clone(&next);
        let accepted = Arc::clone(&accepted_count);
        let jobs = memory.jobs;
        workers.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            let mut refused: Vec<String> = Vec::new();
            let mut latencies = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= jobs {
                    break;
                }
                let request = SubmitJobRequest {
                    workflow: sdxl_job(index as u64),
                    ..SubmitJobRequest::default()
                };
                let sent = Instant::now();
                match client.submit_job(request).await {
                    Ok(response) => {
                        latencies.push(sent.elapsed());
                        ids.push(response.into_inner().job_id);
                        accepted.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(status) => refused.push(format!("{:?}", status.code())),
                }
            }
            (ids, refused, latencies)
        }));
    }
    let mut ids = Vec::with_capacity(memory.jobs);
    let mut refused = std::collections::BTreeMap::new();
    let mut latencies = Vec::with_capacity(memory.jobs);
    for worker in workers {
        let (mut worker_ids, worker_refused, mut worker_latencies) = worker
            .await
            .map_err(|error| BenchError::Invalid(format!("submit task: {error}")))?;
        ids.append(&mut worker_ids);
        latencies.append(&mut worker_latencies);
        for code in worker_refused {
            *refused.entry(code).or_insert(0) += 1;
        }
    }
    let submit_s = started.elapsed().as_secs_f64();
    sampler.abort();
    eprintln!(
        "scale: {} accepted in {submit_s:.1} s; letting the coordinator settle",
        ids.len()
    );
    // Journal writes and the manager's inbox finish after the last answer.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = read_memory(pid).ok_or_else(|| gone("coordinator"))?;
    let queued_reported = metric_sum(
        &scrape(coordinator.http_addr).await?,
        "comfyfleet_jobs_queued",
    );

    let (cancelled, cancel_per_s) = if memory.cancel {
        eprintln!("scale: cancelling {} jobs", ids.len());
        cancel_all(&channels, ids.clone(), memory.concurrency).await
    } else {
        (0, 0.0)
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_cancel = read_memory(pid).ok_or_else(|| gone("coordinator"))?;
    drop(channels);
    let (clean_exit, exit) = coordinator.stop().await;
    for sim in sims {
        sim.shutdown();
    }

    let accepted = ids.len();
    let rss_after_mib = kib_to_mib(after.rss_kib);
    let bytes_per_job = if accepted > 0 {
        (after.rss_kib.saturating_sub(before.rss_kib) * 1024) as f64 / accepted as f64
    } else {
        0.0
    };
    Ok(MemoryReport {
        jobs: memory.jobs,
        accepted,
        refused,
        queued_reported,
        workflow_bytes: sdxl_job(0).len(),
        concurrency: memory.concurrency,
        rss_before_mib: kib_to_mib(before.rss_kib),
        rss_after_mib,
        hwm_after_mib: kib_to_mib(after.hwm_kib),
        bytes_per_job,
        submit_s,
        submit_per_s: accepted as f64 / submit_s,
        submit_rpc: summarize(&latencies),
        rss_curve: sampler.await.unwrap_or_default(),
        cancelled,
        cancel_per_s,
        rss_after_cancel_mib: kib_to_mib(after_cancel.rss_kib),
        clean_exit,
        exit_s: exit.as_secs_f64(),
        target_mib: MEMORY_TARGET_MIB,
        met: accepted == memory.jobs && kib_to_mib(after.hwm_kib) < MEMORY_TARGET_MIB,
    })
}

/// Cancels `ids` with `concurrency` calls in flight; returns (cancelled, per second).
async fn cancel_all(channels: &[Channel], ids: Vec<String>, concurrency: usize) -> (usize, f64) {
    let ids = Arc::new(ids);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..concurrency {
        let mut client = JobServiceClient::new(channels[worker % channels.len()].clone());
        let ids = Arc::clone(&ids);
        let next = Arc::clone(&next);
        workers.push(tokio::spawn(async move {
            let mut done = 0;
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(id) = ids.get(index) else { break };
                let request = CancelJobRequest {
                    job_id: id.clone(),
                    reason: "benchmark finished".into(),
                };
                if client.cancel_job(request).await.is_ok() {
                    done += 1;
                }
            }
            done
        }));
    }
    let mut cancelled = 0;
    for worker in workers {
        cancelled += worker.await.unwrap_or(0);
    }
    let seconds = started.elapsed().as_secs_f64();
    (cancelled, cancelled as f64 / seconds.max(1e-9))
}

async fn spawn_sims(count: usize) -> Result<Vec<SimNode>, BenchError> {
    let mut sims = Vec::with_capacity(count);
    for index in 0..count {
        let name = format!("scale-{index:04}");
        let sim = comfy_sim::spawn(cheap_node(name.clone()), ([127, 0, 0, 1], 0).into())
            .await
            .map_err(|source| BenchError::Sim { node: name, source })?;
        sims.push(sim);
    }
    Ok(sims)
}

/// Waits until `expected` nodes are up with their GPU known; returns how many are up when
/// that happens or `timeout` passes.
async fn wait_up(
    fleet: &mut FleetServiceClient<Channel>,
    coordinator: &mut CoordinatorProcess,
    expected: usize,
    timeout: Duration,
) -> Result<usize, BenchError> {
    let deadline = Instant::now() + timeout;
    loop {
        coordinator.check_running()?;
        let up = count_up(fleet).await?;
        if up >= expected || Instant::now() > deadline {
            return Ok(up);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn count_up(fleet: &mut FleetServiceClient<Channel>) -> Result<usize, BenchError> {
    let nodes = fleet
        .list_nodes(ListNodesRequest {})
        .await
        .map_err(|status| BenchError::rpc("list nodes", status))?
        .into_inner()
        .nodes;
    Ok(nodes
        .iter()
        .filter(|node| {
            matches!(node.health(), NodeHealth::Up | NodeHealth::Draining) && node.vram_total > 0
        })
        .count())
}

/// The `comfyfleet serve` child process of one part.
struct CoordinatorProcess {
    child: Child,
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    log: PathBuf,
    // Removed when the part ends: the journal lives here.
    _data_dir: tempfile::TempDir,
}

impl CoordinatorProcess {
    async fn start(
        binary: &Path,
        work_dir: &Path,
        part: &str,
        nodes: &[(String, String)],
        probe_interval: Duration,
        max_queued_jobs: u64,
    ) -> Result<Self, BenchError> {
        let data_dir = tempfile::Builder::new()
            .prefix("comfyfleet-scale-")
            .tempdir()
            .map_err(BenchError::TempDir)?;
        let settings = ConfigSettings {
            grpc_listen: free_port()?,
            http_listen: free_port()?,
            data_dir: data_dir.path().to_path_buf(),
            probe_interval,
            max_queued_jobs,
        };
        let config_path = work_dir.join(format!("scale-{part}.toml"));
        std::fs::write(&config_path, config_toml(&settings, nodes)).map_err(|source| {
            BenchError::Output {
                path: config_path.clone(),
                source,
            }
        })?;
        let log = work_dir.join(format!("scale-{part}-coordinator.log"));
        let log_file = std::fs::File::create(&log).map_err(|source| BenchError::Output {
            path: log.clone(),
            source,
        })?;
        let mut command = Command::new(binary);
        command
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        // COMFYFLEET_* variables of this process reach the coordinator on purpose (they show
        // what a setting costs, e.g. COMFYFLEET_EVENTS_LOG_CAPACITY); the report lists them.
        if std::env::var_os("COMFYFLEET_LOG").is_none() {
            command.env("COMFYFLEET_LOG", "info");
        }
        let child = command.spawn().map_err(|error| {
            BenchError::Invalid(format!(
                "coordinator binary {}: cannot start: {error}",
                binary.display()
            ))
        })?;
        let mut process = Self {
            child,
            grpc_addr: settings.grpc_listen,
            http_addr: settings.http_listen,
            log,
            _data_dir: data_dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(process.grpc_addr)
            .await
            .is_err()
        {
            process.check_running()?;
            if Instant::now() > deadline {
                return Err(BenchError::NotReady(format!(
                    "coordinator {}: not listening after 30 s; see {}",
                    process.grpc_addr,
                    process.log.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(process)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn check_running(&mut self) -> Result<(), BenchError> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(BenchError::NotReady(format!(
                "coordinator exited ({status}); see {}",
                self.log.display()
            ))),
            _ => Ok(()),
        }
    }

    /// SIGTERM, then SIGKILL after 30 s; returns whether it exited with 0 in time, and how
    /// long it took.
    async fn stop(&mut self) -> (bool, Duration) {
        let started = Instant::now();
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        while started.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(status)) = self.child.try_wait() {
                return (status.success(), started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        (false, started.elapsed())
    }
}

impl Drop for CoordinatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<SocketAddr, BenchError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map_err(|error| BenchError::Invalid(format!("free port on 127.0.0.1: {error}")))
}

async fn connect(addr: SocketAddr) -> Result<Channel, BenchError> {
    let addr = format!("http://{addr}");
    Endpoint::from_shared(addr.clone())
        .map_err(|source| BenchError::Connect {
            addr: addr.clone(),
            source,
        })?
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|source| BenchError::Connect { addr, source })
}

fn gone(what: &str) -> BenchError {
    BenchError::NotReady(format!("{what}: cannot read /proc (process gone?)"))
}

/// CPU counters of a process, from `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuStat {
    /// User time, in clock ticks.
    pub utime: u64,
    /// System time, in clock ticks.
    pub stime: u64,
    /// Threads.
    pub threads: u64,
}

/// Parses the text of `/proc/<pid>/stat`.
pub fn parse_stat(text: &str) -> Option<CpuStat> {
    // The command name (field 2) is in parentheses and may hold spaces; fields after it are
    // plain. After the last ')', index 0 is field 3 (state), so field N is index N - 3.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(CpuStat {
        utime: fields.get(11)?.parse().ok()?,
        stime: fields.get(12)?.parse().ok()?,
        threads: fields.get(17)?.parse().ok()?,
    })
}

fn read_stat(pid: u32) -> Option<CpuStat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Resident memory of a process, from `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemoryStat {
    /// `VmRSS`, in KiB.
    pub rss_kib: u64,
    /// `VmHWM` (peak resident set), in KiB.
    pub hwm_kib: u64,
}

/// Parses the text of `/proc/<pid>/status`.
pub fn parse_status(text: &str) -> Option<MemoryStat> {
    let field = |key: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
    };
    Some(MemoryStat {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
    })
}

fn read_memory(pid: u32) -> Option<MemoryStat> {
    parse_status(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

fn kib_to_mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Clock ticks per second of `/proc/<pid>/stat` (`getconf CLK_TCK`, 100 on Linux in practice).
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .and_then(|text| text.trim().parse::<f64>().ok())
        .filter(|ticks| *ticks > 0.0)
        .unwrap_or(100.0)
}

/// A two-column Markdown table of named figures.
fn figure_table<const N: usize>(rows: [(&str, String); N]) -> String {
    let mut out = String::from("| figure | value |\n|---|---:|\n");
    for (name, value) in rows {
        out.push_str(&format!("| {name} | {value} |\n"));
    }
    out
}

/// `GET /metrics` over plain HTTP/1.0 (the connection closes after the answer).
async fn scrape(addr: SocketAddr) -> Result<String, BenchError> {
    let fail = |error: std::io::Error| BenchError::NotReady(format!("GET {addr}/metrics: {error}"));
    let mut stream = tokio::net::TcpStream::connect(addr).await.map_err(fail)?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .map_err(fail)?;
    let mut body = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut body))
        .await
        .map_err(|_| BenchError::NotReady(format!("GET {addr}/metrics: timed out")))?
        .map_err(fail)?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// The sum of every sample of the metric `name` (any labels) in Prometheus text.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            // `name` must be the whole metric name: labels or a space follow it.
            if !(rest.starts_with('{') || rest.starts_with(' ')) {
                return None;
            }
            line.rsplit(' ').next()?.parse::<f64>().ok()
        })
        .sum()
}

/// The report as Markdown.
pub fn markdown(report: &ScaleReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let verdict = |met: bool| if met { "met" } else { "MISSED" };
    if let Some(probe) = &report.probe {
        let _ = writeln!(
            out,
            "### Probe cost: {} nodes, probe interval {} ms\n",
            probe.nodes, probe.interval_ms
        );
        let rows = [
            (
                "nodes up (start / end of window)",
                format!(
                    "{} / {} of {}",
                    probe.nodes_up_start, probe.nodes_up_end, probe.nodes
                ),
            ),
            ("fleet up after", format!("{:.1} s", probe.ready_s)),
            ("measured window", format!("{:.1} s", probe.window_s)),
            (
                "coordinator CPU (user + system)",
                format!(
                    "{:.2} s ({:.2} + {:.2})",
                    probe.cpu_s, probe.user_s, probe.system_s
                ),
            ),
            (
                "**CPU, % of one core**",
                format!(
                    "**{:.1}%** (target < {:.0}%: {})",
                    probe.cpu_percent_of_core,
                    probe.target_percent,
                    verdict(probe.met)
                ),
            ),
            (
                "probe rounds per second (expected)",
                format!(
                    "{:.0} ({:.0})",
                    probe.probes_per_s, probe.probes_expected_per_s
                ),
            ),
            (
                "failed probes in window",
                format!("{:.0}", probe.probe_failures),
            ),
            (
                "CPU per probe round",
                format!("{:.0} µs", probe.cpu_us_per_probe),
            ),
            (
                "resident set (peak)",
                format!("{:.1} MiB ({:.1} MiB)", probe.rss_mib, probe.hwm_mib),
            ),
            (
                "threads / open descriptors",
                format!("{} / {}", probe.threads, probe.open_fds),
            ),
            (
                "emulated nodes + client CPU (this process)",
                format!("{:.1}% of one core", probe.emulator_cpu_percent_of_core),
            ),
        ];
        out.push_str(&figure_table(rows));
        out.push('\n');
    }
    if let Some(memory) = &report.memory {
        let _ = writeln!(
            out,
            "### Queue memory: {} SDXL jobs ({} bytes each) queued behind a drained node\n",
            memory.jobs, memory.workflow_bytes
        );
        let refused = if memory.refused.is_empty() {
            "none".to_owned()
        } else {
            memory
                .refused
                .iter()
                .map(|(code, count)| format!("{code}={count}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let rows = [
            (
                "accepted / queued (coordinator's gauge)",
                format!("{} / {:.0}", memory.accepted, memory.queued_reported),
            ),
            ("refused", refused),
            (
                "resident set before / after",
                format!(
                    "{:.1} MiB / {:.1} MiB",
                    memory.rss_before_mib, memory.rss_after_mib
                ),
            ),
            (
                "**peak resident set**",
                format!(
                    "**{:.1} MiB** (target < {:.0} MiB: {})",
                    memory.hwm_after_mib,
                    memory.target_mib,
                    verdict(memory.met)
                ),
            ),
            (
                "resident bytes per queued job",
                format!("{:.0}", memory.bytes_per_job),
            ),
            (
                "submit throughput",
                format!(
                    "{:.0} jobs/s ({} in flight, {:.1} s)",
                    memory.submit_per_s, memory.concurrency, memory.submit_s
                ),
            ),
            (
                "SubmitJob p50 / p99",
                format!(
                    "{:.1} ms / {:.1} ms",
                    memory.submit_rpc.p50_ms, memory.submit_rpc.p99_ms
                ),
            ),
            (
                "cancelled afterwards",
                format!("{} ({:.0}/s)", memory.cancelled, memory.cancel_per_s),
            ),
            (
                "resident set after cancelling",
                format!("{:.1} MiB", memory.rss_after_cancel_mib),
            ),
            (
                "SIGTERM → exit",
                format!(
                    "{:.1} s ({})",
                    memory.exit_s,
                    if memory.clean_exit {
                        "status 0"
                    } else {
                        "NOT clean"
                    }
                ),
            ),
        ];
        out.push_str(&figure_table(rows));
        out.push('\n');
    }
    if let Some(throughput) = &report.throughput {
        out.push_str(&throughput::markdown(throughput, verdict));
    }
    let _ = writeln!(
        out,
        "RLIMIT_NOFILE of the benchmark (soft/hard): {}/{}",
        report.nofile_limit.0, report.nofile_limit.1
    );
    if !report.coordinator_env.is_empty() {
        let _ = writeln!(
            out,
            "\nCoordinator settings overridden from the environment: {}",
            report.coordinator_env.join(" ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ConfigSettings {
        ConfigSettings {
            grpc_listen: "127.0.0.1:40001".parse().expect("addr"),
            http_listen: "127.0.0.1:40002".parse().expect("addr"),
            data_dir: PathBuf::from("/tmp/some dir/\"quoted\""),
            probe_interval: Duration::from_secs(1),
            max_queued_jobs: 101_000,
        }
    }

    #[test]
    fn generated_config_is_what_the_coordinator_accepts() {
        let nodes: Vec<(String, String)> = (0..3)
            .map(|index| {
                (
                    format!("scale-{index:04}"),
                    format!("http://127.0.0.1:{}", 41000 + index),
                )
            })
            .collect();
        let text = config_toml(&settings(), &nodes);
        let config = coordinator::config::Config::from_toml_str(&text, Path::new("scale.toml"))
            .expect("parses");
        config.validate().expect("valid");
        assert_eq!(config.nodes.len(), 3);
        assert_eq!(config.nodes[2].name, "scale-0002");
        assert_eq!(config.nodes[2].url.to_string(), "http://127.0.0.1:41002/");
        assert_eq!(config.probe.interval, Duration::from_secs(1));
        assert!(config.probe.jitter < config.probe.interval);
        assert_eq!(config.limits.max_queued_jobs, 101_000);
        assert_eq!(config.limits.max_queued_jobs_per_tenant, 101_000);
        assert_eq!(config.data_dir, PathBuf::from("/tmp/some dir/\"quoted\""));
        assert_eq!(config.grpc_listen, settings().grpc_listen);
    }

    #[test]
    fn proc_files_parse() {
        let stat = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 900 0 0 0 1234 567 0 0 20 0 37 0 100 2000000 5000 18446744073709551615";
        assert_eq!(
            parse_stat(stat),
            Some(CpuStat {
                utime: 1234,
                stime: 567,
                threads: 37
            })
        );
        let status = "Name:\tcomfyfleet\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\nThreads:\t3\n";
        assert_eq!(
            parse_status(status),
            Some(MemoryStat {
                rss_kib: 102_400,
                hwm_kib: 204_800
            })
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn metric_sums_match_whole_names_only() {
        let text = "# TYPE comfyfleet_node_probe_duration_seconds histogram\n\
            comfyfleet_node_probe_duration_seconds_count{node=\"a\"} 10\n\
            comfyfleet_node_probe_duration_seconds_count{node=\"b\"} 5\n\
            comfyfleet_node_probe_duration_seconds_sum{node=\"a\"} 0.5\n\
            comfyfleet_jobs_queued 100000\n\
            comfyfleet_jobs_queued_extra 7\n";
        assert_eq!(
            metric_sum(text, "comfyfleet_node_probe_duration_seconds_count"),
            15.0
        );
        assert_eq!(metric_sum(text, "comfyfleet_jobs_queued"), 100_000.0);
        assert_eq!(metric_sum(text, "absent"), 0.0);
    }

    #[test]
    fn the_memory_job_is_a_distinct_sdxl_graph_per_seed() {
        let a: serde_json::Value = serde_json::from_slice(&sdxl_job(1)).expect("json");
        let b: serde_json::Value = serde_json::from_slice(&sdxl_job(2)).expect("json");
        assert_eq!(a["4"]["inputs"]["ckpt_name"], "sd_xl_base_1.0.safetensors");
        assert_ne!(a["3"]["inputs"]["seed"], b["3"]["inputs"]["seed"]);
    }
}
