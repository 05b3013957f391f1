//! One soak run: start the fleet and the coordinator, offer load, inject faults, drain, count.
//!
//! The load and the faults run concurrently against the same clock, so a fault lands at its
//! scheduled offset whatever the load is doing; after the load every node is healed and the
//! drain polls `ListJobs` until every accepted job is terminal or the drain time runs out.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bench::BenchError;
use comfy_sim::{FaultConfig, SimNode};
use fleet_proto::v1::JobState;
use fleet_proto::v1::job_service_client::JobServiceClient;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::task::JoinSet;
use tonic::transport::Endpoint;
use tracing::{info, warn};

use super::client::{Ledger, is_terminal, list_all, submit};
use super::options::exponential;
use super::process::{self, Coordinator, rss_kib};
use super::starts::starts;
use super::workload::{job, mean_job_seconds, node_config};
use super::{FaultKind, ScheduledFault, SoakOptions, SoakReport, fault_schedule};

/// Runs the soak and returns its report (also written as `soak.json` into `out`).
///
/// # Errors
/// The nodes, the binary or the coordinator cannot be started, or the report not written.
pub async fn run(options: &SoakOptions) -> Result<SoakReport, BenchError> {
    // Checked here, not left to `Duration::from_secs_f64`, which panics on NaN or overflow.
    if options.nodes == 0 || options.minutes.is_nan() || !(1e-3..=1e6).contains(&options.minutes) {
        return Err(BenchError::Invalid(
            "soak needs at least one node and --minutes between 0.001 and 1000000".into(),
        ));
    }
    std::fs::create_dir_all(&options.out).map_err(|source| BenchError::Output {
        path: options.out.clone(),
        source,
    })?;
    let load = Duration::from_secs_f64(options.minutes * 60.0);
    let capacity = options.nodes as f64 / mean_job_seconds();
    let rate = options.rate.unwrap_or(capacity * 0.7);
    if rate.is_nan() || !(1e-3..=1e6).contains(&rate) {
        return Err(BenchError::Invalid(
            "--rate must be between 0.001 and 1000000".into(),
        ));
    }
    let mut sims = Vec::with_capacity(options.nodes);
    for index in 0..options.nodes {
        let name = format!("gpu-{index}");
        let sim = comfy_sim::spawn(node_config(name.clone()), ([127, 0, 0, 1], 0).into())
            .await
            .map_err(|source| BenchError::Sim { node: name, source })?;
        sims.push(sim);
    }
    let sims = Arc::new(sims);
    let data = tempfile::Builder::new()
        .prefix("comfyfleet-soak-")
        .tempdir()
        .map_err(BenchError::TempDir)?;
    let binary = process::binary()?;
    let mut coordinator = Coordinator::start(&binary, data.path(), &options.out, &sims).await?;
    let channel = Endpoint::from_shared(format!("http://{}", coordinator.grpc_addr))
        .map_err(|source| BenchError::Connect {
            addr: coordinator.grpc_addr.to_string(),
            source,
        })?
        .connect_timeout(Duration::from_secs(2))
        .connect_lazy();
    let client = JobServiceClient::new(channel);
    eprintln!(
        "soak: {} nodes, {rate:.2} jobs/s (capacity ~{capacity:.2}), {:.1} min, seed {}",
        options.nodes, options.minutes, options.seed
    );
    let started = Instant::now();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let posts_before_crash = Arc::new(AtomicU64::new(0));
    let rss = Arc::new(Mutex::new(Vec::<(f64, u64)>::new()));
    let pid = Arc::new(AtomicU64::new(u64::from(coordinator.pid())));
    let sampler = tokio::spawn(sample_rss(pid.clone(), rss.clone(), started));

    // Load: one task per submission, on a seeded Poisson schedule.
    let mut rng = StdRng::seed_from_u64(options.seed);
    let mut submits = JoinSet::new();
    let load_task = {
        let ledger = ledger.clone();
        let client = client.clone();
        let seed = options.seed;
        tokio::spawn(async move {
            let mut at = Duration::ZERO;
            let mut count = 0u64;
            loop {
                at += exponential(&mut rng, Duration::from_secs_f64(1.0 / rate));
                if at >= load {
                    break;
                }
                tokio::time::sleep_until((started + at).into()).await;
                let (bytes, _) = job(&mut rng, seed.wrapping_mul(1_000_003) + count);
                let key = format!("soak-{seed}-{count}");
                submits.spawn(submit(client.clone(), bytes, key, ledger.clone()));
                count += 1;
            }
            while submits.join_next().await.is_some() {}
            count
        })
    };

    // Faults, in the order scheduled.
    let schedule: Vec<ScheduledFault> = fault_schedule(options.seed, load, options.nodes);
    let mut injected: HashMap<String, u64> = HashMap::new();
    let mut sigterm_timeouts = 0;
    let mut pending_restore: JoinSet<()> = JoinSet::new();
    for fault in &schedule {
        tokio::time::sleep_until((started + fault.at).into()).await;
        let sim = &sims[fault.node];
        let applied = match fault.kind {
            FaultKind::CoordinatorKill | FaultKind::CoordinatorTerm => {
                let graceful = fault.kind == FaultKind::CoordinatorTerm;
                if !coordinator.stop(graceful).await {
                    sigterm_timeouts += 1;
                }
                coordinator = coordinator.start_again().await?;
                pid.store(u64::from(coordinator.pid()), Ordering::Relaxed);
                true
            }
            FaultKind::NodeCrash { down_ms } => {
                if let Ok(snapshot) = sim.snapshot() {
                    // The counter lives in the incarnation the crash throws away.
                    posts_before_crash.fetch_add(snapshot.prompt_posts, Ordering::Relaxed);
                    sim.crash();
                    let sims = sims.clone();
                    let node = fault.node;
                    pending_restore.spawn(async move {
                        tokio::time::sleep(Duration::from_millis(down_ms)).await;
                        restart_node(&sims[node]).await;
                    });
                    true
                } else {
                    false
                }
            }
            FaultKind::WsDrop => set_faults(sim, |faults| faults.drop_ws_mid_run = true),
            FaultKind::WsSilence { for_ms } => {
                let applied = set_faults(sim, |faults| faults.silence_ws = true);
                let sims = sims.clone();
                let node = fault.node;
                pending_restore.spawn(async move {
                    tokio::time::sleep(Duration::from_millis(for_ms)).await;
                    set_faults(&sims[node], |faults| faults.silence_ws = false);
                });
                applied
            }
            FaultKind::RunError { count } => set_faults(sim, |faults| {
                faults.fail_class = Some("KSampler".into());
                faults.fail_count = count;
            }),
        };
        if applied {
            info!(
                node = sim.name(),
                kind = fault.kind.label(),
                "fault injected"
            );
            *injected.entry(fault.kind.label().to_owned()).or_default() += 1;
        }
    }
    let submitted = load_task
        .await
        .map_err(|error| BenchError::Invalid(format!("load task: {error}")))?;
    while pending_restore.join_next().await.is_some() {}
    for sim in sims.iter() {
        if sim.is_running() {
            set_faults(sim, |faults| *faults = FaultConfig::default());
        } else {
            restart_node(sim).await;
        }
    }

    // Drain: every accepted job must become terminal.
    eprintln!("soak: load over after {submitted} submissions; draining");
    let drain_started = Instant::now();
    let accepted: Vec<String> = {
        let mut ids = ledger
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .accepted
            .clone();
        ids.sort();
        ids.dedup();
        ids
    };
    let jobs = loop {
        let listed = list_all(client.clone()).await;
        if let Ok(jobs) = &listed {
            let open = accepted
                .iter()
                .filter(|id| jobs.get(*id).is_none_or(|job| !is_terminal(job.state())))
                .count();
            if open == 0 {
                break jobs.clone();
            }
            if drain_started.elapsed() > options.drain_timeout {
                break jobs.clone();
            }
            info!(open, "draining");
        } else if let Err(error) = &listed {
            warn!(%error, "list jobs during the drain");
            if drain_started.elapsed() > options.drain_timeout {
                break HashMap::new();
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let drain_seconds = drain_started.elapsed().as_secs_f64();
    sampler.abort();
    rss.lock()
        .unwrap_or_else(|poison| poison.into_inner())
        .push((
            started.elapsed().as_secs_f64(),
            rss_kib(coordinator.pid()).unwrap_or(0),
        ));
    let mut prompt_posts = posts_before_crash.load(Ordering::Relaxed);
    for sim in sims.iter() {
        prompt_posts += sim.snapshot().map_or(0, |snapshot| snapshot.prompt_posts);
    }
    let _ = coordinator.stop(true).await;

    let ledger = std::mem::take(&mut *ledger.lock().unwrap_or_else(|poison| poison.into_inner()));
    let rss = rss
        .lock()
        .unwrap_or_else(|poison| poison.into_inner())
        .clone();
    let twice: Vec<String> = starts()
        .iter()
        .filter(|(_, count)| **count > 1)
        .map(|(id, count)| format!("{id} x{count}"))
        .collect();
    let mut report = SoakReport {
        seed: options.seed,
        minutes: options.minutes,
        nodes: options.nodes,
        rate,
        capacity,
        submitted,
        accepted: accepted.len() as u64,
        refused: ledger.refused,
        submit_retries: ledger.submit_retries,
        submit_replayed: ledger.replayed,
        succeeded: 0,
        failed: 0,
        cancelled: 0,
        lost: 0,
        lost_examples: Vec::new(),
        unknown_to_client: 0,
        prompt_posts,
        attempts: 0,
        posts_minus_attempts: 0,
        prompts_started_twice: twice.len() as u64,
        started_twice_examples: twice.into_iter().take(10).collect(),
        retries: 0,
        faults: injected,
        sigterm_timeouts,
        drain_seconds,
        rss_kib_min: rss
            .iter()
            .map(|s| s.1)
            .filter(|k| *k > 0)
            .min()
            .unwrap_or(0),
        rss_kib_max: rss.iter().map(|s| s.1).max().unwrap_or(0),
        rss_kib_last: rss.last().map_or(0, |s| s.1),
        rss_series: rss,
    };
    for id in &accepted {
        match jobs.get(id).map(|job| (job.state(), job)) {
            Some((JobState::Succeeded, _)) => report.succeeded += 1,
            Some((JobState::Failed, _)) => report.failed += 1,
            Some((JobState::Cancelled, _)) => report.cancelled += 1,
            other => {
                report.lost += 1;
                if report.lost_examples.len() < 10 {
                    let state = other.map_or("unknown".to_owned(), |(state, job)| {
                        format!(
                            "{} on {} attempt {}",
                            state.as_str_name(),
                            job.node,
                            job.attempt
                        )
                    });
                    report.lost_examples.push(format!("{id}: {state}"));
                }
            }
        }
    }
    for job in jobs.values() {
        report.attempts += u64::from(job.attempt);
        report.retries += u64::from(job.attempt.saturating_sub(1));
    }
    report.unknown_to_client = jobs
        .keys()
        .filter(|id| accepted.binary_search(id).is_err())
        .count() as u64;
    report.posts_minus_attempts = report.prompt_posts as i64 - report.attempts as i64;
    let path = options.out.join("soak.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
        .map_err(|source| BenchError::Output { path, source })?;
    drop(data);
    Ok(report)
}

fn set_faults(sim: &SimNode, change: impl FnOnce(&mut FaultConfig)) -> bool {
    let Ok(mut faults) = sim.faults() else {
        return false;
    };
    change(&mut faults);
    sim.set_faults(faults).is_ok()
}

async fn restart_node(sim: &SimNode) {
    // The crashed listener may still hold the port for a moment.
    for _ in 0..50 {
        match sim.restart().await {
            Ok(()) => return,
            Err(error) => {
                warn!(node = sim.name(), %error, "restart failed; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn sample_rss(pid: Arc<AtomicU64>, series: Arc<Mutex<Vec<(f64, u64)>>>, started: Instant) {
    loop {
        let pid = pid.load(Ordering::Relaxed);
        if let Some(kib) = u32::try_from(pid).ok().and_then(rss_kib) {
            series
                .lock()
                .unwrap_or_else(|poison| poison.into_inner())
                .push((started.elapsed().as_secs_f64(), kib));
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
}
