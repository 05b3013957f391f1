//! Sustained throughput: how many jobs per second one coordinator process carries, and the CPU
//! it spends on each.
//!
//! `nodes` zero-work emulated nodes (in this process) sit behind the real `comfyfleet serve`
//! binary (its own process, journal on disk with every commit fsynced, as in production).
//! `concurrency` clients each submit a zero-work job, watch it to its end over `WatchJob`, and
//! submit the next: a closed loop, so the offered rate is whatever the system carries. After
//! a warm-up, the jobs that end inside the measured window are counted, and the
//! coordinator's CPU time over the window is read from `/proc/<pid>/stat`.
//!
//! Two figures come out of it:
//! - **finished jobs/s**: what this machine carried, with the emulated nodes and the clients
//!   on the same cores as the coordinator;
//! - **jobs per coordinator core-second**: finished jobs divided by the coordinator's own CPU
//!   seconds, i.e. its cost per job. It is what the coordinator would carry per core if the
//!   nodes and clients ran elsewhere, as they do in production; the report gives it as a
//!   derived figure, next to the measured one, never in its place.
//!
//! NOTE: on a small machine the emulated nodes and clients take most of the CPU, so the
//! measured jobs/s is a floor on what the coordinator can carry, and the per-core figure
//! assumes its cost per job stays flat as the rate rises (contention for its single journal
//! writer and manager task would make it rise; group commit makes it fall).

use super::*;
use crate::driver::{Clock, Outcome, Planned, follow};

/// The throughput target: jobs per second one coordinator sustains on two cores.
pub const THROUGHPUT_TARGET_PER_S: f64 = 5_000.0;

/// Settings of the throughput part.
#[derive(Debug, Clone)]
pub struct ThroughputOptions {
    /// Emulated zero-work nodes.
    pub nodes: usize,
    /// Clients, each with one job in flight at a time.
    pub concurrency: usize,
    /// Load before the measured window (connections, caches, the journal's first pages).
    pub warmup: Duration,
    /// The measured window.
    pub window: Duration,
}

/// Figures of the throughput part.
#[derive(Debug, Clone, Serialize)]
pub struct ThroughputReport {
    /// Emulated nodes.
    pub nodes: usize,
    /// Clients, one job in flight each.
    pub concurrency: usize,
    /// Length of the measured window, in seconds (wall).
    pub window_s: f64,
    /// Jobs that succeeded inside the window.
    pub succeeded: usize,
    /// Jobs that failed, were cancelled or were refused inside the window.
    pub not_succeeded: usize,
    /// `succeeded / window_s`.
    pub jobs_per_s: f64,
    /// Coordinator CPU seconds (user + system) in the window.
    pub cpu_s: f64,
    /// `cpu_s / window_s`: cores the coordinator kept busy.
    pub cpu_cores: f64,
    /// Coordinator CPU per succeeded job, in milliseconds.
    pub cpu_ms_per_job: f64,
    /// `succeeded / cpu_s`: jobs per second of coordinator CPU.
    pub jobs_per_core_s: f64,
    /// CPU of this process (emulated nodes and clients) in the window, in cores.
    pub emulator_and_client_cores: f64,
    /// Submit sent → terminal event received, for the jobs counted.
    pub end_to_end: Summary,
    /// Target, in jobs per second.
    pub target_per_s: f64,
    /// Whether the measured jobs/s met the target.
    pub met: bool,
}

/// One job as a client saw it.
struct Done {
    sent: Instant,
    ended: Instant,
    succeeded: bool,
}

