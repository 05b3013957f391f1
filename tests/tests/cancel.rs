//! Cancelling a job in every state it can be in.
//!
//! One sim with two slots: a slow job runs, a second waits in the node's own queue, a third
//! waits in the coordinator's queue. Each is cancelled where it is, and the node's queue and
//! history are checked directly to see that exactly the right prompt was removed or
//! interrupted and that its neighbour was left alone.

use comfyfleet_tests::{
    JOB_TIMEOUT, TestFleet, fresh_seed, node_history, sd15_workflow, sim_config, v1 as pb,
    wait_until,
};
use pb::CancelOutcome;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_works_in_every_state() {
    // B must go to the node's second slot at once. Expected-finish gives a node it has not
    // measured one prompt at a time, so this test places with least-loaded.
    let fleet = TestFleet::start_with(vec![sim_config("gpu-a", 0.2)], |config| {
        config.placement.kind = scheduler::PolicyKind::LeastLoaded;
    })
    .await;
    let sim = fleet.sim("gpu-a");
    let slow = || sd15_workflow(2000, fresh_seed());

    // A runs, B waits on the node (second slot), C waits in the coordinator.
    let a = fleet.submit(&slow()).await.expect("submit a");
    fleet.wait_for_state(&a, pb::JobState::Running).await;
    let b = fleet.submit(&slow()).await.expect("submit b");
    fleet.wait_for_state(&b, pb::JobState::Dispatched).await;
    wait_until("b posted to the node", JOB_TIMEOUT, || async {
        sim.snapshot().expect("sim").queue_remaining == 2
    })
    .await;
    let c = fleet.submit(&slow()).await.expect("submit c");
    let queued = fleet.get(&c).await;
    assert_eq!(queued.state(), pb::JobState::Queued, "no free slot for c");

    // Queued in the coordinator: removed from its queue, never reaches the node.
    let cancelled = fleet.cancel(&c, "not needed").await.expect("cancel c");
    assert_eq!(cancelled.outcome(), CancelOutcome::RemovedFromQueue);
    let watched = fleet.watch_to_end(&c).await;
    assert!(
        matches!(watched.terminal(), Some(pb::job_event::Kind::Cancelled(x)) if x.reason == "not needed"),
        "c ended with {:?}",
        watched.kinds()
    );
    assert!(!watched.kinds().contains(&"dispatched"), "c was dispatched");

    // Waiting on the node: deleted from the node's queue; A keeps running.
    let b_prompt = fleet.get(&b).await.prompt_id;
    let cancelled = fleet.cancel(&b, "changed my mind").await.expect("cancel b");
    assert_eq!(cancelled.outcome(), CancelOutcome::DeletedFromNodeQueue);
    let watched = fleet.watch_to_end(&b).await;
    assert!(matches!(
        watched.terminal(),
        Some(pb::job_event::Kind::Cancelled(_))
    ));
    wait_until("b gone from the node's queue", JOB_TIMEOUT, || async {
        sim.snapshot().expect("sim").queue_remaining == 1
    })
    .await;
    assert!(
        node_history(sim, &b_prompt).await.is_none(),
        "b never ran, so the node has no history for it"
    );
    assert_eq!(fleet.get(&a).await.state(), pb::JobState::Running);

    // Running: interrupted on the node, and D queued behind it is not touched and succeeds.
    let d = fleet
        .submit(&sd15_workflow(5, fresh_seed()))
        .await
        .expect("submit d");
    fleet.wait_for_state(&d, pb::JobState::Dispatched).await;
    let a_prompt = fleet.get(&a).await.prompt_id;
    let cancelled = fleet.cancel(&a, "too slow").await.expect("cancel a");
    assert_eq!(cancelled.outcome(), CancelOutcome::Interrupted);
    let watched = fleet.watch_to_end(&a).await;
    assert!(matches!(
        watched.terminal(),
        Some(pb::job_event::Kind::Cancelled(_))
    ));
    let done = fleet.watch_to_end(&d).await;
    assert!(
        matches!(done.terminal(), Some(pb::job_event::Kind::Succeeded(_))),
        "d was hit by a's interruption: {:?}",
        done.kinds()
    );
    let history = node_history(sim, &a_prompt)
        .await
        .expect("the node keeps a's history");
    let messages = history["status"]["messages"].to_string();
    assert!(
        messages.contains("execution_interrupted"),
        "a's history does not show an interruption: {messages}"
    );
    assert_eq!(history["status"]["completed"], false);

    // Terminal jobs: harmless, said so, repeatedly.
    for (job, state) in [
        (&a, pb::JobState::Cancelled),
        (&a, pb::JobState::Cancelled),
        (&d, pb::JobState::Succeeded),
    ] {
        let again = fleet.cancel(job, "again").await.expect("cancel terminal");
        assert_eq!(again.outcome(), CancelOutcome::AlreadyTerminal);
        assert_eq!(again.job.expect("job").state(), state);
    }
    assert_eq!(fleet.get(&d).await.state(), pb::JobState::Succeeded);

    // Unknown and malformed ids.
    let unknown = fleet
        .cancel("00000000-0000-4000-8000-000000000000", "")
        .await
        .expect_err("unknown id");
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    let bad = fleet.cancel("not-a-job", "").await.expect_err("bad id");
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");
    assert!(bad.message().contains("not-a-job"), "{bad:?}");
}
