//! Many jobs on an even fleet: spread, slot limits, event order, outputs and watchers.
//!
//! Three identical sims and thirty short jobs, submitted at once. While they run, a sampler
//! polls every sim's own queue (the ground truth, not the coordinator's bookkeeping) and
//! records the most prompts any node ever held; the coordinator promises at most two per node
//! (`slots_per_node`). Afterwards every job's event log is checked for order and shape, and
//! outputs fetched through the coordinator are compared byte for byte with the node's `/view`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use comfyfleet_tests::{
    JOB_TIMEOUT, TestFleet, Watched, fresh_seed, http_get, is_terminal, node_history,
    read_until_progress, sd15_workflow, sim_config, v1 as pb, wait_until,
};

/// Checks the contract of one finished job's event log; returns the node it succeeded on.
fn check_event_log(job_id: &str, watched: &Watched) -> String {
    use pb::job_event::Kind;
    assert!(watched.gaps.is_empty(), "job {job_id}: unexpected gaps");
    for (index, event) in watched.events.iter().enumerate() {
        assert_eq!(
            event.sequence,
            index as u64 + 1,
            "job {job_id}: sequences not 1, 2, 3...: {:?}",
            watched.kinds()
        );
    }
    let terminals = watched
        .events
        .iter()
        .filter(|event| event.kind.as_ref().is_some_and(is_terminal))
        .count();
    assert_eq!(terminals, 1, "job {job_id}: {:?}", watched.kinds());
    assert!(
        watched.terminal().is_some(),
        "job {job_id}: terminal not last"
    );
    let position = |name: &str| {
        watched
            .kinds()
            .iter()
            .position(|kind| *kind == name)
            .unwrap_or_else(|| panic!("job {job_id}: no {name} in {:?}", watched.kinds()))
    };
    let (dispatched, started, progress, succeeded) = (
        position("dispatched"),
        position("started"),
        position("progress"),
        position("succeeded"),
    );
    assert!(
        position("queued") < dispatched
            && dispatched < started
            && started < progress
            && progress < succeeded,
        "job {job_id}: out of order: {:?}",
        watched.kinds()
    );
    match &watched.events[dispatched].kind {
        Some(Kind::Dispatched(d)) => d.node.clone(),
        _ => unreachable!("position found a dispatched event"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_jobs_spread_fairly_within_slot_limits_with_ordered_events() {
    let names = ["gpu-a", "gpu-b", "gpu-c"];
    let fleet =
        Arc::new(TestFleet::start(names.iter().map(|name| sim_config(name, 0.2)).collect()).await);

    // Ground truth sampler: the most prompts any sim held at once.
    let most_held = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (fleet, most_held, stop) = (fleet.clone(), most_held.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                for sim in &fleet.sims {
                    let held = sim.snapshot().expect("sim running").queue_remaining;
                    most_held.fetch_max(held, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };

    let mut ids = Vec::new();
    for _ in 0..30 {
        ids.push(
            fleet
                .submit(&sd15_workflow(6, fresh_seed()))
                .await
                .expect("submit"),
        );
    }
    let watches: Vec<_> = ids
        .iter()
        .map(|id| {
            let (fleet, id) = (fleet.clone(), id.clone());
            tokio::spawn(async move { fleet.watch_to_end(&id).await })
        })
        .collect();
    let mut per_node: HashMap<String, usize> = HashMap::new();
    let mut finished = Vec::new();
    for (id, watch) in ids.iter().zip(watches) {
        let watched = watch.await.expect("watch task");
        let node = check_event_log(id, &watched);
        *per_node.entry(node.clone()).or_default() += 1;
        finished.push((id.clone(), node, watched));
    }
    stop.store(true, Ordering::Relaxed);
    sampler.await.expect("sampler");

    let most = most_held.load(Ordering::Relaxed);
    assert!(most >= 1, "the sampler never saw a prompt on a node");
    assert!(
        most <= 2,
        "a node held {most} prompts at once; the slot limit is 2"
    );
    for name in names {
        let done = per_node.get(name).copied().unwrap_or_default();
        assert!(
            (5..=15).contains(&done),
            "node {name} ran {done} of 30 jobs: not a fair share ({per_node:?})"
        );
        let snapshot = fleet.sim(name).snapshot().expect("sim running");
        assert_eq!(
            snapshot.prompts_succeeded as usize, done,
            "node {name}: prompt count"
        );
    }

    // Outputs: what FetchOutput streams is exactly what the producing node serves at /view.
    for (id, node, watched) in finished.iter().take(5) {
        let outputs = watched.outputs();
        assert!(!outputs.is_empty(), "job {id}: no outputs");
        for output in outputs {
            let (header, bytes) = fleet.fetch_output(id, output.index).await.expect("fetch");
            assert_eq!(&header.node, node, "job {id}: bytes from the wrong node");
            assert_eq!(
                header.output.as_ref(),
                Some(output),
                "job {id}: header output"
            );
            let url = format!(
                "{}/view?filename={}&subfolder={}&type={}",
                fleet.sim(node).url(),
                output.filename,
                output.subfolder,
                output.r#type
            );
            let (status, direct) = http_get(&url).await;
            assert_eq!(status, 200, "GET {url}");
            assert!(!direct.is_empty(), "GET {url}: empty");
            assert!(
                bytes == direct,
                "job {id}: FetchOutput bytes differ from {url}"
            );
            if header.size != 0 {
                assert_eq!(
                    header.size as usize,
                    bytes.len(),
                    "job {id}: announced size"
                );
            }
        }
        let missing = fleet.fetch_output(id, outputs.len() as u32).await;
        assert_eq!(
            missing.expect_err("no such output").code(),
            tonic::Code::NotFound
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_and_resuming_watchers_miss_nothing() {
    let fleet = TestFleet::start(vec![sim_config("gpu-a", 0.2)]).await;
    // 60 steps at 0.01 s: long enough to join while it runs.
    let id = fleet
        .submit(&sd15_workflow(60, fresh_seed()))
        .await
        .expect("submit");
    fleet.wait_for_state(&id, pb::JobState::Running).await;

    // A watcher that joins late: the snapshot says running, then everything from the start.
    let late = fleet.watch_to_end(&id).await;
    assert!(
        matches!(
            late.snapshot.state(),
            pb::JobState::Running | pb::JobState::Succeeded
        ),
        "snapshot state {:?}",
        late.snapshot.state()
    );
    check_event_log(&id, &late);
    assert!(
        late.snapshot.last_sequence >= 3,
        "snapshot already saw dispatch and start"
    );

    // Resuming after every possible point yields exactly the rest, in order.
    for after in [
        1,
        late.events.len() as u64 / 2,
        late.events.len() as u64 - 1,
    ] {
        let resumed = fleet.watch_after(&id, after).await;
        assert_eq!(
            resumed.events,
            late.events[after as usize..].to_vec(),
            "resume after {after}"
        );
        assert_eq!(resumed.snapshot.state(), pb::JobState::Succeeded);
    }
    // Resuming after the last event of a finished job: the snapshot and nothing else.
    let done = fleet.watch_after(&id, late.events.len() as u64).await;
    assert!(
        done.events.is_empty(),
        "events after the end: {:?}",
        done.kinds()
    );

    // A live resume: a second job, read part-way by one stream, finished by another.
    let id = fleet
        .submit(&sd15_workflow(60, fresh_seed()))
        .await
        .expect("submit");
    let seen = read_until_progress(&mut fleet.jobs(), &id).await;
    let last = seen.last().expect("some events").sequence;
    let rest = fleet.watch_after(&id, last).await;
    assert_eq!(
        rest.events.first().map(|event| event.sequence),
        Some(last + 1),
        "the resumed stream starts right after {last}"
    );
    let mut whole = seen;
    whole.extend(rest.events.clone());
    check_event_log(
        &id,
        &Watched {
            snapshot: rest.snapshot,
            events: whole,
            gaps: rest.gaps,
        },
    );
    wait_until("nothing in flight", JOB_TIMEOUT, || async {
        fleet.nodes().await.iter().all(|node| node.in_flight == 0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_body_submitted_whole_brings_its_extra_data_to_the_node() {
    let fleet = TestFleet::start(vec![sim_config("gpu-0", 0.0)]).await;
    let graph: serde_json::Value =
        serde_json::from_slice(&sd15_workflow(4, fresh_seed())).expect("JSON");
    let pnginfo = serde_json::json!({"workflow": {"nodes": [], "links": []}});
    let body = serde_json::json!({
        "prompt": graph,
        "client_id": "script-1",
        "extra_data": {"extra_pnginfo": pnginfo}
    });
    let id = fleet
        .submit(&serde_json::to_vec(&body).expect("JSON"))
        .await
        .expect("a /prompt body is accepted as the workflow");
    let item = queued_on_node(&fleet, &id).await;
    assert_eq!(item["prompt"][3]["extra_pnginfo"], pnginfo);

    // The request's own field does the same for a bare graph.
    let id = fleet
        .submit_request(pb::SubmitJobRequest {
            workflow: sd15_workflow(4, fresh_seed()),
            extra_data: serde_json::to_vec(&serde_json::json!({"extra_pnginfo": {"tag": 7}}))
                .expect("JSON"),
            ..pb::SubmitJobRequest::default()
        })
        .await
        .expect("submit");
    let item = queued_on_node(&fleet, &id).await;
    assert_eq!(
        item["prompt"][3]["extra_pnginfo"],
        serde_json::json!({"tag": 7})
    );

    // A wrong shape beside the graph is named.
    let bad = serde_json::json!({"prompt": graph, "extra_data": 5});
    let status = fleet
        .submit(&serde_json::to_vec(&bad).expect("JSON"))
        .await
        .expect_err("extra_data must be an object");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("extra_data"), "{status:?}");
    let status = fleet
        .submit_request(pb::SubmitJobRequest {
            workflow: sd15_workflow(4, fresh_seed()),
            extra_data: b"[1, 2]".to_vec(),
            ..pb::SubmitJobRequest::default()
        })
        .await
        .expect_err("the field must hold an object");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("extra_data"), "{status:?}");
    fleet.shutdown().await;
}

/// Watches a job to its success on the one node `gpu-0` and returns that node's `/history`
/// entry for it, which holds what the node was sent.
async fn queued_on_node(fleet: &TestFleet, id: &str) -> serde_json::Value {
    let watched = fleet.watch_to_end(id).await;
    assert!(
        matches!(watched.terminal(), Some(pb::job_event::Kind::Succeeded(_))),
        "{:?}",
        watched.kinds()
    );
    node_history(fleet.sim("gpu-0"), &dispatched_prompt(&watched))
        .await
        .expect("the node ran the prompt")
}

/// The prompt id of a watched job's last dispatch.
fn dispatched_prompt(watched: &Watched) -> String {
    watched
        .events
        .iter()
        .rev()
        .find_map(|event| match &event.kind {
            Some(pb::job_event::Kind::Dispatched(dispatched)) => Some(dispatched.prompt_id.clone()),
            _ => None,
        })
        .expect("the job was dispatched")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_a_node_shows_comes_back_as_an_output_as_on_the_nodes_history() {
    let fleet = TestFleet::start(vec![sim_config("gpu-a", 0.0)]).await;
    // An image, its size shown as text, and the image saved: one file and one text.
    let workflow = serde_json::json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 96, "height": 64, "batch_size": 1, "color": 9}},
        "2": {"class_type": "GetImageSize", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}},
        "4": {"class_type": "PreviewAny", "inputs": {"source": "a caption"}},
        "5": {"class_type": "SaveImage", "inputs": {"filename_prefix": "sized", "images": ["1", 0]}},
        "6": {"class_type": "PreviewAny", "inputs": {"source": "é".repeat(100 << 10)}}
    });
    let (id, watched) = fleet.run(workflow.to_string().as_bytes()).await;
    watched.assert_succeeded();
    let outputs = watched.outputs();
    let texts: Vec<(&str, &str, u32)> = outputs
        .iter()
        .filter(|o| o.kind == "text" && o.node_id != "6")
        .map(|o| (o.node_id.as_str(), o.text.as_str(), o.index))
        .collect();
    assert_eq!(texts, [("3", "96", 1), ("4", "a caption", 2)]);
    // A long text (200 KiB) travels cut to 64 KiB, on a character boundary, and says so.
    let long = &outputs[3];
    assert_eq!((long.node_id.as_str(), long.index), ("6", 3));
    assert!(long.text_truncated, "the long text is marked as cut");
    assert_eq!(long.text.len(), 64 << 10);
    let (_, whole) = fleet
        .fetch_output(&id, 3)
        .await
        .expect("fetch the long text");
    assert!(
        whole == "é".repeat(100 << 10).into_bytes(),
        "FetchOutput has all of it ({} bytes)",
        whole.len()
    );
    assert_eq!(outputs[0].kind, "images");
    assert!(
        fleet.get(&id).await.outputs == outputs,
        "GetJob lists the same"
    );

    // What the node's own history says those nodes showed.
    let job = fleet.get(&id).await;
    let history = node_history(fleet.sim("gpu-a"), &job.prompt_id)
        .await
        .expect("the node's history entry");
    assert_eq!(history["outputs"]["3"]["text"], serde_json::json!(["96"]));
    assert_eq!(
        history["outputs"]["4"]["text"],
        serde_json::json!(["a caption"])
    );

    // A text output is fetched like a file: its bytes are the text.
    let (header, bytes) = fleet.fetch_output(&id, 2).await.expect("fetch the text");
    assert_eq!(bytes, b"a caption");
    assert_eq!(header.content_type, "text/plain; charset=utf-8");
    assert_eq!(header.size, 9);
    assert_eq!(header.output.as_ref(), Some(&outputs[2]));
    let missing = fleet.fetch_output(&id, 4).await;
    assert_eq!(missing.expect_err("index 4").code(), tonic::Code::NotFound);
    // A listing carries at most 1 KiB of each text.
    let listed = fleet
        .jobs()
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .expect("list")
        .into_inner();
    let ours = listed.jobs.iter().find(|j| j.id == id).expect("listed");
    assert_eq!(ours.outputs[3].text.len(), 1 << 10);
    assert!(ours.outputs[3].text_truncated && !ours.outputs[2].text_truncated);
    fleet.shutdown().await;
}
