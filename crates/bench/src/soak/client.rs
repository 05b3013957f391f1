//! The client side of the soak: submitting jobs through coordinator restarts and listing them.
//!
//! Every submission carries an idempotency key and is retried while the coordinator is
//! unreachable, so a restart neither loses nor doubles a submission; the [`Ledger`] records
//! what the client saw accepted, which the drain later compares with the coordinator's list.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fleet_proto::v1::job_service_client::JobServiceClient;
use fleet_proto::v1::{JobState, ListJobsRequest, SubmitJobRequest};
use tonic::transport::Channel;

/// What the client knows of its submissions.
#[derive(Debug, Default)]
pub(super) struct Ledger {
    pub(super) accepted: Vec<String>,
    pub(super) refused: HashMap<String, u64>,
    pub(super) submit_retries: u64,
    pub(super) replayed: u64,
}

/// Whether a job has reached its final state.
pub(super) fn is_terminal(state: JobState) -> bool {
    matches!(
        state,
        JobState::Succeeded | JobState::Failed | JobState::Cancelled
    )
}

/// Submits one job, retrying while the coordinator is unreachable; the idempotency key makes a
/// retry after a lost answer return the same job.
pub(super) async fn submit(
    mut client: JobServiceClient<Channel>,
    workflow: Vec<u8>,
    key: String,
    ledger: Arc<Mutex<Ledger>>,
) {
    let give_up = Instant::now() + Duration::from_secs(60);
    loop {
        let request = SubmitJobRequest {
            workflow: workflow.clone(),
            idempotency_key: key.clone(),
            ..SubmitJobRequest::default()
        };
        let answer =
            tokio::time::timeout(Duration::from_secs(10), client.submit_job(request)).await;
        let settled = match &answer {
            Ok(Err(status)) => !transient(status.code()) || Instant::now() >= give_up,
            Err(_) => Instant::now() >= give_up,
            Ok(Ok(_)) => true,
        };
        if !settled {
            ledger
                .lock()
                .unwrap_or_else(|poison| poison.into_inner())
                .submit_retries += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let mut ledger = ledger.lock().unwrap_or_else(|poison| poison.into_inner());
        match answer {
            Ok(Ok(response)) => {
                let response = response.into_inner();
                ledger.replayed += u64::from(response.replayed);
                ledger.accepted.push(response.job_id);
            }
            Ok(Err(status)) => {
                *ledger
                    .refused
                    .entry(format!("{:?}", status.code()))
                    .or_default() += 1;
            }
            Err(_) => *ledger.refused.entry("Timeout".into()).or_default() += 1,
        }
        return;
    }
}

fn transient(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
    )
}

/// Every job the coordinator lists, by id.
pub(super) async fn list_all(
    mut client: JobServiceClient<Channel>,
) -> Result<HashMap<String, fleet_proto::v1::Job>, tonic::Status> {
    let mut jobs = HashMap::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_jobs(ListJobsRequest {
                page_size: 1000,
                page_token,
                ..ListJobsRequest::default()
            })
            .await?
            .into_inner();
        for job in page.jobs {
            jobs.insert(job.id.clone(), job);
        }
        if page.next_page_token.is_empty() {
            return Ok(jobs);
        }
        page_token = page.next_page_token;
    }
}
