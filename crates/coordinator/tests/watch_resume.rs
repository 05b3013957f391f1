//! Resuming a watch with `after_sequence`: a number beyond the job's last event is refused
//! with OUT_OF_RANGE, and a gap a watcher is told about always runs forwards.

mod support;

use std::time::Duration;

use comfy_sim::NodeConfig as SimConfig;
use fleet_proto::v1 as pb;
use pb::job_service_client::JobServiceClient;
use pb::watch_job_response::Item;
use serde_json::json;
use tonic::transport::Channel;

/// A workflow every simulated node can run.
fn image_workflow() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 5}},
        "2": {"class_type": "SaveImage", "inputs": {"filename_prefix": "watch", "images": ["1", 0]}}
    }))
    .expect("JSON")
}

/// A coordinator in front of one instant simulated node, keeping `log_capacity` events per job.
async fn start(log_capacity: usize) -> support::SimFleet {
    support::start_sim_fleet_with(
        vec![SimConfig::named("gpu-0").with_time_scale(0.0)],
        |config| config.events.log_capacity = log_capacity,
    )
    .await
}

async fn client(coordinator: &coordinator::Coordinator) -> JobServiceClient<Channel> {
    JobServiceClient::connect(format!("http://{}", coordinator.grpc_addr()))
        .await
        .expect("connect")
}

/// Submits the workflow and waits until the job succeeded; returns its id.
async fn finished_job(jobs: &mut JobServiceClient<Channel>) -> String {
    let id = jobs
        .submit_job(pb::SubmitJobRequest {
            workflow: image_workflow(),
            ..Default::default()
        })
        .await
        .expect("accepted")
        .into_inner()
        .job_id;
    let started = std::time::Instant::now();
    loop {
        let job = jobs
            .get_job(pb::GetJobRequest { job_id: id.clone() })
            .await
            .expect("get")
            .into_inner()
            .job
            .expect("job");
        if job.state() == pb::JobState::Succeeded {
            return id;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "job still {:?}",
            job.state()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every item of a watch stream, or the status it was refused with.
async fn watch(
    jobs: &mut JobServiceClient<Channel>,
    job_id: &str,
    after_sequence: u64,
) -> Result<Vec<Item>, tonic::Status> {
    let mut stream = jobs
        .watch_job(pb::WatchJobRequest {
            job_id: job_id.to_owned(),
            after_sequence,
            include_previews: false,
        })
        .await?
        .into_inner();
    let mut items = Vec::new();
    while let Some(message) = stream.message().await? {
        items.push(message.item.expect("an item"));
    }
    Ok(items)
}

fn sequences(items: &[Item]) -> Vec<u64> {
    items
        .iter()
        .filter_map(|item| match item {
            Item::Event(event) => Some(event.sequence),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_sequence_beyond_the_last_event_is_out_of_range_naming_both() {
    let support::SimFleet {
        coordinator,
        sims: _sims,
        data: _data,
    } = start(1024).await;
    let mut jobs = client(&coordinator).await;
    let id = finished_job(&mut jobs).await;

    let all = watch(&mut jobs, &id, 0).await.expect("watch from 0");
    let Some(Item::Snapshot(snapshot)) = all.first() else {
        panic!("the snapshot comes first: {all:?}")
    };
    // The job reads as finished once its end is in memory; the terminal event is appended
    // when the journal has it, so the snapshot may be taken a moment before that event.
    let last = *sequences(&all).last().expect("events");
    assert!(snapshot.last_sequence <= last, "{all:?}");
    assert!(last >= 3, "queued, dispatched, ..., succeeded: {all:?}");
    assert_eq!(sequences(&all), (1..=last).collect::<Vec<_>>());

    // Resuming at or before the end yields exactly what follows.
    let at_end = watch(&mut jobs, &id, last)
        .await
        .expect("watch from the end");
    assert!(
        matches!(at_end.as_slice(), [Item::Snapshot(_)]),
        "{at_end:?}"
    );
    let before_end = watch(&mut jobs, &id, last - 1).await.expect("watch");
    assert_eq!(sequences(&before_end), vec![last]);

    for after in [last + 1, 1_000_000, u64::MAX] {
        let status = watch(&mut jobs, &id, after)
            .await
            .expect_err("ahead of the log");
        assert_eq!(
            status.code(),
            tonic::Code::OutOfRange,
            "{after}: {status:?}"
        );
        assert!(
            status
                .message()
                .contains(&format!("after_sequence {after} "))
                && status.message().contains(&format!("last event {last}")),
            "the message names both numbers: {}",
            status.message()
        );
    }
    coordinator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_behind_the_retained_events_gets_a_forward_gap_then_the_rest() {
    let support::SimFleet {
        coordinator,
        sims: _sims,
        data: _data,
    } = start(2).await;
    let mut jobs = client(&coordinator).await;
    let id = finished_job(&mut jobs).await;

    let items = watch(&mut jobs, &id, 1).await.expect("watch after 1");
    let [
        Item::Snapshot(first),
        Item::Gap(gap),
        Item::Snapshot(_),
        rest @ ..,
    ] = items.as_slice()
    else {
        panic!("snapshot, gap, snapshot, events: {items:?}")
    };
    let last = first.last_sequence;
    assert!(last >= 5, "enough events to evict some: {items:?}");
    assert_eq!(
        (gap.from_sequence, gap.to_sequence),
        (2, last - 2),
        "the gap runs from the event after the cursor to the one before the oldest retained"
    );
    assert_eq!(sequences(rest), vec![last - 1, last]);
    coordinator.shutdown().await;
}
