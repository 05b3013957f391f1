//! Submissions the coordinator must refuse at the door, with the right gRPC code and a message
//! that names the problem, instead of accepting them and failing later on a node.

mod support;

use comfy_sim::NodeConfig as SimConfig;
use fleet_proto::v1 as pb;
use pb::job_service_client::JobServiceClient;
use serde_json::json;
use tonic::transport::Channel;

/// A workflow every simulated node can run: an image of `color`, saved.
fn image_workflow(color: u32) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": color}},
        "2": {"class_type": "SaveImage", "inputs": {"filename_prefix": "refusals", "images": ["1", 0]}}
    }))
    .expect("JSON")
}

async fn client(fleet: &support::SimFleet) -> JobServiceClient<Channel> {
    JobServiceClient::connect(format!("http://{}", fleet.coordinator.grpc_addr()))
        .await
        .expect("connect")
}

fn request(workflow: Vec<u8>) -> pb::SubmitJobRequest {
    pb::SubmitJobRequest {
        workflow,
        ..Default::default()
    }
}

async fn metrics_text(fleet: &support::SimFleet) -> String {
    reqwest::get(format!("http://{}/metrics", fleet.coordinator.http_addr()))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_idempotency_key_with_another_workflow_is_already_exists() {
    let fleet =
        support::start_sim_fleet(vec![SimConfig::named("gpu-0").with_time_scale(0.0)]).await;
    let mut jobs = client(&fleet).await;

    let mut first = request(image_workflow(1));
    first.idempotency_key = "k1".into();
    let accepted = jobs
        .submit_job(first.clone())
        .await
        .expect("first")
        .into_inner();
    let replay = jobs.submit_job(first).await.expect("replay").into_inner();
    assert!(replay.replayed);
    assert_eq!(replay.job_id, accepted.job_id);

    let mut other = request(image_workflow(2));
    other.idempotency_key = "k1".into();
    let status = jobs.submit_job(other).await.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::AlreadyExists, "{status:?}");
    assert!(
        status.message().contains("idempotency key \"k1\"")
            && status.message().contains(&accepted.job_id),
        "{}",
        status.message()
    );
    let text = metrics_text(&fleet).await;
    assert!(
        text.contains(
            r#"comfyfleet_grpc_requests_total{code="AlreadyExists",method="SubmitJob"} 1"#
        ),
        "{text}"
    );
    fleet.coordinator.shutdown().await;
}
