//! Node faults: a crash mid-job, a run-time error in a workflow node, and out-of-memory.
//!
//! Each fault is injected into comfy-sim while a job runs, and the job's outcome is checked
//! against what the contract promises: lost nodes and OOM are retried elsewhere and succeed
//! exactly once; a workflow's own run-time error fails at once with the node's error kept.

use comfy_sim::{FaultConfig, ModelFile};
use comfyfleet_tests::{
    GIB, JOB_TIMEOUT, TestFleet, Watched, fresh_seed, sd15_workflow, sim_config, v1 as pb,
    wait_until,
};
use pb::job_event::Kind;

fn dispatched_nodes(watched: &Watched) -> Vec<String> {
    watched
        .events
        .iter()
        .filter_map(|event| match &event.kind {
            Some(Kind::Dispatched(d)) => Some(d.node.clone()),
            _ => None,
        })
        .collect()
}

/// An 8 GiB GPU whose `dreamshaper_8.safetensors` is 12 GiB, under a name the coordinator
/// cannot size: a job using it is placed there and runs out of memory.
fn oversized_checkpoint_on_8_gib(name: &str) -> comfy_sim::NodeConfig {
    let mut node = sim_config(name, 0.05);
    node.gpu = comfy_sim::GpuConfig::cuda("NVIDIA GeForce RTX 3060", 8 * GIB);
    for folder in &mut node.models {
        folder
            .files
            .retain(|file| file.name != "dreamshaper_8.safetensors");
    }
    node.with_model(
        "checkpoints",
        ModelFile {
            name: "dreamshaper_8.safetensors".into(),
            size: Some(12 * GIB),
            load_seconds: None,
        },
    )
}

