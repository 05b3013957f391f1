//! Every kind of refused submission is counted in `comfyfleet_jobs_rejected_total`, under its
//! own `reason`.

mod support;

use comfy_sim::NodeConfig as SimConfig;
use fleet_proto::v1 as pb;
use pb::job_service_client::JobServiceClient;
use serde_json::json;

/// A workflow every simulated node can run: an image of `color`, saved.
fn image_workflow(color: u32) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": color}},
        "2": {"class_type": "SaveImage", "inputs": {"filename_prefix": "rejections", "images": ["1", 0]}}
    }))
    .expect("JSON")
}

/// The value of `comfyfleet_jobs_rejected_total{reason}`, 0 when the series is absent.
async fn rejected(fleet: &support::SimFleet, reason: &str) -> u64 {
    let text = reqwest::get(format!("http://{}/metrics", fleet.coordinator.http_addr()))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    let series = format!("comfyfleet_jobs_rejected_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&series))
        .map_or(0, |value| value.parse().expect("a counter value"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_idempotency_key_is_counted_as_a_rejection_of_its_own() {
    let fleet =
        support::start_sim_fleet(vec![SimConfig::named("gpu-0").with_time_scale(0.0)]).await;
    let mut jobs = JobServiceClient::connect(format!("http://{}", fleet.coordinator.grpc_addr()))
        .await
        .expect("connect");
    let submit = |color, key: &str| pb::SubmitJobRequest {
        workflow: image_workflow(color),
        idempotency_key: key.to_owned(),
        ..Default::default()
    };

    jobs.submit_job(submit(1, "k1")).await.expect("first");
    // The same workflow again is a replay, not a refusal.
    let replay = jobs.submit_job(submit(1, "k1")).await.expect("replay");
    assert!(replay.into_inner().replayed);
    assert_eq!(rejected(&fleet, "idempotency_conflict").await, 0);

    for attempt in 1..=2 {
        let status = jobs
            .submit_job(submit(2, "k1"))
            .await
            .expect_err("another workflow under the key is refused");
        assert_eq!(status.code(), tonic::Code::AlreadyExists, "{status:?}");
        assert_eq!(rejected(&fleet, "idempotency_conflict").await, attempt);
    }

    // The other reasons keep their own series.
    let status = jobs
        .submit_job(pb::SubmitJobRequest::default())
        .await
        .expect_err("an empty workflow is refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert_eq!(rejected(&fleet, "invalid").await, 1);
    assert_eq!(rejected(&fleet, "idempotency_conflict").await, 2);
    fleet.coordinator.shutdown().await;
}
