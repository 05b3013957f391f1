//! A refusal repeats only the start of a long value the caller sent.
//!
//! A status message travels in the `grpc-message` trailer, and HTTP/2 peers cap the size of a
//! header block: a message that repeats a 100,000-character value whole reaches the client as
//! its own RESOURCE_EXHAUSTED ("Stream removed") instead of the coordinator's refusal.

mod support;

use comfy_sim::NodeConfig as SimConfig;
use fleet_proto::v1 as pb;
use pb::fleet_service_client::FleetServiceClient;
use pb::job_service_client::JobServiceClient;
use serde_json::json;
use tonic::transport::Channel;

/// Longer than any header block a peer accepts.
const LONG: usize = 100_000;
/// Characters of a value a message repeats, and the mark that more was cut.
const SHOWN: usize = 64;

/// A workflow every simulated node can run.
fn image_workflow() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 7}},
        "2": {"class_type": "SaveImage", "inputs": {"filename_prefix": "long", "images": ["1", 0]}}
    }))
    .expect("JSON")
}

async fn channel(fleet: &support::SimFleet) -> Channel {
    Channel::from_shared(format!("http://{}", fleet.coordinator.grpc_addr()))
        .expect("uri")
        .connect()
        .await
        .expect("connect")
}

/// The refusal has `code`, repeats `value` cut to its first characters with "…", and is short.
#[track_caller]
fn assert_refused_with_start_of(result: Result<(), tonic::Status>, code: tonic::Code, value: &str) {
    let status = result.expect_err("refused");
    assert_eq!(status.code(), code, "{status:?}");
    let start: String = value.chars().take(SHOWN).collect();
    assert!(
        status.message().contains(&format!("{start}…")),
        "the message repeats the start of the value: {}",
        status.message()
    );
    assert!(
        status.message().len() < 400,
        "the message is short: {} bytes",
        status.message().len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_job_id_is_invalid_argument_in_every_call_that_takes_one() {
    let fleet =
        support::start_sim_fleet(vec![SimConfig::named("gpu-0").with_time_scale(0.0)]).await;
    let mut jobs = JobServiceClient::new(channel(&fleet).await);
    let id = "j".repeat(LONG);
    let code = tonic::Code::InvalidArgument;

    let get = jobs
        .get_job(pb::GetJobRequest { job_id: id.clone() })
        .await
        .map(drop);
    assert_refused_with_start_of(get, code, &id);
    let watch = jobs
        .watch_job(pb::WatchJobRequest {
            job_id: id.clone(),
            ..Default::default()
        })
        .await
        .map(drop);
    assert_refused_with_start_of(watch, code, &id);
    let cancel = jobs
        .cancel_job(pb::CancelJobRequest {
            job_id: id.clone(),
            ..Default::default()
        })
        .await
        .map(drop);
    assert_refused_with_start_of(cancel, code, &id);
    let fetch = jobs
        .fetch_output(pb::FetchOutputRequest {
            job_id: id.clone(),
            ..Default::default()
        })
        .await
        .map(drop);
    assert_refused_with_start_of(fetch, code, &id);
    fleet.coordinator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_names_labels_and_keys_are_refused_naming_their_start() {
    let fleet =
        support::start_sim_fleet(vec![SimConfig::named("gpu-0").with_time_scale(0.0)]).await;
    let mut jobs = JobServiceClient::new(channel(&fleet).await);
    let code = tonic::Code::InvalidArgument;
    let long = |c: char| c.to_string().repeat(LONG);

    let tenant = long('t');
    let refused = jobs
        .submit_job(pb::SubmitJobRequest {
            workflow: image_workflow(),
            tenant: tenant.clone(),
            ..Default::default()
        })
        .await
        .map(drop);
    assert_refused_with_start_of(refused, code, &tenant);

    let key = long('k');
    let refused = jobs
        .submit_job(pb::SubmitJobRequest {
            workflow: image_workflow(),
            idempotency_key: key.clone(),
            ..Default::default()
        })
        .await
        .map(drop);
    assert_refused_with_start_of(refused, code, &key);

    for (key, value) in [
        (long('l'), "a100".to_owned()),
        ("gpu".to_owned(), long('v')),
    ] {
        let refused = jobs
            .submit_job(pb::SubmitJobRequest {
                workflow: image_workflow(),
                required_labels: [(key.clone(), value.clone())].into(),
                ..Default::default()
            })
            .await
            .map(drop);
        let long_one = if key.len() > value.len() {
            &key
        } else {
            &value
        };
        assert_refused_with_start_of(refused, code, long_one);
    }

    // A control character is named with the start of the value, escaped.
    let with_newline = format!("{}\n", "n".repeat(200));
    let status = jobs
        .submit_job(pb::SubmitJobRequest {
            workflow: image_workflow(),
            tenant: with_newline,
            ..Default::default()
        })
        .await
        .expect_err("refused");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains("control characters") && status.message().len() < 400,
        "{}",
        status.message()
    );

    // The workflow's own node ids are the caller's too.
    let node_id = long('w');
    let workflow = serde_json::to_vec(&json!({ node_id.clone(): {"inputs": {}} })).expect("JSON");
    let refused = jobs
        .submit_job(pb::SubmitJobRequest {
            workflow,
            ..Default::default()
        })
        .await
        .map(drop);
    let status = refused.expect_err("refused");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().len() < 4096,
        "the message is bounded: {} bytes",
        status.message().len()
    );

    let token = long('p');
    let refused = jobs
        .list_jobs(pb::ListJobsRequest {
            page_token: token.clone(),
            ..Default::default()
        })
        .await
        .map(drop);
    assert_refused_with_start_of(refused, code, &token);
    fleet.coordinator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_output_or_node_name_is_not_found_naming_its_start() {
    let fleet =
        support::start_sim_fleet(vec![SimConfig::named("gpu-0").with_time_scale(0.0)]).await;
    let channel = channel(&fleet).await;
    let mut jobs = JobServiceClient::new(channel.clone());
    let accepted = jobs
        .submit_job(pb::SubmitJobRequest {
            workflow: image_workflow(),
            ..Default::default()
        })
        .await
        .expect("accepted")
        .into_inner();

    let filename = "f".repeat(LONG);
    let node_id = "9".repeat(LONG);
    let refused = jobs
        .fetch_output(pb::FetchOutputRequest {
            job_id: accepted.job_id,
            selector: Some(pb::fetch_output_request::Selector::ByName(pb::OutputName {
                node_id: node_id.clone(),
                filename: filename.clone(),
            })),
            chunk_size: 0,
        })
        .await
        .map(drop);
    let status = refused.expect_err("refused");
    assert_refused_with_start_of(Err(status.clone()), tonic::Code::NotFound, &filename);
    assert_refused_with_start_of(Err(status), tonic::Code::NotFound, &node_id);

    let name = "n".repeat(LONG);
    let refused = FleetServiceClient::new(channel)
        .drain_node(pb::DrainNodeRequest { name: name.clone() })
        .await
        .map(drop);
    assert_refused_with_start_of(refused, tonic::Code::NotFound, &name);
    fleet.coordinator.shutdown().await;
}
