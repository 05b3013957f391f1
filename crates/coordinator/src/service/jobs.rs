//! `JobService`: submit, watch, get, list, cancel, fetch output.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use comfy_api::{FileRef, ViewRequest};
use fleet_proto::v1 as pb;
use fleet_proto::v1::job_service_server::JobService;
use futures_util::{Stream, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::{Instrument, info, info_span};

use super::{MESSAGE_CHARS, clip, convert, echo, status_of};
use crate::analysis;
use crate::events::{EventHub, EventLogError, WatchFrom, WatchItem};
use crate::fleet::Fleet;
use crate::job::{Job, JobId, JobSpec, Labels, PromptExtras};
use crate::journal::{JobStore, ListQuery};
use crate::manager::{AdmissionError, CancelOutcome, ManagerHandle};
use crate::metrics::Metrics;

/// Limits applied at submit.
#[derive(Debug, Clone)]
pub struct SubmitLimits {
    /// Largest workflow in bytes. Default 8 MiB.
    pub max_workflow_bytes: usize,
    /// Most graph nodes in one workflow. Default 10,000.
    pub max_nodes: usize,
}

impl Default for SubmitLimits {
    fn default() -> Self {
        Self {
            max_workflow_bytes: 8 << 20,
            max_nodes: 10_000,
        }
    }
}

/// RESOURCE_EXHAUSTED naming the limit, with a `retry-after` header in whole seconds.
fn refused(error: &AdmissionError) -> Status {
    let mut status = Status::resource_exhausted(error.to_string());
    let seconds = error.retry_after().as_secs().max(1).to_string();
    if let Ok(value) = seconds.parse() {
        status.metadata_mut().insert("retry-after", value);
    }
    status
}

/// Largest tenant name, labels and idempotency keys, in bytes.
const MAX_NAME_BYTES: usize = 256;
/// Chunk size of `FetchOutput` when the caller asks for none.
const DEFAULT_CHUNK: usize = 64 << 10;
/// Largest chunk a caller may ask for.
const MAX_CHUNK: usize = 1 << 20;

/// The job service.
#[derive(Clone)]
pub struct JobApi {
    store: Arc<dyn JobStore>,
    hub: Arc<EventHub>,
    fleet: Arc<Fleet>,
    manager: ManagerHandle,
    metrics: Metrics,
    limits: SubmitLimits,
    inventory: Arc<InventoryViews>,
    /// Turns true when the coordinator stops; open watch streams then end with `UNAVAILABLE`
    /// so that callers resume elsewhere (or after the restart) instead of seeing a reset.
    stopping: watch::Receiver<bool>,
}

/// How long [`InventoryViews`] reuses node views whose inventory looks unchanged.
const INVENTORY_VIEWS_TTL: Duration = Duration::from_secs(1);

/// Node views for the feasibility check at submit, reused across submissions.
///
/// Reading a node's view copies its whole class and model inventory; doing that for every
/// node on every submission was a large share of the coordinator's work under load. Whether a
/// job could ever run depends only on what the nodes have installed, their labels and VRAM,
/// which change rarely, so the views are kept while the member list and each node's inventory
/// sizes stay the same, for at most [`INVENTORY_VIEWS_TTL`]. Refusals are confirmed on fresh
/// views, so staleness can only let through a job that placement later finds infeasible (the
/// job then fails as such, as when a node loses a model after a job was accepted).
#[derive(Default)]
struct InventoryViews {
    cached: std::sync::Mutex<Option<CachedViews>>,
}

struct CachedViews {
    read_at: Instant,
    /// Holds the nodes alive, so no other node can reuse an address in `fingerprint`.
    _members: crate::fleet::FleetSnapshot,
    fingerprint: Vec<InventoryPrint>,
    views: Arc<Vec<scheduler::NodeView>>,
}

/// What the feasibility check reads of one node, reduced to sizes; compared without copying.
#[derive(PartialEq)]
struct InventoryPrint {
    /// The node's address: the same node, not just one of the same name.
    node: usize,
    classes: Option<usize>,
    model_folders: usize,
    model_files: usize,
    vram_total: u64,
    cpu_only: bool,
}

impl InventoryViews {
    fn views(&self, fleet: &Fleet) -> Arc<Vec<scheduler::NodeView>> {
        let nodes = fleet.nodes();
        let fingerprint: Vec<InventoryPrint> = nodes
            .iter()
            .map(|node| {
                let status = node.status();
                InventoryPrint {
                    node: Arc::as_ptr(node) as usize,
                    classes: status.classes.as_ref().map(|classes| classes.len()),
                    model_folders: status.models.len(),
                    model_files: status.models.values().map(|files| files.len()).sum(),
                    vram_total: status.vram_total,
                    cpu_only: status.cpu_only,
                }
            })
            .collect();
        let mut cached = self
            .cached
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(entry) = cached.as_ref()
            && entry.fingerprint == fingerprint
            && entry.read_at.elapsed() < INVENTORY_VIEWS_TTL
        {
            return Arc::clone(&entry.views);
        }
        let views = Arc::new(nodes.iter().map(|node| node.view()).collect::<Vec<_>>());
        *cached = Some(CachedViews {
            read_at: Instant::now(),
            _members: nodes.clone(),
            fingerprint,
            views: Arc::clone(&views),
        });
        views
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Resolves once `stopping` turns true; never, if its sender is gone without saying so.
async fn stopped(stopping: &mut watch::Receiver<bool>) {
    if stopping.wait_for(|stopping| *stopping).await.is_err() {
        std::future::pending::<()>().await;
    }
}

impl JobApi {
    /// Creates the service.
    pub fn new(
        store: Arc<dyn JobStore>,
        hub: Arc<EventHub>,
        fleet: Arc<Fleet>,
        manager: ManagerHandle,
        metrics: Metrics,
        limits: SubmitLimits,
        stopping: watch::Receiver<bool>,
    ) -> Self {
        Self {
            store,
            hub,
            fleet,
            manager,
            metrics,
            limits,
            inventory: Arc::default(),
            stopping,
        }
    }

    fn observe<T>(&self, method: &str, started: Instant, result: &Result<T, Status>) {
        super::observe(&self.metrics, method, started, result);
    }

    async fn submit(&self, request: pb::SubmitJobRequest) -> Result<pb::SubmitJobResponse, Status> {
        let spec = self.check_submit(request)?;
        let job = Job::new(spec, SystemTime::now());
        let span = info_span!("job", job_id = %job.id, tenant = %job.spec.tenant);
        async {
            // Refused before anything is written; the permit holds a place in the queue
            // until the manager has queued the job (or the submission fails).
            let _permit = self.manager.admit(&job.spec.tenant).map_err(|error| {
                info!(%error, "submission refused: queue full");
                refused(&error)
            })?;
            // Durable before we answer: from here on the job cannot be lost.
            let inserted = self.store.insert(job).await.map_err(status_of)?;
            let job = inserted.job;
            if !inserted.created {
                info!("idempotency key seen before; returning the first job");
                return Ok(pb::SubmitJobResponse {
                    job_id: job.id.to_string(),
                    queue_position: 0,
                    replayed: true,
                    state: convert::state(job.state()) as i32,
                });
            }
            let id = job.id;
            let position = self.manager.enqueue(job).await.map_err(status_of)?;
            self.metrics.jobs_submitted.inc();
            info!(queue_position = position, "job accepted");
            Ok(pb::SubmitJobResponse {
                job_id: id.to_string(),
                queue_position: position as u32,
                replayed: false,
                state: pb::JobState::Queued as i32,
            })
        }
        .instrument(span)
        .await
    }

    /// Checks a submission and builds its spec; every refusal names what is wrong.
    fn check_submit(&self, request: pb::SubmitJobRequest) -> Result<JobSpec, Status> {
        if request.workflow.is_empty() {
            return Err(Status::invalid_argument(
                "workflow is empty: send API-format workflow JSON",
            ));
        }
        if request.workflow.len() > self.limits.max_workflow_bytes {
            return Err(Status::invalid_argument(format!(
                "workflow is {} bytes; the limit is {} bytes",
                request.workflow.len(),
                self.limits.max_workflow_bytes
            )));
        }
        let tenant = if request.tenant.is_empty() {
            "default".to_owned()
        } else {
            request.tenant
        };
        check_name("tenant", &tenant)?;
        // Tenants are accounted and listed by exact name: "  " or "team-a " would be a
        // tenant of their own that nobody means.
        if tenant.trim() != tenant {
            return Err(Status::invalid_argument(format!(
                "tenant {:?} starts or ends with whitespace{}",
                echo(&tenant),
                if tenant.trim().is_empty() {
                    "; leave it empty for \"default\""
                } else {
                    ""
                }
            )));
        }
        check_name("idempotency_key", &request.idempotency_key)?;
        let mut labels = Labels::new();
        for (key, value) in request.required_labels {
            if key.is_empty() {
                return Err(Status::invalid_argument(
                    "required_labels: a label key is empty",
                ));
            }
            check_name("label key", &key)?;
            check_name("label value", &value)?;
            labels.insert(key, value);
        }

        let bytes = Bytes::from(request.workflow);
        // The analysis names the workflow's node ids, which are the caller's and may be long.
        let analysed = analysis::analyse(&bytes).map_err(|error| {
            Status::invalid_argument(format!(
                "workflow refused: {}",
                clip(&error.to_string(), MESSAGE_CHARS)
            ))
        })?;
        if analysed.num_nodes > self.limits.max_nodes {
            return Err(Status::invalid_argument(format!(
                "workflow has {} nodes; the limit is {}",
                analysed.num_nodes, self.limits.max_nodes
            )));
        }

        // A whole `/prompt` body sent as the workflow brings what ComfyUI would have taken
        // from beside the graph.
        let extras = match analysed.envelope {
            Some(comfy_api::Envelope::PromptBody) => {
                let fields = fields_beside_graph(&bytes).map_err(|error| {
                    Status::invalid_argument(format!("workflow refused: {error}"))
                })?;
                PromptExtras::from_prompt_body(&fields, bytes.len()).map_err(|error| {
                    Status::invalid_argument(format!("workflow refused: {error}"))
                })?
            }
            _ => None,
        };
        let extras =
            with_extra_data_field(extras, &request.extra_data, self.limits.max_workflow_bytes)?;
        // Refused here as the HTTP facade refuses it, rather than failing on a node later.
        if let Some(targets) = extras
            .as_ref()
            .and_then(|extras| extras.partial_execution_targets.as_ref())
            && crate::analysis::targets_leave_no_output(&analysed.forward, targets)
        {
            return Err(Status::invalid_argument(format!(
                "partial_execution_targets {:?} name no output node of the workflow, so \
                 nothing would run",
                echo(&targets.join(", "))
            )));
        }

        let mut spec = JobSpec::new(analysed.forward, tenant);
        spec.extras = extras.map(Arc::new);
        spec.priority = request.priority;
        spec.required_labels = labels;
        spec.idempotency_key =
            (!request.idempotency_key.is_empty()).then_some(request.idempotency_key);
        spec.analysis = analysed.analysis;
        spec.deadline = deadline_of(request.deadline, SystemTime::now())?;

        // A job that no node of the fleet could ever run is refused now rather than queued
        // forever; one that only nodes now down could run waits for them.
        let probe_job = Job::new(spec.clone(), SystemTime::now());
        let view = analysis::job_view(&probe_job, 0);
        let cached = self.inventory.views(&self.fleet);
        let infeasible = match scheduler::feasibility(&view, &cached) {
            // Only a refusal must be exact: confirm it on views read now.
            scheduler::Feasibility::Infeasible(_) => {
                let nodes: Vec<_> = self.fleet.nodes().iter().map(|node| node.view()).collect();
                match scheduler::feasibility(&view, &nodes) {
                    scheduler::Feasibility::Infeasible(why) => Some(why),
                    _ => None,
                }
            }
            _ => None,
        };
        if let Some(why) = infeasible {
            // It names the classes, models and labels the workflow asked for.
            let message = why
                .to_string()
                .replacen(&format!("job {}: ", probe_job.id), "", 1);
            return Err(Status::failed_precondition(clip(&message, MESSAGE_CHARS)));
        }
        Ok(spec)
    }

    async fn snapshot(&self, id: JobId) -> Result<pb::Job, Status> {
        let last_sequence = self
            .hub
            .get(id)
            .map(|log| log.last_sequence())
            .unwrap_or_default();
        if let Some(live) = self.manager.get(id).await.map_err(status_of)? {
            return Ok(convert::job(
                &live.job,
                live.queue_position,
                last_sequence,
                convert::INLINE_TEXT_BYTES,
            ));
        }
        match self.store.get(id).await.map_err(status_of)? {
            Some(job) => Ok(convert::job(
                &job,
                None,
                last_sequence,
                convert::INLINE_TEXT_BYTES,
            )),
            None => Err(Status::not_found(format!("job {id} does not exist"))),
        }
    }
}

/// Largest `google.protobuf.Duration` seconds either way (10,000 years), as the type defines.
const MAX_DURATION_SECONDS: u64 = 315_576_000_000;
/// Latest `google.protobuf.Timestamp` seconds the type allows: 9999-12-31T23:59:59Z.
const MAX_TIMESTAMP_SECONDS: i64 = 253_402_300_799;
/// Nanoseconds in a second.
const NANOS_PER_SECOND: i32 = 1_000_000_000;

/// The job's deadline from a submission's `deadline_at` or `timeout`, given the time `now`.
///
/// Values the protobuf types do not allow (nanos out of range, a duration whose seconds and
/// nanos have different signs) are refused with INVALID_ARGUMENT naming the field, as are a
/// negative or zero `timeout` and a `deadline_at` not after `now`: such a job could only use a
/// place in the queue or on a node before failing as past its deadline. INVALID_ARGUMENT
/// rather than DEADLINE_EXCEEDED because the same request will never succeed, and because
/// DEADLINE_EXCEEDED on SubmitJob reads as "the call timed out, the job may exist", which
/// callers retry. An unset `deadline` is the way to ask for none.
fn deadline_of(
    deadline: Option<pb::submit_job_request::Deadline>,
    now: SystemTime,
) -> Result<Option<SystemTime>, Status> {
    use pb::submit_job_request::Deadline;
    let invalid = |message: String| Err(Status::invalid_argument(message));
    match deadline {
        None => Ok(None),
        Some(Deadline::DeadlineAt(at)) => {
            if !(0..NANOS_PER_SECOND).contains(&at.nanos) {
                return invalid(format!(
                    "deadline_at.nanos is {}; a Timestamp's nanos are 0 to 999,999,999",
                    at.nanos
                ));
            }
            if at.seconds > MAX_TIMESTAMP_SECONDS {
                return invalid(format!(
                    "deadline_at.seconds is {}; a Timestamp ends at {MAX_TIMESTAMP_SECONDS} \
                     (9999-12-31T23:59:59Z)",
                    at.seconds
                ));
            }
            let Ok(seconds) = u64::try_from(at.seconds) else {
                return invalid(format!(
                    "deadline_at is before 1970 (seconds {}): it has passed; leave the \
                     deadline unset for none",
                    at.seconds
                ));
            };
            // In range by the checks above, so neither conversion nor addition can fail.
            let deadline = SystemTime::UNIX_EPOCH + Duration::new(seconds, at.nanos as u32);
            match deadline.duration_since(now) {
                Ok(ahead) if !ahead.is_zero() => Ok(Some(deadline)),
                _ => invalid(format!(
                    "deadline_at {} has passed (it is now {}); leave the deadline unset for none",
                    humantime::format_rfc3339_nanos(deadline),
                    humantime::format_rfc3339_millis(now)
                )),
            }
        }
        Some(Deadline::Timeout(timeout)) => {
            let (seconds, nanos) = (timeout.seconds, timeout.nanos);
            if nanos <= -NANOS_PER_SECOND || nanos >= NANOS_PER_SECOND {
                return invalid(format!(
                    "timeout.nanos is {nanos}; a Duration's nanos are -999,999,999 to \
                     999,999,999"
                ));
            }
            if (seconds > 0 && nanos < 0) || (seconds < 0 && nanos > 0) {
                return invalid(format!(
                    "timeout has seconds {seconds} and nanos {nanos}: a Duration's seconds and \
                     nanos must have the same sign"
                ));
            }
            if seconds.unsigned_abs() > MAX_DURATION_SECONDS {
                return invalid(format!(
                    "timeout.seconds is {seconds}; a Duration is at most \
                     {MAX_DURATION_SECONDS} seconds either way"
                ));
            }
            if seconds < 0 || nanos < 0 {
                return invalid(format!(
                    "timeout is negative (seconds {seconds}, nanos {nanos}); leave the deadline \
                     unset for none"
                ));
            }
            if seconds == 0 && nanos == 0 {
                return invalid(
                    "timeout is 0: the job would be past its deadline when accepted; leave \
                     the deadline unset for none"
                        .to_owned(),
                );
            }
            let timeout = Duration::new(seconds as u64, nanos as u32);
            match now.checked_add(timeout) {
                Some(deadline) => Ok(Some(deadline)),
                None => invalid(format!(
                    "timeout of {seconds} s ends beyond the times this system can represent"
                )),
            }
        }
    }
}

/// Refuses a name, key or label over [`MAX_NAME_BYTES`] or with control characters, naming
/// `what` and the start of the value.
fn check_name(what: &str, value: &str) -> Result<(), Status> {
    if value.len() > MAX_NAME_BYTES {
        return Err(Status::invalid_argument(format!(
            "{what} {:?} is {} bytes; the limit is {MAX_NAME_BYTES} bytes",
            echo(value),
            value.len()
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(Status::invalid_argument(format!(
            "{what} {:?} contains control characters",
            echo(value)
        )));
    }
    Ok(())
}

fn parse_job_id(text: &str) -> Result<JobId, Status> {
    text.parse::<JobId>().map_err(|_| {
        Status::invalid_argument(format!(
            "job_id {:?} is not a job id (a UUID written 8-4-4-4-12 with hyphens)",
            echo(text)
        ))
    })
}

#[tonic::async_trait]
impl JobService for JobApi {
    async fn submit_job(
        &self,
        request: Request<pb::SubmitJobRequest>,
    ) -> Result<Response<pb::SubmitJobResponse>, Status> {
        let started = Instant::now();
        let result = self.submit(request.into_inner()).await;
        self.observe("SubmitJob", started, &result);
        if let Err(status) = &result {
            // Refusals of the submission itself; an internal or shutdown error is not one.
            let reason = match status.code() {
                tonic::Code::InvalidArgument => Some("invalid"),
                tonic::Code::FailedPrecondition => Some("infeasible"),
                tonic::Code::ResourceExhausted => Some("queue_full"),
                tonic::Code::AlreadyExists => Some("idempotency_conflict"),
                _ => None,
            };
            if let Some(reason) = reason {
                self.metrics
                    .jobs_rejected
                    .with_label_values(&[reason])
                    .inc();
            }
        }
        result.map(Response::new)
    }

    type WatchJobStream = BoxStream<pb::WatchJobResponse>;

    async fn watch_job(
        &self,
        request: Request<pb::WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let started = Instant::now();
        let request = request.into_inner();
        let result = async {
            let id = parse_job_id(&request.job_id)?;
            let snapshot = self.snapshot(id).await?;
            // Without a log the job's events are no longer held (it ended long enough ago):
            // the snapshot is all there is to send.
            let watcher = match self.hub.get(id) {
                Some(log) => Some(
                    log.watch(
                        WatchFrom::After(request.after_sequence),
                        request.include_previews,
                    )
                    .map_err(|error| match error {
                        EventLogError::AheadOfLog { after, last, .. } => {
                            Status::out_of_range(format!(
                                "after_sequence {after} is beyond job {id}'s last event {last}: \
                                 pass the last sequence read, or 0 to read every event the \
                                 coordinator holds"
                            ))
                        }
                        other => Status::resource_exhausted(other.to_string()),
                    })?,
                ),
                None => None,
            };
            Ok((id, snapshot, watcher))
        }
        .await;
        self.observe("WatchJob", started, &result);
        let (id, snapshot, watcher) = result?;

        let (tx, rx) = mpsc::channel(64);
        let api = self.clone();
        let metrics = self.metrics.clone();
        metrics.relay_watchers.inc();
        tokio::spawn(async move {
            let send = |item| pb::WatchJobResponse { item: Some(item) };
            if tx
                .send(Ok(send(pb::watch_job_response::Item::Snapshot(snapshot))))
                .await
                .is_err()
            {
                metrics.relay_watchers.dec();
                return;
            }
            if let Some(mut watcher) = watcher {
                let mut stopping = api.stopping.clone();
                loop {
                    let item = tokio::select! {
                        item = watcher.next() => item,
                        () = stopped(&mut stopping) => {
                            let _ = tx.send(Err(Status::unavailable(format!(
                                "the coordinator is stopping: watch job {id} again, with \
                                 after_sequence set to the last sequence read, to resume"
                            )))).await;
                            break;
                        }
                    };
                    let Some(item) = item else { break };
                    let message = match item {
                        Ok(WatchItem::Event(event)) => send(pb::watch_job_response::Item::Event(
                            convert::event(event.sequence, event.at, &event.event),
                        )),
                        Ok(WatchItem::Preview(event)) => send(pb::watch_job_response::Item::Event(
                            convert::event(0, SystemTime::now(), &event),
                        )),
                        Err(lagged) => {
                            // Events were evicted before this watcher read them: say so, and
                            // send the current state so the caller stays consistent.
                            let gap = pb::EventGap {
                                from_sequence: lagged.first_missing(),
                                to_sequence: lagged.last_missing(),
                            };
                            if tx
                                .send(Ok(send(pb::watch_job_response::Item::Gap(gap))))
                                .await
                                .is_err()
                            {
                                break;
                            }
                            match api.snapshot(id).await {
                                Ok(job) => send(pb::watch_job_response::Item::Snapshot(job)),
                                Err(status) => {
                                    let _ = tx.send(Err(status)).await;
                                    break;
                                }
                            }
                        }
                    };
                    if tx.send(Ok(message)).await.is_err() {
                        break;
                    }
                }
            }
            metrics.relay_watchers.dec();
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::GetJobResponse>, Status> {
        let started = Instant::now();
        let result = async {
            let id = parse_job_id(&request.get_ref().job_id)?;
            Ok(pb::GetJobResponse {
                job: Some(self.snapshot(id).await?),
            })
        }
        .await;
        self.observe("GetJob", started, &result);
        result.map(Response::new)
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let started = Instant::now();
        let request = request.into_inner();
        let result = async {
            let mut states = Vec::new();
            for state in &request.states {
                let state = pb::JobState::try_from(*state).map_err(|_| {
                    Status::invalid_argument(format!("states: {state} is not a job state"))
                })?;
                states.extend(convert::state_from(state));
            }
            let query = ListQuery {
                states,
                tenant: (!request.tenant.is_empty()).then_some(request.tenant),
                page_size: request.page_size,
                page_token: (!request.page_token.is_empty()).then_some(request.page_token),
                with_workflow: false,
            };
            let page = self.store.list(query).await.map_err(|error| match error {
                crate::journal::JournalError::BadPageToken(token) => {
                    Status::invalid_argument(format!(
                        "page_token {:?} was not issued for this listing",
                        echo(&token)
                    ))
                }
                other => status_of(other),
            })?;
            let mut jobs = Vec::with_capacity(page.jobs.len());
            for job in &page.jobs {
                // The journal does not know queue positions; the manager does, for the
                // queued jobs of this page.
                let position = if job.state() == crate::job::JobState::Queued {
                    self.manager
                        .get(job.id)
                        .await
                        .map_err(status_of)?
                        .and_then(|live| live.queue_position)
                } else {
                    None
                };
                jobs.push(convert::job(job, position, 0, convert::LISTED_TEXT_BYTES));
            }
            Ok(pb::ListJobsResponse {
                jobs,
                next_page_token: page.next_page_token.unwrap_or_default(),
            })
        }
        .await;
        self.observe("ListJobs", started, &result);
        result.map(Response::new)
    }

    async fn cancel_job(
        &self,
        request: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::CancelJobResponse>, Status> {
        let started = Instant::now();
        let request = request.into_inner();
        let result = async {
            let id = parse_job_id(&request.job_id)?;
            let reason = if request.reason.is_empty() {
                "cancelled by the caller".to_owned()
            } else {
                request.reason
            };
            check_name("reason", &reason)?;
            let outcome = match self.manager.cancel(id, reason).await {
                Ok(outcome) => outcome,
                Err(crate::manager::ManagerError::NotLive(_)) => {
                    match self.store.get(id).await.map_err(status_of)? {
                        Some(_) => CancelOutcome::AlreadyTerminal,
                        None => return Err(Status::not_found(format!("job {id} does not exist"))),
                    }
                }
                Err(error) => return Err(status_of(error)),
            };
            let outcome = match outcome {
                CancelOutcome::RemovedFromQueue => pb::CancelOutcome::RemovedFromQueue,
                CancelOutcome::DeletedFromNodeQueue => pb::CancelOutcome::DeletedFromNodeQueue,
                CancelOutcome::Interrupted => pb::CancelOutcome::Interrupted,
                CancelOutcome::AlreadyTerminal => pb::CancelOutcome::AlreadyTerminal,
            };
            Ok(pb::CancelJobResponse {
                outcome: outcome as i32,
                job: Some(self.snapshot(id).await?),
            })
        }
        .await;
        self.observe("CancelJob", started, &result);
        result.map(Response::new)
    }

    type FetchOutputStream = BoxStream<pb::FetchOutputResponse>;

    async fn fetch_output(
        &self,
        request: Request<pb::FetchOutputRequest>,
    ) -> Result<Response<Self::FetchOutputStream>, Status> {
        let started = Instant::now();
        let request = request.into_inner();
        let result = self.open_output(request).await;
        self.observe("FetchOutput", started, &result);
        result.map(Response::new)
    }
}

impl JobApi {
    async fn open_output(
        &self,
        request: pb::FetchOutputRequest,
    ) -> Result<BoxStream<pb::FetchOutputResponse>, Status> {
        let id = parse_job_id(&request.job_id)?;
        let job = match self.manager.get(id).await.map_err(status_of)? {
            Some(live) => live.job,
            None => self
                .store
                .get(id)
                .await
                .map_err(status_of)?
                .ok_or_else(|| Status::not_found(format!("job {id} does not exist")))?,
        };
        let outputs = &job.progress.outputs;
        // Only outputs the job recorded can be fetched; a caller never names a path.
        let index = match request.selector {
            Some(pb::fetch_output_request::Selector::OutputIndex(index)) => index as usize,
            Some(pb::fetch_output_request::Selector::ByName(name)) => outputs
                .iter()
                .position(|o| o.node_id == name.node_id && o.filename == name.filename)
                .ok_or_else(|| {
                    Status::not_found(format!(
                        "job {id} has no output {:?} from node {:?}",
                        echo(&name.filename),
                        echo(&name.node_id)
                    ))
                })?,
            None => 0,
        };
        let chunk = match request.chunk_size as usize {
            0 => DEFAULT_CHUNK,
            size => size.min(MAX_CHUNK),
        };
        // Past the files come the texts, which the coordinator keeps: their bytes are the text
        // itself, with no node to ask. The list is only built for such an index.
        if index >= outputs.len() {
            let mut listed = convert::outputs(outputs, &job.progress.ui_values, usize::MAX);
            if index >= listed.len() {
                return Err(if listed.is_empty() {
                    Status::failed_precondition(format!(
                        "job {id} has no outputs (state {})",
                        job.state().as_str()
                    ))
                } else {
                    // The contract answers NOT_FOUND for an output the job did not record,
                    // whichever selector named it.
                    Status::not_found(format!(
                        "job {id} has {} outputs; index {index} does not exist",
                        listed.len()
                    ))
                });
            }
            let text = listed.swap_remove(index);
            let bytes = text.text.as_bytes().to_vec();
            let header = pb::OutputHeader {
                content_type: "text/plain; charset=utf-8".to_owned(),
                size: bytes.len() as u64,
                node: job.progress.node.clone().unwrap_or_default(),
                output: Some(text),
            };
            let items: Vec<Result<pb::FetchOutputResponse, Status>> =
                std::iter::once(pb::fetch_output_response::Item::Header(header))
                    .chain(
                        bytes
                            .chunks(chunk)
                            .map(|part| pb::fetch_output_response::Item::Chunk(part.to_vec())),
                    )
                    .map(|item| Ok(pb::FetchOutputResponse { item: Some(item) }))
                    .collect();
            return Ok(Box::pin(futures_util::stream::iter(items)));
        }
        let output = outputs[index].clone();
        let node = self.fleet.get(&output.held_by).ok_or_else(|| {
            Status::unavailable(format!(
                "node {} that holds the output is no longer in the fleet",
                output.held_by
            ))
        })?;
        let file = FileRef {
            filename: output.filename.clone(),
            subfolder: output.subfolder.clone(),
            file_type: output.folder_type.clone(),
            extra: Default::default(),
        };
        let response = node
            .client
            .view(&ViewRequest::from_file(&file))
            .await
            .map_err(|error| {
                Status::unavailable(format!(
                    "cannot read output {} from node {}: {error}",
                    output.filename, node.spec.name
                ))
            })?;
        let header = pb::OutputHeader {
            output: Some(convert::output(index, &output)),
            content_type: response
                .content_type
                .clone()
                .unwrap_or_else(|| "application/octet-stream".into()),
            size: response.content_length.unwrap_or_default(),
            node: node.spec.name.clone(),
        };
        let first = futures_util::stream::once(async move {
            Ok(pb::FetchOutputResponse {
                item: Some(pb::fetch_output_response::Item::Header(header)),
            })
        });
        let body = response.body.flat_map(move |piece| {
            let items: Vec<Result<pb::FetchOutputResponse, Status>> = match piece {
                Ok(bytes) => bytes
                    .chunks(chunk)
                    .map(|part| {
                        Ok(pb::FetchOutputResponse {
                            item: Some(pb::fetch_output_response::Item::Chunk(part.to_vec())),
                        })
                    })
                    .collect(),
                Err(error) => vec![Err(Status::unavailable(format!(
                    "output stream broke: {error}"
                )))],
            };
            futures_util::stream::iter(items)
        });
        Ok(Box::pin(first.chain(body)))
    }
}

/// The two fields of a `/prompt` body that travel beside its graph, decoded; the graph was
/// parsed already and is skipped here rather than built into a tree a second time.
fn fields_beside_graph(
    body: &[u8],
) -> Result<serde_json::Map<String, serde_json::Value>, serde_json::Error> {
    #[derive(serde::Deserialize)]
    struct Beside<'a> {
        #[serde(borrow)]
        extra_data: Option<&'a serde_json::value::RawValue>,
        #[serde(borrow)]
        partial_execution_targets: Option<&'a serde_json::value::RawValue>,
    }
    let beside: Beside<'_> = serde_json::from_slice(body)?;
    let mut fields = serde_json::Map::new();
    for (key, raw) in [
        ("extra_data", beside.extra_data),
        (
            "partial_execution_targets",
            beside.partial_execution_targets,
        ),
    ] {
        if let Some(raw) = raw {
            fields.insert(key.to_owned(), serde_json::from_str(raw.get())?);
        }
    }
    Ok(fields)
}

/// Adds the request's own `extra_data` field (a JSON object, empty for none) to what an
/// envelope brought; its keys win over the envelope's. At most `limit` bytes are kept.
fn with_extra_data_field(
    extras: Option<PromptExtras>,
    field: &[u8],
    limit: usize,
) -> Result<Option<PromptExtras>, Status> {
    if field.is_empty() {
        return Ok(extras);
    }
    let value: serde_json::Value = serde_json::from_slice(field)
        .map_err(|error| Status::invalid_argument(format!("extra_data is not JSON: {error}")))?;
    let mut fields = serde_json::Map::new();
    fields.insert("extra_data".into(), value);
    let given = PromptExtras::from_prompt_body(&fields, limit)
        .map_err(|error| Status::invalid_argument(error.to_string()))?;
    Ok(match (extras, given) {
        (Some(mut extras), Some(given)) => {
            extras.extra_data.extend(given.extra_data);
            Some(extras)
        }
        (extras, given) => extras.or(given),
    })
}