fn count(watched: &Watched, kind: &str) -> usize {
    watched.kinds().iter().filter(|k| **k == kind).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_job_retries_elsewhere_and_succeeds_once() {
    let fleet = TestFleet::start(vec![sim_config("gpu-a", 0.2), sim_config("gpu-b", 0.2)]).await;
    let id = fleet
        .submit(&sd15_workflow(100, fresh_seed()))
        .await
        .expect("submit");
    fleet.wait_for_state(&id, pb::JobState::Running).await;
    let first = fleet.get(&id).await.node;
    let other = if first == "gpu-a" { "gpu-b" } else { "gpu-a" };
    fleet.sim(&first).crash();

    let watched = fleet.watch_to_end(&id).await;
    assert!(
        matches!(watched.terminal(), Some(Kind::Succeeded(_))),
        "{:?}",
        watched.kinds()
    );
    assert_eq!(
        dispatched_nodes(&watched),
        vec![first.clone(), other.to_owned()]
    );
    assert_eq!(count(&watched, "retrying"), 1, "{:?}", watched.kinds());
    assert_eq!(count(&watched, "succeeded"), 1);
    let retrying = watched.kinds().iter().position(|k| *k == "retrying");
    let succeeded = watched.kinds().iter().position(|k| *k == "succeeded");
    assert!(retrying < succeeded);
    let snapshot = fleet.sim(other).snapshot().expect("other sim");
    assert_eq!(
        snapshot.prompts_succeeded, 1,
        "the job ran exactly once on {other}"
    );
    assert_eq!(fleet.get(&id).await.attempt, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_time_error_fails_with_the_node_error_and_is_not_retried() {
    let fleet = TestFleet::start(vec![sim_config("gpu-a", 0.05), sim_config("gpu-b", 0.05)]).await;
    for sim in &fleet.sims {
        sim.set_faults(FaultConfig {
            fail_class: Some("KSampler".into()),
            fail_count: 5,
            ..FaultConfig::default()
        })
        .expect("set faults");
    }
    let id = fleet
        .submit(&sd15_workflow(4, fresh_seed()))
        .await
        .expect("submit");
    let watched = fleet.watch_to_end(&id).await;
    let failure = watched.failure();
    assert_eq!(
        failure.failure_class(),
        pb::FailureClass::JobFault,
        "{failure:?}"
    );
    assert!(!failure.retryable);
    assert_eq!(count(&watched, "retrying"), 0, "{:?}", watched.kinds());
    assert_eq!(failure.node_errors.len(), 1, "{failure:?}");
    let error = &failure.node_errors[0];
    assert_eq!(error.node_id, "3");
    assert_eq!(error.class_type, "KSampler");
    assert!(!error.exception_type.is_empty(), "{error:?}");
    assert!(!error.exception_message.is_empty(), "{error:?}");
    assert!(!error.traceback.is_empty(), "{error:?}");
    assert!(!failure.raw_node_error_json.is_empty());
    assert!(failure.message.contains("KSampler"), "{}", failure.message);
    let posts: u64 = fleet
        .sims
        .iter()
        .map(|sim| sim.snapshot().expect("sim").prompt_posts)
        .sum();
    assert_eq!(posts, 1, "the job was sent to a node more than once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_memory_on_a_small_gpu_moves_to_the_big_one() {
    // The small GPU holds a checkpoint larger than its VRAM under a name the coordinator
    // cannot size, so the job is placed there and runs out of memory.
    let small = oversized_checkpoint_on_8_gib("small");
    let big = sim_config("big", 0.05);
    let fleet = TestFleet::start(vec![small, big]).await;

    // Only the small GPU is open at first.
    let mut client = fleet.fleet_client();
    client
        .drain_node(pb::DrainNodeRequest { name: "big".into() })
        .await
        .expect("drain");
    let id = fleet
        .submit(&sd15_workflow(4, fresh_seed()))
        .await
        .expect("submit");
    // After the OOM the job waits for a larger GPU instead of retrying on the small one.
    wait_until("the OOM attempt to end", JOB_TIMEOUT, || async {
        let job = fleet.get(&id).await;
        job.state() == pb::JobState::Queued && job.attempt == 1
    })
    .await;
    client
        .undrain_node(pb::UndrainNodeRequest { name: "big".into() })
        .await
        .expect("undrain");
    let watched = fleet.watch_to_end(&id).await;
    assert!(
        matches!(watched.terminal(), Some(Kind::Succeeded(_))),
        "{:?}",
        watched.kinds()
    );
    assert_eq!(dispatched_nodes(&watched), vec!["small", "big"]);
    assert_eq!(count(&watched, "retrying"), 1);
    let small_sim = fleet.sim("small").snapshot().expect("small");
    assert_eq!(
        (small_sim.prompts_finished, small_sim.prompts_succeeded),
        (1, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_back_from_an_outage_gets_work_only_with_its_event_socket_back() {
    // A long socket backoff, as after a real outage: without a nudge from the probe, the
    // socket would stay closed for seconds after the node answers HTTP again.
    let fleet = TestFleet::start_with(vec![sim_config("gpu-a", 0.05)], |config| {
        config.websocket.reconnect_min = std::time::Duration::from_millis(300);
        config.websocket.reconnect_max = std::time::Duration::from_secs(30);
    })
    .await;
    let sim = fleet.sim("gpu-a");
    sim.crash();
    wait_until("the node is down", JOB_TIMEOUT, || async {
        fleet.nodes().await[0].health() == pb::NodeHealth::Down
    })
    .await;
    // Failed attempts at 0.3, 0.6, 1.2, 2.4 s…: the next wait is several seconds long.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    sim.restart().await.expect("restart the node");
    let back = std::time::Instant::now();
    let (_, watched) = fleet.run(&sd15_workflow(4, fresh_seed())).await;
    watched.assert_succeeded();
    // Every event of the run arrived over the socket: it was up before the prompt went out.
    for kind in ["started", "progress", "node_executing"] {
        assert!(
            watched.kinds().contains(&kind),
            "{kind}: {:?}",
            watched.kinds()
        );
    }
    assert!(
        back.elapsed() < std::time::Duration::from_secs(2),
        "the job took {:?} after the node came back",
        back.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_memory_twice_on_the_largest_gpu_ends_the_job() {
    // One GPU, holding a checkpoint larger than its VRAM under a name the coordinator cannot
    // size: every attempt runs out of memory, and there is no larger GPU to move to.
    let only = oversized_checkpoint_on_8_gib("only");
    let fleet = TestFleet::start(vec![only]).await;
    let (id, watched) = fleet.run(&sd15_workflow(4, fresh_seed())).await;
    let failure = watched.failure();
    assert_eq!(
        failure.failure_class(),
        pb::FailureClass::OutOfMemory,
        "{failure:?}"
    );
    assert!(
        failure
            .message
            .contains("out of memory twice on the largest GPU in the fleet, 8 GiB"),
        "{}",
        failure.message
    );
    // One retry after the node freed its memory, not every allowed attempt.
    assert_eq!(count(&watched, "retrying"), 1, "{:?}", watched.kinds());
    assert_eq!(fleet.get(&id).await.attempt, 2);
}
