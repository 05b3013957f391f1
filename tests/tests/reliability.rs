//! Reliability: backpressure at submit, deadlines, the stall watchdog and restarted nodes.
//!
//! Each test drives a real coordinator in front of emulated nodes with faults injected, and
//! checks the promise end to end: every accepted job reaches exactly one terminal state, a
//! refused one is refused before it is written, and nobody else's work is hurt.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use comfy_sim::FaultConfig;

use comfyfleet_tests::{
    TestFleet, Watched, fresh_seed, http_get, sd15_workflow, sim_config, v1 as pb, wait_until,
};
use pb::job_event::Kind;

fn is_terminal(state: pb::JobState) -> bool {
    matches!(
        state,
        pb::JobState::Succeeded | pb::JobState::Failed | pb::JobState::Cancelled
    )
}

/// The coordinator's `comfyfleet_jobs_queued` gauge.
async fn queued_gauge(fleet: &TestFleet) -> i64 {
    let (status, body) = http_get(&format!("http://{}/metrics", fleet.http_addr())).await;
    assert_eq!(status, 200, "GET /metrics answered {status}");
    let text = String::from_utf8(body).expect("metrics are text");
    text.lines()
        .find_map(|line| line.strip_prefix("comfyfleet_jobs_queued "))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .expect("comfyfleet_jobs_queued is exported") as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_with_resource_exhausted_and_every_accepted_job_finishes() {
    const SUBMISSIONS: usize = 10_000;
    const LIMIT: u64 = 1_000;
    const PER_TENANT: u64 = 400;
    const TENANTS: usize = 4;
    let fleet = TestFleet::start_with(
        (0..4)
            .map(|i| sim_config(&format!("gpu-{i}"), 0.004))
            .collect(),
        |config| {
            config.limits.max_queued_jobs = LIMIT;
            config.limits.max_queued_jobs_per_tenant = PER_TENANT;
        },
    )
    .await;
    let fleet = Arc::new(fleet);
    let workflow = Arc::new(sd15_workflow(1, fresh_seed()));

    // Watch the queue gauge while the flood runs: it must never pass the limit.
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let fleet = Arc::clone(&fleet);
        let sampling = Arc::clone(&sampling);
        tokio::spawn(async move {
            let mut highest = 0;
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                highest = highest.max(queued_gauge(&fleet).await);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            highest
        })
    };

    // 32 concurrent submitters, tenants interleaved.
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut submitters = Vec::new();
    for _ in 0..32 {
        let fleet = Arc::clone(&fleet);
        let workflow = Arc::clone(&workflow);
        let next = Arc::clone(&next);
        submitters.push(tokio::spawn(async move {
            let mut accepted = Vec::new();
            let mut refused = Vec::new();
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= SUBMISSIONS {
                    return (accepted, refused);
                }
                let tenant = format!("tenant-{}", n % TENANTS);
                let result = fleet
                    .submit_request(pb::SubmitJobRequest {
                        workflow: workflow.to_vec(),
                        tenant: tenant.clone(),
                        ..pb::SubmitJobRequest::default()
                    })
                    .await;
                match result {
                    Ok(id) => accepted.push((id, tenant)),
                    Err(status) => refused.push(status),
                }
            }
        }));
    }
    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    for submitter in submitters {
        let (a, r) = submitter.await.expect("submitter");
        accepted.extend(a);
        refused.extend(r);
    }
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let highest = sampler.await.expect("sampler");

    assert_eq!(accepted.len() + refused.len(), SUBMISSIONS);
    assert!(
        accepted.len() as u64 >= LIMIT.min(PER_TENANT * TENANTS as u64),
        "only {} accepted",
        accepted.len()
    );
    assert!(
        refused.len() > SUBMISSIONS / 2,
        "slow nodes must make most of the flood wait: {} refused",
        refused.len()
    );
    assert!(
        highest <= LIMIT as i64,
        "the queue reached {highest} jobs, past the limit of {LIMIT}"
    );
    for status in &refused {
        assert_eq!(
            status.code(),
            tonic::Code::ResourceExhausted,
            "refusal: {status:?}"
        );
        assert!(
            status.message().contains("limits.max_queued_jobs"),
            "the message names the limit: {}",
            status.message()
        );
        let retry_after: u64 = status
            .metadata()
            .get("retry-after")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("no retry-after seconds on {status:?}"));
        assert!(
            (1..=300).contains(&retry_after),
            "retry-after {retry_after}"
        );
    }

    // Every accepted job ends, and succeeds: nothing was lost or hurt by the flood.
    let mut by_tenant: HashMap<String, usize> = HashMap::new();
    for (id, tenant) in &accepted {
        *by_tenant.entry(tenant.clone()).or_default() += 1;
        wait_until(
            &format!("job {id} terminal"),
            Duration::from_secs(120),
            || async { is_terminal(fleet.get(id).await.state()) },
        )
        .await;
        assert_eq!(
            fleet.get(id).await.state(),
            pb::JobState::Succeeded,
            "job {id}"
        );
    }
    assert_eq!(
        by_tenant.len(),
        TENANTS,
        "every tenant got work in: {by_tenant:?}"
    );
    let ran: u64 = fleet
        .sims
        .iter()
        .map(|sim| sim.snapshot().expect("snapshot").prompt_posts)
        .sum();
    assert_eq!(ran, accepted.len() as u64, "one POST per accepted job");

    // Still healthy: alive, and a new submission is accepted and runs.
    let (status, _) = http_get(&format!("http://{}/healthz", fleet.http_addr())).await;
    assert_eq!(status, 200);
    let id = fleet
        .submit(&sd15_workflow(1, fresh_seed()))
        .await
        .expect("a submission after the flood is accepted");
    let watched = fleet.watch_to_end(&id).await;
    assert!(
        matches!(watched.terminal(), Some(Kind::Succeeded(_))),
        "{:?}",
        watched.kinds()
    );
}

