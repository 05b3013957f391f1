//! Coordinator restarts: `kill -9` under load, and SIGTERM with jobs on nodes.
//!
//! The real binary runs as a child process with a data directory kept across restarts; the
//! emulated nodes live in the test process, so their POST /prompt counts are ground truth.
//! The promise checked: every accepted job reaches exactly one terminal state, none is lost,
//! and no prompt runs twice except by a retry the job records.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use comfy_sim::SimNode;
use comfyfleet_tests::process::{CoordinatorProcess, comfyfleet_binary};
use comfyfleet_tests::{fresh_seed, read_until_progress, sd15_workflow, sim_config, v1 as pb};
use fleet_proto::v1::job_service_client::JobServiceClient;
use tonic::transport::Channel;

async fn start_sims(count: usize, time_scale: f64) -> Vec<SimNode> {
    let mut sims = Vec::new();
    for i in 0..count {
        let sim = comfy_sim::spawn(
            sim_config(&format!("gpu-{i}"), time_scale),
            "127.0.0.1:0".parse().expect("address"),
        )
        .await
        .expect("start sim");
        sims.push(sim);
    }
    sims
}

async fn get(jobs: &mut JobServiceClient<Channel>, id: &str) -> pb::Job {
    jobs.get_job(pb::GetJobRequest {
        job_id: id.to_owned(),
    })
    .await
    .unwrap_or_else(|status| panic!("get {id}: {status}"))
    .into_inner()
    .job
    .expect("GetJob answers a job")
}

fn is_terminal(state: pb::JobState) -> bool {
    matches!(
        state,
        pb::JobState::Succeeded | pb::JobState::Failed | pb::JobState::Cancelled
    )
}

