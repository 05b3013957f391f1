//! Submissions the coordinator must refuse at the door, with the right gRPC code and a message
//! that names the problem, instead of accepting them and failing later on a node.

mod support;

use comfy_sim::NodeConfig as SimConfig;
use fleet_proto::v1 as pb;
use pb::job_service_client::JobServiceClient;
use serde_json::{Value, json};
use tonic::transport::Channel;

/// A workflow every simulated node can run: an image of `color`, saved.
fn image_workflow(color: u32) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": color}},
        "2": {"class_type": "SaveImage", "inputs": {"filename_prefix": "refusals", "images": ["1", 0]}}
    }))
    .expect("JSON")
}

/// One example workflow of the repository, parsed.
fn example(name: &str) -> Value {
    let path = format!("{}/../../examples/{name}", env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    serde_json::from_slice(&bytes).expect("example is JSON")
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_larger_than_every_gpu_is_refused_naming_its_vram_need() {
    let fleet =
        support::start_sim_fleet(vec![SimConfig::named("gpu-0").with_time_scale(0.0)]).await;
    let mut jobs = client(&fleet).await;

    let mut graph = example("sdxl-portrait.json");
    let latent = &mut graph["5"]["inputs"];
    latent["width"] = 8192.into();
    latent["height"] = 8192.into();
    latent["batch_size"] = 64.into();
    let status = jobs
        .submit_job(request(serde_json::to_vec(&graph).expect("JSON")))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().contains("of VRAM but the largest gpu has"),
        "{}",
        status.message()
    );

    // The same workflow at its own size is accepted.
    let graph = example("sdxl-portrait.json");
    jobs.submit_job(request(serde_json::to_vec(&graph).expect("JSON")))
        .await
        .expect("an ordinary SDXL job is accepted");
    fleet.coordinator.shutdown().await;
}

/// `sd15-landscape.json` without its `SaveImage` node.
fn landscape_without_save() -> Value {
    let mut graph = example("sd15-landscape.json");
    let map = graph.as_object_mut().expect("object");
    let save: Vec<String> = map
        .iter()
        .filter(|(_, node)| node["class_type"] == "SaveImage")
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(save.len(), 1, "the example saves one image");
    map.remove(&save[0]);
    graph
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_without_output_node_is_refused_at_submit() {
    let fleet =
        support::start_sim_fleet(vec![SimConfig::named("gpu-0").with_time_scale(0.0)]).await;
    let mut jobs = client(&fleet).await;
    let graph = landscape_without_save();

    let status = jobs
        .submit_job(request(serde_json::to_vec(&graph).expect("JSON")))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("no output node"),
        "{}",
        status.message()
    );

    // The ComfyUI-compatible API answers exactly as ComfyUI does.
    let captured: Value = serde_json::from_slice(
        &std::fs::read(
            support::shared_dir().join("comfyui-captures/http_post_prompt_no_output_node.json"),
        )
        .expect("capture"),
    )
    .expect("capture is JSON");
    let response = reqwest::Client::new()
        .post(format!("http://{}/prompt", fleet.coordinator.http_addr()))
        .header("content-type", "application/json")
        .body(json!({ "prompt": graph }).to_string())
        .send()
        .await
        .expect("POST /prompt");
    assert_eq!(response.status().as_u16(), captured["status"]);
    let body: Value =
        serde_json::from_slice(&response.bytes().await.expect("body")).expect("JSON body");
    assert_eq!(body, captured["body"]);
    fleet.coordinator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blank_tenants_and_two_graphs_are_refused_and_an_upper_case_job_id_is_found() {
    let fleet =
        support::start_sim_fleet(vec![SimConfig::named("gpu-0").with_time_scale(0.0)]).await;
    let mut jobs = client(&fleet).await;
    for tenant in ["  ", "team-a ", "\u{a0}team-a"] {
        let mut blank = request(image_workflow(3));
        blank.tenant = tenant.into();
        let status = jobs.submit_job(blank).await.expect_err("refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().contains("whitespace"),
            "{}",
            status.message()
        );
    }

    let graph = |color| serde_json::from_slice::<Value>(&image_workflow(color)).expect("JSON");
    let both = json!({"prompt": graph(4), "workflow": graph(5)});
    let status = jobs
        .submit_job(request(serde_json::to_vec(&both).expect("JSON")))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("send one of them"),
        "{}",
        status.message()
    );

    // Targets that name no output node leave nothing to run: refused at once, as the HTTP
    // facade does; a target that is the graph's output is fine.
    for targets in [json!(["nope"]), json!(["1"])] {
        let body = json!({"prompt": graph(7), "partial_execution_targets": targets});
        let status = jobs
            .submit_job(request(serde_json::to_vec(&body).expect("JSON")))
            .await
            .expect_err("refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().contains("name no output node"),
            "{}",
            status.message()
        );
    }
    let body = json!({"prompt": graph(8), "partial_execution_targets": ["2"]});
    jobs.submit_job(request(serde_json::to_vec(&body).expect("JSON")))
        .await
        .expect("a target that saves the image");

    let id = jobs
        .submit_job(request(image_workflow(6)))
        .await
        .expect("accepted")
        .into_inner()
        .job_id;
    let found = jobs
        .get_job(pb::GetJobRequest {
            job_id: id.to_uppercase(),
        })
        .await
        .expect("the same job in upper case")
        .into_inner()
        .job
        .expect("job");
    assert_eq!(found.id, id, "answered in the canonical spelling");
    let status = jobs
        .get_job(pb::GetJobRequest {
            job_id: id.replace('-', ""),
        })
        .await
        .expect_err("refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("8-4-4-4-12"),
        "{}",
        status.message()
    );
}