fn count(watched: &Watched, kind: &str) -> usize {
    watched.kinds().iter().filter(|k| **k == kind).count()
}

fn terminal_events(watched: &Watched) -> usize {
    watched
        .events
        .iter()
        .filter(|event| {
            event
                .kind
                .as_ref()
                .is_some_and(comfyfleet_tests::is_terminal)
        })
        .count()
}

fn with_timeout(workflow: Vec<u8>, seconds: i64) -> pb::SubmitJobRequest {
    pb::SubmitJobRequest {
        workflow,
        deadline: Some(pb::submit_job_request::Deadline::Timeout(
            prost_types::Duration { seconds, nanos: 0 },
        )),
        ..pb::SubmitJobRequest::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_fail_queued_jobs_and_interrupt_running_ones_only() {
    let fleet = TestFleet::start_with(vec![sim_config("gpu-a", 1.0)], |config| {
        config.dispatch.slots_per_node = 1;
    })
    .await;
    // A long job without deadline holds the only slot.
    let long = fleet
        .submit(&sd15_workflow(80, fresh_seed()))
        .await
        .expect("submit");
    fleet.wait_for_state(&long, pb::JobState::Running).await;
    // Queued behind it past its deadline: fails in the queue, never posted.
    let queued = fleet
        .submit_request(with_timeout(sd15_workflow(1, fresh_seed()), 1))
        .await
        .expect("submit");
    let watched = fleet.watch_to_end(&queued).await;
    let failure = watched.failure();
    assert_eq!(
        failure.failure_class(),
        pb::FailureClass::Deadline,
        "{failure:?}"
    );
    assert_eq!(count(&watched, "dispatched"), 0, "{:?}", watched.kinds());
    assert_eq!(terminal_events(&watched), 1);
    assert_eq!(fleet.get(&long).await.state(), pb::JobState::Running);
    assert_eq!(
        fleet
            .sim("gpu-a")
            .snapshot()
            .expect("snapshot")
            .prompt_posts,
        1
    );

    // Let the long job finish, then run one whose deadline passes while it runs.
    let done = fleet.watch_to_end(&long).await;
    assert!(
        matches!(done.terminal(), Some(Kind::Succeeded(_))),
        "{:?}",
        done.kinds()
    );
    let running = fleet
        .submit_request(with_timeout(sd15_workflow(200, fresh_seed()), 2))
        .await
        .expect("submit");
    let watched = fleet.watch_to_end(&running).await;
    let failure = watched.failure();
    assert_eq!(
        failure.failure_class(),
        pb::FailureClass::Deadline,
        "{failure:?}"
    );
    assert!(failure.message.contains("gpu-a"), "{}", failure.message);
    assert_eq!(count(&watched, "started"), 1, "{:?}", watched.kinds());
    assert_eq!(terminal_events(&watched), 1);
    // The node was interrupted (not left running the prompt) and is free for the next job.
    let snapshot = fleet.sim("gpu-a").snapshot().expect("snapshot");
    assert_eq!(
        snapshot.queue_remaining, 0,
        "the prompt was interrupted on the node"
    );
    assert_eq!(
        snapshot.prompts_succeeded, 1,
        "only the long job succeeded there"
    );
    let after = fleet
        .submit(&sd15_workflow(1, fresh_seed()))
        .await
        .expect("submit");
    let watched = fleet.watch_to_end(&after).await;
    assert!(matches!(watched.terminal(), Some(Kind::Succeeded(_))));
}

/// Starts one node with a long WebSocket idle timeout, so only the stall watchdog (1 s)
/// can notice a prompt that went quiet.
async fn watchdog_fleet(names: &[&str]) -> TestFleet {
    TestFleet::start_with(
        names.iter().map(|name| sim_config(name, 0.05)).collect(),
        |config| {
            config.websocket.idle_timeout = Duration::from_secs(600);
            config.dispatch.stall_timeout = Duration::from_secs(1);
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_socket_mid_run_still_ends_the_job_once_through_the_watchdog() {
    let fleet = watchdog_fleet(&["gpu-a"]).await;
    let id = fleet
        .submit(&sd15_workflow(20, fresh_seed()))
        .await
        .expect("submit");
    fleet.wait_for_state(&id, pb::JobState::Running).await;
    fleet
        .sim("gpu-a")
        .set_faults(FaultConfig {
            silence_ws: true,
            ..FaultConfig::default()
        })
        .expect("faults");
    let watched = fleet.watch_to_end(&id).await;
    assert!(
        matches!(watched.terminal(), Some(Kind::Succeeded(_))),
        "{:?}",
        watched.kinds()
    );
    assert_eq!(terminal_events(&watched), 1);
    assert_eq!(count(&watched, "retrying"), 0, "{:?}", watched.kinds());
    let snapshot = fleet.sim("gpu-a").snapshot().expect("snapshot");
    assert_eq!(snapshot.prompt_posts, 1, "posted once");
    assert_eq!(snapshot.prompts_succeeded, 1, "ran once");
    assert_eq!(watched.outputs().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_dropped_mid_run_still_ends_the_job_once() {
    let fleet = watchdog_fleet(&["gpu-a"]).await;
    fleet
        .sim("gpu-a")
        .set_faults(FaultConfig {
            drop_ws_mid_run: true,
            ..FaultConfig::default()
        })
        .expect("faults");
    let id = fleet
        .submit(&sd15_workflow(20, fresh_seed()))
        .await
        .expect("submit");
    let watched = fleet.watch_to_end(&id).await;
    assert!(
        matches!(watched.terminal(), Some(Kind::Succeeded(_))),
        "{:?}",
        watched.kinds()
    );
    assert_eq!(terminal_events(&watched), 1);
    assert_eq!(count(&watched, "retrying"), 0, "{:?}", watched.kinds());
    let snapshot = fleet.sim("gpu-a").snapshot().expect("snapshot");
    assert_eq!(snapshot.prompt_posts, 1, "posted once");
    assert_eq!(snapshot.prompts_succeeded, 1, "ran once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_restarted_gives_its_job_back_to_run_again() {
    let fleet = TestFleet::start(vec![sim_config("gpu-a", 0.3), sim_config("gpu-b", 0.3)]).await;
    let id = fleet
        .submit(&sd15_workflow(60, fresh_seed()))
        .await
        .expect("submit");
    fleet.wait_for_state(&id, pb::JobState::Running).await;
    let first = fleet.get(&id).await.node;
    // The sim frees its port asynchronously after stopping: retry the bind briefly.
    let sim = fleet.sim(&first);
    let mut tries = 0;
    while let Err(error) = sim.restart().await {
        tries += 1;
        assert!(tries < 100, "restart node {first}: {error}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let watched = fleet.watch_to_end(&id).await;
    assert!(
        matches!(watched.terminal(), Some(Kind::Succeeded(_))),
        "{:?}",
        watched.kinds()
    );
    assert_eq!(terminal_events(&watched), 1);
    let retrying = watched
        .events
        .iter()
        .find_map(|event| match &event.kind {
            Some(Kind::Retrying(retrying)) => Some(retrying.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("a Retrying event: {:?}", watched.kinds()));
    assert_eq!(retrying.attempt, 1, "{retrying:?}");
    assert_eq!(count(&watched, "retrying"), 1, "{:?}", watched.kinds());
    assert_eq!(fleet.get(&id).await.attempt, 2);
    let succeeded: u64 = fleet
        .sims
        .iter()
        .map(|sim| sim.snapshot().expect("snapshot").prompts_succeeded)
        .sum();
    assert_eq!(succeeded, 1, "the job ran to the end exactly once");
}