/// Waits until every job is terminal; returns them.
async fn wait_all_terminal(
    jobs: &mut JobServiceClient<Channel>,
    ids: &[String],
    timeout: Duration,
) -> Vec<pb::Job> {
    let deadline = Instant::now() + timeout;
    let mut done = Vec::new();
    for id in ids {
        loop {
            let job = get(jobs, id).await;
            if is_terminal(job.state()) {
                done.push(job);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} still {:?} after {timeout:?}",
                job.state()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    done
}

/// POST /prompt counts and successes summed over the sims.
fn sim_totals(sims: &[SimNode]) -> (u64, u64) {
    sims.iter().fold((0, 0), |(posts, ok), sim| {
        let snapshot = sim.snapshot().expect("sim snapshot");
        (
            posts + snapshot.prompt_posts,
            ok + snapshot.prompts_succeeded,
        )
    })
}

/// Every accepted job: exactly one terminal state, succeeded, and the nodes ran each once.
fn check_exactly_once(jobs: &[pb::Job], sims: &[SimNode]) {
    let ids: HashSet<&str> = jobs.iter().map(|job| job.id.as_str()).collect();
    assert_eq!(ids.len(), jobs.len(), "each job reported once");
    for job in jobs {
        assert_eq!(
            job.state(),
            pb::JobState::Succeeded,
            "job {} ended {:?} (attempt {}, failure {:?})",
            job.id,
            job.state(),
            job.attempt,
            job.failure
        );
    }
    let attempts: u64 = jobs.iter().map(|job| u64::from(job.attempt)).sum();
    let (posts, succeeded) = sim_totals(sims);
    // A POST happens only for a recorded attempt; an attempt recorded just before a kill may
    // never have been posted (it is then retried), so posts can be fewer than attempts.
    assert!(
        posts <= attempts,
        "{posts} POST /prompt for {attempts} recorded attempts: a prompt was posted without a record"
    );
    assert_eq!(
        succeeded,
        jobs.len() as u64,
        "prompts that ran to success vs jobs: a job ran twice or a success was lost"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_job_and_runs_none_twice() {
    let binary = comfyfleet_binary();
    let sims = start_sims(3, 0.3).await;
    let data = tempfile::tempdir().expect("data dir");
    let first = CoordinatorProcess::start(&binary, data.path(), &sims, &[]).await;
    let mut jobs = first.jobs().await;

    // Steady submissions; the coordinator is killed in the middle of them.
    let mut accepted = Vec::new();
    for i in 0..40 {
        let response = jobs
            .submit_job(pb::SubmitJobRequest {
                workflow: sd15_workflow(8, fresh_seed()),
                idempotency_key: format!("restart-{i}"),
                ..pb::SubmitJobRequest::default()
            })
            .await
            .expect("submit before the kill");
        accepted.push(response.into_inner().job_id);
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    // Killed with jobs on the nodes and in the queue.
    let mut on_nodes = 0;
    let mut queued = 0;
    for id in &accepted {
        match get(&mut jobs, id).await.state() {
            pb::JobState::Dispatched | pb::JobState::Running => on_nodes += 1,
            pb::JobState::Queued => queued += 1,
            _ => {}
        }
    }
    first.kill9();
    assert!(
        on_nodes > 0 && queued > 0,
        "on nodes {on_nodes}, queued {queued} at the kill"
    );
    let second = CoordinatorProcess::start(&binary, data.path(), &sims, &[]).await;
    let mut jobs = second.jobs().await;
    for i in 40..60 {
        let response = jobs
            .submit_job(pb::SubmitJobRequest {
                workflow: sd15_workflow(8, fresh_seed()),
                idempotency_key: format!("restart-{i}"),
                ..pb::SubmitJobRequest::default()
            })
            .await
            .expect("submit after the restart");
        accepted.push(response.into_inner().job_id);
    }
    let done = wait_all_terminal(&mut jobs, &accepted, Duration::from_secs(90)).await;
    check_exactly_once(&done, &sims);

    // Log lines about a job carry its id and tenant (the job's span).
    let log = std::fs::read_to_string(&second.log_path).expect("read the coordinator log");
    let tagged = log
        .lines()
        .filter(|line| line.contains("\"job_id\"") && line.contains("\"tenant\""))
        .count();
    assert!(tagged > 0, "no JSON log line carries job_id and tenant");
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_promptly_and_jobs_on_nodes_finish_from_history_after_restart() {
    let binary = comfyfleet_binary();
    let sims = start_sims(2, 0.3).await;
    let data = tempfile::tempdir().expect("data dir");
    // Both slots of each node must fill at once; expected-finish gives a node it has not
    // measured one prompt at a time.
    let least_loaded = [("COMFYFLEET_PLACEMENT_KIND", "least-loaded")];
    let first = CoordinatorProcess::start(&binary, data.path(), &sims, &least_loaded).await;
    let mut jobs = first.jobs().await;
    let mut accepted = Vec::new();
    for _ in 0..6 {
        let response = jobs
            .submit_job(pb::SubmitJobRequest {
                workflow: sd15_workflow(20, fresh_seed()),
                ..pb::SubmitJobRequest::default()
            })
            .await
            .expect("submit");
        accepted.push(response.into_inner().job_id);
    }
    // Wait until four are on the nodes (two slots each).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut on_nodes = 0;
        for id in &accepted {
            let state = get(&mut jobs, id).await.state();
            on_nodes += usize::from(matches!(
                state,
                pb::JobState::Dispatched | pb::JobState::Running
            ));
        }
        if on_nodes >= 4 {
            break;
        }
        assert!(Instant::now() < deadline, "jobs never reached the nodes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, took) = first
        .terminate(Duration::from_secs(5))
        .expect("comfyfleet serve exits within 5 s of SIGTERM");
    assert!(status.success(), "exit status {status}");
    let (posts_before, _) = sim_totals(&sims);
    assert!(
        posts_before >= 4,
        "{posts_before} prompts posted before SIGTERM"
    );

    let second = CoordinatorProcess::start(&binary, data.path(), &sims, &least_loaded).await;
    let mut jobs = second.jobs().await;
    let done = wait_all_terminal(&mut jobs, &accepted, Duration::from_secs(60)).await;
    check_exactly_once(&done, &sims);
    // The prompts left on the nodes were reattached, not run again: one attempt each.
    for job in &done {
        assert_eq!(
            job.attempt, 1,
            "job {} took {} attempts",
            job.id, job.attempt
        );
    }
    let (posts, _) = sim_totals(&sims);
    assert_eq!(posts, accepted.len() as u64, "one POST per job");
    assert!(took < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_resuming_across_a_restart_gets_a_gap_and_never_an_old_number() {
    let binary = comfyfleet_binary();
    let sims = start_sims(1, 0.5).await;
    let data = tempfile::tempdir().expect("data dir");
    let first = CoordinatorProcess::start(&binary, data.path(), &sims, &[]).await;
    let mut jobs = first.jobs().await;
    // Long enough to still be on the node when the coordinator stops.
    let id = jobs
        .submit_job(pb::SubmitJobRequest {
            workflow: sd15_workflow(200, fresh_seed()),
            ..pb::SubmitJobRequest::default()
        })
        .await
        .expect("submit")
        .into_inner()
        .job_id;
    let before: Vec<u64> = read_until_progress(&mut jobs, &id)
        .await
        .iter()
        .map(|event| event.sequence)
        .collect();
    let last_read = *before.last().expect("events before the restart");
    first
        .terminate(Duration::from_secs(5))
        .expect("comfyfleet serve exits within 5 s of SIGTERM");

    let second = CoordinatorProcess::start(&binary, data.path(), &sims, &[]).await;
    let mut jobs = second.jobs().await;
    let mut stream = jobs
        .watch_job(pb::WatchJobRequest {
            job_id: id.clone(),
            after_sequence: last_read,
            include_previews: false,
        })
        .await
        .expect("a number from before the restart is a valid place to resume")
        .into_inner();
    let mut items = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Some(message) = tokio::time::timeout_at(deadline.into(), stream.message())
        .await
        .expect("the job ends within a minute of the restart")
        .expect("stream")
    {
        items.push(message.item.expect("every message has an item"));
    }
    use pb::watch_job_response::Item;
    assert!(
        matches!(items.first(), Some(Item::Snapshot(_))),
        "{items:?}"
    );
    let Some(Item::Gap(gap)) = items.get(1) else {
        panic!("the events of the restart are reported missing: {items:?}");
    };
    // This is the journal's second run: its numbers start above 2 × 2^32.
    assert_eq!(gap.from_sequence, last_read + 1);
    assert_eq!(gap.to_sequence, 2 << 32);
    assert!(matches!(items.get(2), Some(Item::Snapshot(_))), "{items:?}");
    let after: Vec<u64> = items
        .iter()
        .filter_map(|item| match item {
            Item::Event(event) => Some(event.sequence),
            _ => None,
        })
        .collect();
    assert_eq!(
        after.first(),
        Some(&((2 << 32) + 1)),
        "the new run numbers on from its base"
    );
    assert!(
        after.windows(2).all(|pair| pair[1] == pair[0] + 1),
        "consecutive after the restart: {after:?}"
    );
    let Some(Item::Event(terminal)) = items.last() else {
        panic!("the stream ends with the terminal event: {items:?}");
    };
    assert!(
        matches!(terminal.kind, Some(pb::job_event::Kind::Succeeded(_))),
        "{terminal:?}"
    );
    // A number the new run has not reached is still refused.
    let ahead = jobs
        .watch_job(pb::WatchJobRequest {
            job_id: id.clone(),
            after_sequence: (2 << 32) + 10_000,
            include_previews: false,
        })
        .await
        .expect_err("beyond the last event");
    assert_eq!(ahead.code(), tonic::Code::OutOfRange, "{ahead:?}");
    drop(second);
}

/// Waits up to `limit` for a command-line child to exit.
async fn wait_exit(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(exit) = child.try_wait().expect("poll the CLI") {
            return exit;
        }
        assert!(
            Instant::now() < deadline,
            "the command did not end within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_end_with_unavailable_on_sigterm_and_the_cli_resumes_across_the_restart() {
    let binary = comfyfleet_binary();
    let sims = start_sims(1, 0.5).await;
    let data = tempfile::tempdir().expect("data dir");
    let first = CoordinatorProcess::start(&binary, data.path(), &sims, &[]).await;
    let (grpc_addr, http_addr) = (first.grpc_addr, first.http_addr);
    let mut jobs = first.jobs().await;
    // Long enough to still be on the node across the restart.
    let id = jobs
        .submit_job(pb::SubmitJobRequest {
            workflow: sd15_workflow(150, fresh_seed()),
            ..pb::SubmitJobRequest::default()
        })
        .await
        .expect("submit")
        .into_inner()
        .job_id;
    // `comfyfleet watch` as a script runs it (JSON lines) and as a person does (plain lines),
    // each writing to a file.
    let watch = |extra: &[&str], out: &std::path::Path| {
        std::process::Command::new(&binary)
            .args(["watch", &id, "--addr", &format!("http://{grpc_addr}")])
            .args(extra)
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(out).expect("create the CLI's output file"))
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn comfyfleet watch")
    };
    let cli_out = data.path().join("watch.out");
    let mut cli = watch(&["--json"], &cli_out);
    let plain_out = data.path().join("watch-plain.out");
    let mut plain = watch(&[], &plain_out);
    read_until_progress(&mut jobs, &id).await;
    // A raw watch, read to its end on another task so that its frames keep flowing.
    let mut stream = jobs
        .watch_job(pb::WatchJobRequest {
            job_id: id.clone(),
            after_sequence: 0,
            include_previews: false,
        })
        .await
        .expect("watch")
        .into_inner();
    let ended = tokio::spawn(async move {
        loop {
            match stream.message().await {
                Ok(Some(_)) => {}
                Ok(None) => return None,
                Err(status) => return Some(status),
            }
        }
    });
    tokio::task::spawn_blocking(move || first.terminate(Duration::from_secs(5)))
        .await
        .expect("join")
        .expect("comfyfleet serve exits within 5 s of SIGTERM");
    let status = ended
        .await
        .expect("join")
        .expect("the watch ends with a status, not a clean end, while the job runs");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("after_sequence"),
        "the status says how to resume: {status:?}"
    );
    assert!(
        std::error::Error::source(&status).is_none(),
        "sent by the coordinator, not a broken connection: {status:?}"
    );

    // The command line keeps trying until the coordinator is back on its address.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        cli.try_wait().expect("poll the CLI").is_none(),
        "comfyfleet watch gave up while the coordinator was away"
    );
    let second =
        CoordinatorProcess::start_at(&binary, data.path(), &sims, &[], grpc_addr, http_addr).await;
    let exit = wait_exit(&mut cli, Duration::from_secs(60)).await;
    let out = std::fs::read_to_string(&cli_out).expect("the CLI's output");
    assert_eq!(exit.code(), Some(0), "{out}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect();
    assert!(
        lines.iter().any(|line| line.get("gap").is_some()),
        "the events of the restart are reported missing: {out}"
    );
    assert_eq!(
        lines
            .iter()
            .filter(|line| line.get("snapshot").is_some())
            .count(),
        3,
        "the first snapshot, the resumed stream's, and the one after the gap: {out}"
    );
    assert_eq!(
        lines.last().and_then(|line| line["type"].as_str()),
        Some("succeeded"),
        "{out}"
    );
    let job = get(&mut second.jobs().await, &id).await;
    assert_eq!(job.attempt, 1, "the prompt was reattached, not run again");

    let exit = wait_exit(&mut plain, Duration::from_secs(30)).await;
    let out = std::fs::read_to_string(&plain_out).expect("the CLI's output");
    assert_eq!(exit.code(), Some(0), "{out}");
    assert_eq!(
        out.matches("lost the watch of job").count(),
        1,
        "one notice of the break: {out}"
    );
    assert_eq!(
        out.matches("going on from its current state").count(),
        1,
        "{out}"
    );
    // The restarted run's event numbers mean nothing to a person and are not printed, nor is
    // the snapshot that follows the gap when it repeats the one before it.
    assert!(!out.contains(&(2u64 << 32).to_string()), "{out}");
    let snapshots = out
        .lines()
        .filter(|line| line.contains(&format!("job {id}: ")))
        .count();
    assert_eq!(snapshots, 2, "the first and the resumed one: {out}");
    assert!(out.contains("succeeded with 1 output(s)"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_node_stays_drained_across_a_restart_until_undrained() {
    let binary = comfyfleet_binary();
    let sims = start_sims(2, 0.0).await;
    let data = tempfile::tempdir().expect("data dir");
    let first = CoordinatorProcess::start(&binary, data.path(), &sims, &[]).await;
    first
        .fleet()
        .await
        .drain_node(pb::DrainNodeRequest {
            name: "gpu-0".into(),
        })
        .await
        .expect("drain");
    first
        .terminate(Duration::from_secs(5))
        .expect("comfyfleet serve exits within 5 s of SIGTERM");

    let second = CoordinatorProcess::start(&binary, data.path(), &sims, &[]).await;
    let health = |nodes: Vec<pb::Node>, name: &str| {
        nodes
            .into_iter()
            .find(|node| node.name == name)
            .map(|node| node.health())
    };
    let nodes = second
        .fleet()
        .await
        .list_nodes(pb::ListNodesRequest::default())
        .await
        .expect("list")
        .into_inner()
        .nodes;
    assert_eq!(health(nodes, "gpu-0"), Some(pb::NodeHealth::Draining));
    // Every job goes to the other node.
    let mut jobs = second.jobs().await;
    let mut accepted = Vec::new();
    for _ in 0..4 {
        accepted.push(
            jobs.submit_job(pb::SubmitJobRequest {
                workflow: sd15_workflow(2, fresh_seed()),
                ..pb::SubmitJobRequest::default()
            })
            .await
            .expect("submit")
            .into_inner()
            .job_id,
        );
    }
    let done = wait_all_terminal(&mut jobs, &accepted, Duration::from_secs(60)).await;
    for job in &done {
        assert_eq!(job.state(), pb::JobState::Succeeded, "{job:?}");
        assert_eq!(job.node, "gpu-1", "a drained node got job {}", job.id);
    }
    // Undrained, it stays so across the next restart.
    second
        .fleet()
        .await
        .undrain_node(pb::UndrainNodeRequest {
            name: "gpu-0".into(),
        })
        .await
        .expect("undrain");
    second
        .terminate(Duration::from_secs(5))
        .expect("comfyfleet serve exits within 5 s of SIGTERM");
    let third = CoordinatorProcess::start(&binary, data.path(), &sims, &[]).await;
    let mut fleet = third.fleet().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let nodes = fleet
            .list_nodes(pb::ListNodesRequest::default())
            .await
            .expect("list")
            .into_inner()
            .nodes;
        if health(nodes, "gpu-0") == Some(pb::NodeHealth::Up) {
            break;
        }
        assert!(Instant::now() < deadline, "gpu-0 never came back up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(third);
}
