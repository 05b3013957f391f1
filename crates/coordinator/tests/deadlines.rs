//! A submission's deadline: values the protobuf types do not allow, a zero or negative
//! `timeout` and a `deadline_at` that has passed are refused with INVALID_ARGUMENT naming the
//! field, before the job takes a place in the queue or on a node.

mod support;

use std::time::{Duration, SystemTime};

use comfy_sim::NodeConfig as SimConfig;
use fleet_proto::v1 as pb;
use pb::job_service_client::JobServiceClient;
use pb::submit_job_request::Deadline;
use prost_types::{Duration as PbDuration, Timestamp};
use serde_json::json;
use tonic::transport::Channel;

/// A workflow every simulated node can run.
fn image_workflow() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 3}},
        "2": {"class_type": "SaveImage", "inputs": {"filename_prefix": "deadlines", "images": ["1", 0]}}
    }))
    .expect("JSON")
}

fn with_deadline(deadline: Deadline) -> pb::SubmitJobRequest {
    pb::SubmitJobRequest {
        workflow: image_workflow(),
        deadline: Some(deadline),
        ..Default::default()
    }
}

fn timeout(seconds: i64, nanos: i32) -> Deadline {
    Deadline::Timeout(PbDuration { seconds, nanos })
}

fn deadline_at(seconds: i64, nanos: i32) -> Deadline {
    Deadline::DeadlineAt(Timestamp { seconds, nanos })
}

fn unix_seconds(at: SystemTime) -> i64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
}

async fn client(fleet: &support::SimFleet) -> JobServiceClient<Channel> {
    JobServiceClient::connect(format!("http://{}", fleet.coordinator.grpc_addr()))
        .await
        .expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_that_are_malformed_zero_or_past_are_invalid_argument_naming_the_field() {
    let fleet =
        support::start_sim_fleet(vec![SimConfig::named("gpu-0").with_time_scale(0.0)]).await;
    let mut jobs = client(&fleet).await;
    let now = unix_seconds(SystemTime::now());

    let refused = [
        (timeout(1, -5), "timeout", "same sign"),
        (timeout(-1, 5), "timeout", "same sign"),
        (timeout(1, 1_000_000_000), "timeout.nanos", "999,999,999"),
        (timeout(0, -1_000_000_000), "timeout.nanos", "999,999,999"),
        (timeout(-1, 0), "timeout", "negative"),
        (timeout(0, -1), "timeout", "negative"),
        (timeout(0, 0), "timeout", "is 0"),
        (timeout(i64::MAX, 0), "timeout.seconds", "at most"),
        (timeout(i64::MIN, 0), "timeout.seconds", "at most"),
        (
            deadline_at(now + 3600, -1),
            "deadline_at.nanos",
            "0 to 999,999,999",
        ),
        (
            deadline_at(now + 3600, 1_000_000_000),
            "deadline_at.nanos",
            "0 to 999,999,999",
        ),
        (deadline_at(i64::MAX, 0), "deadline_at.seconds", "9999"),
        (deadline_at(-5, 0), "deadline_at", "before 1970"),
        (deadline_at(0, 0), "deadline_at", "has passed"),
        (deadline_at(now - 1, 0), "deadline_at", "has passed"),
    ];
    for (deadline, field, why) in refused {
        let status = jobs
            .submit_job(with_deadline(deadline))
            .await
            .expect_err(&format!("{deadline:?} is refused"));
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{deadline:?}: {status:?}"
        );
        assert!(
            status.message().starts_with(field) && status.message().contains(why),
            "{deadline:?}: the message names {field} and says {why:?}: {}",
            status.message()
        );
    }
    // None of them became a job.
    let listed = jobs
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert!(listed.jobs.is_empty(), "{:?}", listed.jobs);
    fleet.coordinator.shutdown().await;
}

/// Reads a job back.
async fn get_job(jobs: &mut JobServiceClient<Channel>, job_id: String) -> pb::Job {
    jobs.get_job(pb::GetJobRequest { job_id })
        .await
        .expect("get")
        .into_inner()
        .job
        .expect("job")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_positive_timeout_and_a_future_deadline_are_kept_on_the_job() {
    let fleet =
        support::start_sim_fleet(vec![SimConfig::named("gpu-0").with_time_scale(0.0)]).await;
    let mut jobs = client(&fleet).await;

    let before = SystemTime::now();
    let accepted = jobs
        .submit_job(with_deadline(timeout(3600, 500_000_000)))
        .await
        .expect("a positive timeout is accepted")
        .into_inner();
    let after = SystemTime::now();
    let job = get_job(&mut jobs, accepted.job_id).await;
    let deadline = job.deadline.expect("a deadline");
    let deadline =
        SystemTime::UNIX_EPOCH + Duration::new(deadline.seconds as u64, deadline.nanos as u32);
    let timeout = Duration::from_millis(3_600_500);
    assert!(
        deadline >= before + timeout && deadline <= after + timeout,
        "the deadline is the timeout after acceptance: {deadline:?}"
    );

    let at = unix_seconds(SystemTime::now()) + 3600;
    let accepted = jobs
        .submit_job(with_deadline(deadline_at(at, 7)))
        .await
        .expect("a future deadline is accepted")
        .into_inner();
    let job = get_job(&mut jobs, accepted.job_id).await;
    assert_eq!(
        job.deadline,
        Some(Timestamp {
            seconds: at,
            nanos: 7
        })
    );
    fleet.coordinator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_that_passes_before_placement_fails_the_job_without_running_it() {
    let fleet =
        support::start_sim_fleet(vec![SimConfig::named("gpu-0").with_time_scale(0.0)]).await;
    let mut jobs = client(&fleet).await;
    // One nanosecond: gone by the time the job is placed, long before the next tick.
    let accepted = jobs
        .submit_job(with_deadline(timeout(0, 1)))
        .await
        .expect("a positive timeout is accepted")
        .into_inner();
    let started = std::time::Instant::now();
    let job = loop {
        let job = get_job(&mut jobs, accepted.job_id.clone()).await;
        if job.state() == pb::JobState::Failed {
            break job;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "job still {:?}",
            job.state()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let failure = job.failure.expect("a failure");
    assert_eq!(
        failure.failure_class(),
        pb::FailureClass::Deadline,
        "{failure:?}"
    );
    assert_eq!(job.attempt, 0, "never dispatched");
    assert_eq!(
        fleet.sims[0].snapshot().expect("sim").prompt_posts,
        0,
        "the node never saw it"
    );
    fleet.coordinator.shutdown().await;
}