pub(super) async fn sustained_throughput(
    options: &ScaleOptions,
    throughput: &ThroughputOptions,
) -> Result<ThroughputReport, BenchError> {
    if throughput.nodes == 0 || throughput.concurrency == 0 || throughput.window.is_zero() {
        return Err(BenchError::Invalid(
            "throughput: nodes, concurrency and the window must be above 0".into(),
        ));
    }
    let sims = spawn_sims(throughput.nodes).await?;
    let nodes: Vec<(String, String)> = sims
        .iter()
        .map(|sim| (sim.name().to_owned(), sim.url()))
        .collect();
    let mut coordinator = CoordinatorProcess::start(
        &options.binary,
        &options.work_dir,
        "throughput",
        &nodes,
        Duration::from_secs(1),
        1_000_000,
    )
    .await?;
    let mut fleet = FleetServiceClient::new(connect(coordinator.grpc_addr).await?);
    let up = wait_up(
        &mut fleet,
        &mut coordinator,
        nodes.len(),
        Duration::from_secs(60),
    )
    .await?;
    if up != nodes.len() {
        return Err(BenchError::NotReady(format!(
            "throughput: {up} of {} nodes up",
            nodes.len()
        )));
    }
    // One more probe round so every node's classes and models are known.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut channels = Vec::new();
    for _ in 0..4 {
        channels.push(connect(coordinator.grpc_addr).await?);
    }
    eprintln!(
        "scale: throughput, {} clients in a closed loop over {} zero-work nodes",
        throughput.concurrency, throughput.nodes
    );
    let started = Instant::now();
    let window_start = started + throughput.warmup;
    let window_end = window_start + throughput.window;
    let next_seed = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for index in 0..throughput.concurrency {
        let client = JobServiceClient::new(channels[index % channels.len()].clone());
        let next_seed = Arc::clone(&next_seed);
        clients.push(tokio::spawn(client_loop(client, next_seed, window_end)));
    }

    let pid = coordinator.pid();
    let ticks = clock_ticks();
    tokio::time::sleep_until(window_start.into()).await;
    let before = read_stat(pid).ok_or_else(|| gone("coordinator"))?;
    let self_before = read_stat(std::process::id()).ok_or_else(|| gone("this process"))?;
    let measured_from = Instant::now();
    tokio::time::sleep_until(window_end.into()).await;
    let after = read_stat(pid).ok_or_else(|| gone("coordinator"))?;
    let self_after = read_stat(std::process::id()).ok_or_else(|| gone("this process"))?;
    let window_s = measured_from.elapsed().as_secs_f64();

    let mut done = Vec::new();
    for client in clients {
        done.append(
            &mut client
                .await
                .map_err(|error| BenchError::Invalid(format!("client task: {error}")))?,
        );
    }
    drop(channels);
    coordinator.stop().await;
    for sim in sims {
        sim.shutdown();
    }

    let inside: Vec<&Done> = done
        .iter()
        .filter(|job| job.ended >= measured_from && job.ended <= window_end)
        .collect();
    let succeeded = inside.iter().filter(|job| job.succeeded).count();
    let latencies: Vec<Duration> = inside
        .iter()
        .filter(|job| job.succeeded)
        .map(|job| job.ended.saturating_duration_since(job.sent))
        .collect();
    let cpu = |a: CpuStat, b: CpuStat| (b.utime + b.stime - a.utime - a.stime) as f64 / ticks;
    let cpu_s = cpu(before, after);
    let jobs_per_s = succeeded as f64 / window_s;
    Ok(ThroughputReport {
        nodes: throughput.nodes,
        concurrency: throughput.concurrency,
        window_s,
        succeeded,
        not_succeeded: inside.len() - succeeded,
        jobs_per_s,
        cpu_s,
        cpu_cores: cpu_s / window_s,
        cpu_ms_per_job: if succeeded > 0 {
            cpu_s * 1000.0 / succeeded as f64
        } else {
            0.0
        },
        jobs_per_core_s: if cpu_s > 0.0 {
            succeeded as f64 / cpu_s
        } else {
            0.0
        },
        emulator_and_client_cores: cpu(self_before, self_after) / window_s,
        end_to_end: summarize(&latencies),
        target_per_s: THROUGHPUT_TARGET_PER_S,
        met: jobs_per_s >= THROUGHPUT_TARGET_PER_S,
    })
}

/// Submits a zero-work job, follows it to its end, and again, until `stop`.
async fn client_loop(
    client: JobServiceClient<Channel>,
    next_seed: Arc<AtomicUsize>,
    stop: Instant,
) -> Vec<Done> {
    let clock = Clock::now();
    // A job submitted just before `stop` is still followed to its end (it is not counted,
    // but it must not be cut off while the coordinator shuts down under it).
    let end = stop + Duration::from_secs(30);
    let mut done = Vec::new();
    while Instant::now() < stop {
        let seed = next_seed.fetch_add(1, Ordering::Relaxed);
        let planned = Planned {
            at: Duration::ZERO,
            workflow: workflow::tiny(seed as u64),
            tenant: String::new(),
        };
        let trace = follow(client.clone(), seed, planned, clock, end).await;
        let ended = trace.finished_received().unwrap_or_else(Instant::now);
        if let Outcome::Rejected(reason) = &trace.outcome {
            warn!(%reason, "submit refused");
            // A refusing coordinator is not hammered in a tight loop.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        done.push(Done {
            sent: trace.submit_sent,
            ended,
            succeeded: trace.outcome == Outcome::Succeeded,
        });
    }
    done
}

/// The part's section of the `scale` report.
pub(super) fn markdown(
    report: &ThroughputReport,
    verdict: impl Fn(bool) -> &'static str,
) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### Sustained throughput: {} zero-work nodes, {} clients in a closed loop\n",
        report.nodes, report.concurrency
    );
    let rows = [
        ("measured window", format!("{:.1} s", report.window_s)),
        (
            "jobs ended in the window (succeeded / other)",
            format!("{} / {}", report.succeeded, report.not_succeeded),
        ),
        (
            "**finished jobs/s, measured**",
            format!(
                "**{:.0}** (target {:.0}: {})",
                report.jobs_per_s,
                report.target_per_s,
                verdict(report.met)
            ),
        ),
        (
            "coordinator CPU",
            format!(
                "{:.2} cores ({:.2} s in the window)",
                report.cpu_cores, report.cpu_s
            ),
        ),
        (
            "coordinator CPU per job",
            format!("{:.3} ms", report.cpu_ms_per_job),
        ),
        (
            "jobs per coordinator core-second (derived)",
            format!("{:.0}", report.jobs_per_core_s),
        ),
        (
            "emulated nodes and clients (this process)",
            format!("{:.2} cores", report.emulator_and_client_cores),
        ),
        (
            "submit → end p50 / p99",
            format!(
                "{:.1} ms / {:.1} ms",
                report.end_to_end.p50_ms, report.end_to_end.p99_ms
            ),
        ),
    ];
    out.push_str(&figure_table(rows));
    out.push('\n');
    out
}
