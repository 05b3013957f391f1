//! The client commands: `submit`, `watch`, `jobs`, `nodes`, `cancel`, `drain`, `undrain`.
//!
//! Each talks to a running coordinator over gRPC and prints either human output or, with
//! `--json`, one JSON object per line. Every command returns the exit code documented in
//! [`crate::exit`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use fleet_proto::v1::{
    CancelJobRequest, DrainNodeRequest, FailureClass, FetchOutputRequest, GetJobRequest, Job,
    JobState, ListJobsRequest, ListNodesRequest, Node, NodeHealth, Output, SubmitJobRequest,
    SubmitJobResponse, UndrainNodeRequest, WatchJobRequest, WatchJobResponse,
    fetch_output_request::Selector, fetch_output_response::Item as FetchItem,
    fleet_service_client::FleetServiceClient, job_event::Kind,
    job_service_client::JobServiceClient, watch_job_response::Item,
};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tonic::Streaming;
use tonic::transport::Channel;

use crate::exit;
use crate::exit::outln;
use crate::render::{Mode, Renderer, age, class_name, job_json, queue_text, state_name};

/// How often a waiting job's queue position is refreshed.
const QUEUE_POLL: Duration = Duration::from_secs(1);

/// How long a broken-off watch is retried without a new event before the command gives up:
/// long enough for a coordinator to restart, or for Kubernetes to move it.
const RESUME_FOR: Duration = Duration::from_secs(120);
/// The first wait before resuming a watch; it doubles up to [`RESUME_MAX_DELAY`].
const RESUME_FIRST_DELAY: Duration = Duration::from_millis(250);
/// The longest wait between attempts to resume a watch.
const RESUME_MAX_DELAY: Duration = Duration::from_secs(2);

/// Options shared by the commands that follow a job to its end.
pub struct FollowOptions {
    /// Where to save outputs; `None` saves nothing.
    pub out_dir: Option<PathBuf>,
    /// Where to save preview images; `None` asks for no previews.
    pub previews_dir: Option<PathBuf>,
    /// How to print.
    pub mode: Mode,
}

/// What `submit` sends besides the workflow.
pub struct SubmitOptions {
    /// Tenant the job is accounted to.
    pub tenant: String,
    /// Higher runs first.
    pub priority: i32,
    /// Labels the node must carry.
    pub labels: HashMap<String, String>,
    /// Idempotency key; empty for none.
    pub idempotency_key: String,
}

/// Connects to the coordinator's gRPC endpoint (`http://host:port` or `host:port`).
/// The largest answer the command line reads: well above what the coordinator sends (a job's
/// texts are cut at 64 KiB each, a listing's at 1 KiB), where gRPC's own default of 4 MiB is
/// not for a page of jobs with long texts.
const MAX_MESSAGE_BYTES: usize = 64 << 20;

pub async fn connect(endpoint: &str) -> Result<Channel> {
    let uri = if endpoint.contains("://") {
        endpoint.to_owned()
    } else {
        format!("http://{endpoint}")
    };
    Channel::from_shared(uri.clone())
        .map_err(|error| {
            exit::UsageError(format!("bad coordinator address {endpoint:?}: {error}"))
        })?
        .connect()
        .await
        .map_err(|error| {
            anyhow::anyhow!(
                "cannot reach the coordinator at {uri}: {}",
                error_chain(&error)
            )
        })
}

/// The messages of an error and its sources joined by `: `, each said once.
///
/// The transport's errors repeat their source in their own message ("tcp connect error:
/// tcp connect error: ..."), and so do some of the coordinator's ("configuration: config:
/// ..."), so a message that an earlier one already contains is left out.
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(error) = next {
        let text = error.to_string();
        if !text.is_empty() && !parts.iter().any(|part| part.contains(&text)) {
            parts.push(text);
        }
        next = error.source();
    }
    parts.join(": ")
}

/// Reads a workflow from a file, or from standard input for `-`.
pub async fn read_workflow(path: &Path) -> Result<Vec<u8>> {
    if path == Path::new("-") {
        let mut bytes = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut tokio::io::stdin(), &mut bytes)
            .await
            .map_err(|error| {
                exit::UsageError(format!(
                    "cannot read the workflow from standard input: {error}"
                ))
            })?;
        return Ok(bytes);
    }
    tokio::fs::read(path).await.map_err(|error| {
        exit::UsageError(format!("cannot read {}: {error}", path.display())).into()
    })
}

/// Submits a workflow; with `wait`, follows it to its end. Returns the exit code.
pub async fn submit(
    channel: Channel,
    workflow: Vec<u8>,
    options: SubmitOptions,
    wait: bool,
    follow: FollowOptions,
) -> Result<u8> {
    let mut jobs = JobServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
    let request = SubmitJobRequest {
        workflow,
        tenant: options.tenant,
        priority: options.priority,
        required_labels: options.labels,
        idempotency_key: options.idempotency_key,
        ..Default::default()
    };
    let answer = match jobs.submit_job(request).await {
        Ok(answer) => answer.into_inner(),
        Err(status) => return Ok(report_status(&status, follow.mode)),
    };
    if wait {
        if follow.mode == Mode::Json {
            outln!(
                "{}",
                json!({"submitted": {"job_id": answer.job_id, "queue_position": answer.queue_position, "replayed": answer.replayed}})
            );
        }
        return follow_job(jobs, &answer.job_id, follow, Some(&answer)).await;
    }
    match follow.mode {
        Mode::Json => outln!(
            "{}",
            json!({"submitted": {"job_id": answer.job_id, "queue_position": answer.queue_position, "replayed": answer.replayed}})
        ),
        // The id alone goes to stdout so that `id=$(comfyfleet submit ...)` works.
        _ => eprintln!(
            "submitted job {} (queue position {}){}",
            answer.job_id,
            answer.queue_position,
            if answer.replayed {
                ", an earlier submission with the same idempotency key"
            } else {
                ""
            }
        ),
    }
    if follow.mode != Mode::Json {
        outln!("{}", answer.job_id);
    }
    Ok(exit::OK)
}

/// Follows a job's events to its end, saving outputs. Returns the exit code.
pub async fn follow_job(
    mut jobs: JobServiceClient<Channel>,
    job_id: &str,
    follow: FollowOptions,
    submitted: Option<&SubmitJobResponse>,
) -> Result<u8> {
    let mut renderer = Renderer::new(follow.mode);
    if let Some(answer) = submitted
        && renderer.mode() != Mode::Json
    {
        renderer.submitted(&answer.job_id, answer.queue_position, answer.replayed);
    }
    let include_previews = follow.previews_dir.is_some();
    let mut stream = match open_watch(&mut jobs, job_id, 0, include_previews).await {
        Ok(stream) => stream,
        Err(status) => return Ok(report_status(&status, follow.mode)),
    };
    // The last event sequence read, to resume from if the stream breaks off, and since when
    // the watch has been lost without a new event.
    let mut last_sequence = 0u64;
    let mut lost_since: Option<Instant> = None;
    let mut outcome: Option<u8> = None;
    let mut outputs: Vec<Output> = Vec::new();
    let mut num_previews = 0u32;
    // Events say where a job entered the queue, not how it moves up; while the job waits, a
    // person (or a plain log) sees its position refreshed from GetJob once a second.
    let mut waiting = false;
    let mut poll = tokio::time::interval(QUEUE_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut poller = jobs.clone();
    let code = loop {
        let message = tokio::select! {
            message = stream.message() => message,
            _ = poll.tick(), if waiting && renderer.mode() != Mode::Json => {
                let request = GetJobRequest { job_id: job_id.to_owned() };
                // A failed poll only costs one refresh; the stream decides the outcome.
                if let Ok(answer) = poller.get_job(request).await
                    && let Some(job) = answer.into_inner().job
                    && job.state == JobState::Queued as i32
                {
                    renderer.waiting(job.queue_position);
                }
                continue;
            }
        };
        let lost = match (message, outcome) {
            (Ok(Some(message)), _) => Ok(message),
            // The job's end was read: the stream ends with it, and a break after it changes
            // nothing.
            (Ok(None) | Err(_), Some(code)) => break code,
            (Ok(None), None) => Err(tonic::Status::unavailable(
                "the watch stream ended before the job did",
            )),
            (Err(status), None) if connection_lost(&status) => Err(status),
            (Err(status), None) => {
                renderer.finish();
                return Ok(report_status(&status, follow.mode));
            }
        };
        let message = match lost {
            Ok(message) => message,
            Err(lost) => {
                let resume = Resume {
                    job_id,
                    after_sequence: last_sequence,
                    include_previews,
                    mode: follow.mode,
                };
                stream = match resume
                    .watch(&mut jobs, &mut renderer, lost, &mut lost_since)
                    .await
                {
                    Ok(stream) => stream,
                    Err(code) => return Ok(code),
                };
                continue;
            }
        };
        match &message.item {
            Some(Item::Event(event)) if event.sequence > last_sequence => {
                last_sequence = event.sequence;
                lost_since = None;
            }
            Some(Item::Gap(gap)) if gap.to_sequence > last_sequence => {
                last_sequence = gap.to_sequence;
            }
            _ => {}
        }
        match message.item {
            Some(Item::Snapshot(job)) => {
                renderer.snapshot(&job);
                waiting = job.state == JobState::Queued as i32;
                if let Some(code) = terminal_code(&job) {
                    outcome = Some(code);
                    outputs = job.outputs.clone();
                }
            }
            Some(Item::Gap(gap)) => renderer.gap(&gap),
            Some(Item::Event(event)) => {
                renderer.event(&event);
                match &event.kind {
                    Some(Kind::Queued(_)) => waiting = true,
                    Some(Kind::Retrying(_)) => waiting = true,
                    Some(Kind::Dispatched(_)) => waiting = false,
                    Some(Kind::Succeeded(done)) => {
                        outputs = done.outputs.clone();
                        outcome = Some(exit::OK);
                    }
                    Some(Kind::Failed(failed)) => {
                        let class = failed
                            .failure
                            .as_ref()
                            .and_then(|f| FailureClass::try_from(f.failure_class).ok())
                            .unwrap_or(FailureClass::Unspecified);
                        outcome = Some(exit::for_failure(class));
                    }
                    Some(Kind::Cancelled(_)) => outcome = Some(exit::CANCELLED),
                    Some(Kind::PreviewImage(preview)) => {
                        if let Some(dir) = &follow.previews_dir {
                            num_previews += 1;
                            let ext = if preview.content_type.contains("png") {
                                "png"
                            } else {
                                "jpg"
                            };
                            let path = dir.join(format!("preview_{num_previews:04}.{ext}"));
                            tokio::fs::create_dir_all(dir).await.ok();
                            tokio::fs::write(&path, &preview.data)
                                .await
                                .with_context(|| format!("cannot write {}", path.display()))?;
                        }
                    }
                    _ => {}
                }
            }
            None => {}
        }
    };
    if num_previews == 0
        && let Some(dir) = &follow.previews_dir
    {
        renderer.notice(&format!(
            "no previews arrived, so none were saved in {} (the node sends previews only when \
             its ComfyUI runs with a --preview-method other than none)",
            dir.display()
        ));
    }
    if code == exit::OK
        && let Some(dir) = &follow.out_dir
    {
        for output in &outputs {
            if output.filename.is_empty() {
                continue;
            }
            let (path, bytes) = fetch_output(&mut jobs, job_id, output, dir).await?;
            renderer.saved(output, &path, bytes);
        }
    }
    renderer.finish();
    Ok(code)
}

/// Opens a watch stream of `job_id` from after event `after_sequence`.
async fn open_watch(
    jobs: &mut JobServiceClient<Channel>,
    job_id: &str,
    after_sequence: u64,
    include_previews: bool,
) -> Result<Streaming<WatchJobResponse>, tonic::Status> {
    let request = WatchJobRequest {
        job_id: job_id.to_owned(),
        after_sequence,
        include_previews,
    };
    Ok(jobs.watch_job(request).await?.into_inner())
}

/// Whether a watch broke off for a reason that resuming can get past: the coordinator is
/// stopping or unreachable, or the connection failed under the stream.
///
/// A status the coordinator sent carries no source error; one made by this side's transport
/// (a reset, an HTTP/2 error) does, whatever its code.
fn connection_lost(status: &tonic::Status) -> bool {
    match status.code() {
        tonic::Code::Unavailable => true,
        tonic::Code::Unknown | tonic::Code::Internal | tonic::Code::Cancelled => {
            std::error::Error::source(status).is_some()
        }
        _ => false,
    }
}

/// Where to resume a watch that broke off.
struct Resume<'a> {
    job_id: &'a str,
    after_sequence: u64,
    include_previews: bool,
    mode: Mode,
}

impl Resume<'_> {
    /// Opens the watch again after the events already read, retrying with backoff while the
    /// coordinator stays unreachable, for at most [`RESUME_FOR`] since the last event. A
    /// coordinator restarted in between numbers its events after the old ones, so the stream
    /// goes on with a gap notice and a fresh snapshot. On giving up, reports the last error and
    /// returns its exit code.
    async fn watch(
        &self,
        jobs: &mut JobServiceClient<Channel>,
        renderer: &mut Renderer,
        lost: tonic::Status,
        lost_since: &mut Option<Instant>,
    ) -> Result<Streaming<WatchJobResponse>, u8> {
        let since = *lost_since.get_or_insert_with(Instant::now);
        renderer.finish();
        renderer.notice(&format!(
            "lost the watch of job {} ({}); resuming after event {}",
            self.job_id,
            lost.message(),
            self.after_sequence
        ));
        let mut last_error = lost;
        let mut delay = RESUME_FIRST_DELAY;
        loop {
            if since.elapsed() >= RESUME_FOR {
                renderer.notice(&format!(
                    "gave up resuming after {} s",
                    RESUME_FOR.as_secs()
                ));
                return Err(report_status(&last_error, self.mode));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(RESUME_MAX_DELAY);
            match open_watch(
                jobs,
                self.job_id,
                self.after_sequence,
                self.include_previews,
            )
            .await
            {
                Ok(stream) => return Ok(stream),
                Err(status) if connection_lost(&status) => last_error = status,
                Err(status) => return Err(report_status(&status, self.mode)),
            }
        }
    }
}

fn terminal_code(job: &Job) -> Option<u8> {
    match JobState::try_from(job.state).ok()? {
        JobState::Succeeded => Some(exit::OK),
        JobState::Cancelled => Some(exit::CANCELLED),
        JobState::Failed => {
            let class = job
                .failure
                .as_ref()
                .and_then(|f| FailureClass::try_from(f.failure_class).ok())
                .unwrap_or(FailureClass::Unspecified);
            Some(exit::for_failure(class))
        }
        _ => None,
    }
}

/// Downloads one recorded output into `dir`, returning the path and the byte count.
async fn fetch_output(
    jobs: &mut JobServiceClient<Channel>,
    job_id: &str,
    output: &Output,
    dir: &Path,
) -> Result<(PathBuf, u64)> {
    let request = FetchOutputRequest {
        job_id: job_id.to_owned(),
        selector: Some(Selector::OutputIndex(output.index)),
        chunk_size: 0,
    };
    let mut stream = jobs
        .fetch_output(request)
        .await
        .with_context(|| format!("cannot fetch output {} of job {job_id}", output.filename))?
        .into_inner();
    // Only the base name is used locally: the node chose the name, and a subfolder from a
    // node must never steer where we write.
    let file_name = Path::new(&output.filename)
        .file_name()
        .map(|name| name.to_owned())
        .unwrap_or_else(|| format!("output_{}", output.index).into());
    let subdir = sanitize_subfolder(&output.subfolder);
    let target_dir = dir.join(subdir);
    tokio::fs::create_dir_all(&target_dir)
        .await
        .with_context(|| format!("cannot create {}", target_dir.display()))?;
    let (mut file, path) = create_new_file(&target_dir, Path::new(&file_name)).await?;
    let mut written = 0u64;
    while let Some(message) = stream.message().await.context("output stream broke")? {
        if let Some(FetchItem::Chunk(chunk)) = message.item {
            file.write_all(&chunk)
                .await
                .with_context(|| format!("cannot write {}", path.display()))?;
            written += chunk.len() as u64;
        }
    }
    file.flush().await?;
    Ok((path, written))
}

/// Creates `dir/name`, or `dir/stem (1).ext`, `dir/stem (2).ext`, ... when that file exists:
/// outputs of two jobs (every node numbers its own `ComfyUI_00001_.png`) never overwrite each
/// other or anything else in the folder.
async fn create_new_file(dir: &Path, name: &Path) -> Result<(tokio::fs::File, PathBuf)> {
    let stem = name
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = name
        .extension()
        .map(|ext| format!(".{}", ext.to_string_lossy()))
        .unwrap_or_default();
    let mut path = dir.join(name);
    for n in 1u32.. {
        match tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .await
        {
            Ok(file) => return Ok((file, path)),
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                path = dir.join(format!("{stem} ({n}){ext}"));
            }
            Err(error) => {
                return Err(error).with_context(|| format!("cannot create {}", path.display()));
            }
        }
    }
    bail!(
        "no free file name for {} in {}",
        name.display(),
        dir.display()
    )
}

/// Keeps only plain path components of a node-reported subfolder (no `..`, no roots).
fn sanitize_subfolder(subfolder: &str) -> PathBuf {
    subfolder
        .split(['/', '\\'])
        .filter(|part| !part.is_empty() && *part != "." && *part != "..")
        .collect()
}

/// Prints a gRPC error for a person or a script and returns its exit code.
pub fn report_status(status: &tonic::Status, mode: Mode) -> u8 {
    let code = exit::for_status(status);
    match mode {
        Mode::Json => outln!(
            "{}",
            json!({"error": {"code": format!("{:?}", status.code()), "message": status.message()}})
        ),
        _ => eprintln!("error ({:?}): {}", status.code(), status.message()),
    }
    code
}

/// `comfyfleet jobs`: lists jobs, newest first, one page.
pub async fn list_jobs(
    channel: Channel,
    states: Vec<JobState>,
    tenant: String,
    limit: u32,
    mode: Mode,
) -> Result<u8> {
    let mut jobs = JobServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
    let request = ListJobsRequest {
        states: states.into_iter().map(|state| state as i32).collect(),
        tenant,
        page_size: limit,
        page_token: String::new(),
    };
    let answer = match jobs.list_jobs(request).await {
        Ok(answer) => answer.into_inner(),
        Err(status) => return Ok(report_status(&status, mode)),
    };
    if mode == Mode::Json {
        for job in &answer.jobs {
            outln!("{}", job_json(job));
        }
        return Ok(exit::OK);
    }
    outln!(
        "{:<36}  {:<10}  {:>5}  {:<14}  {:>7}  {:<12}  DETAIL",
        "JOB",
        "STATE",
        "AGE",
        "NODE",
        "ATTEMPT",
        "TENANT"
    );
    let now = std::time::SystemTime::now();
    for job in &answer.jobs {
        let detail = match &job.failure {
            // A failure message can hold a whole traceback; the table shows its first line.
            Some(failure) => format!(
                "{}: {}",
                class_name(failure.failure_class),
                failure.message.lines().next().unwrap_or_default()
            ),
            None if job.state == JobState::Queued as i32 => queue_text(job.queue_position),
            None => format!("{} output(s)", job.outputs.len()),
        };
        outln!(
            "{:<36}  {:<10}  {:>5}  {:<14}  {:>7}  {:<12}  {}",
            job.id,
            state_name(job.state),
            age(&job.created_at, now),
            if job.node.is_empty() { "-" } else { &job.node },
            job.attempt,
            job.tenant,
            detail
        );
    }
    Ok(exit::OK)
}

/// `comfyfleet watch JOB`: follows a job that was submitted earlier.
pub async fn watch(channel: Channel, job_id: &str, follow: FollowOptions) -> Result<u8> {
    let mut jobs = JobServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
    // Check first so that an unknown job id gives a clear error before any streaming.
    if let Err(status) = jobs
        .get_job(GetJobRequest {
            job_id: job_id.to_owned(),
        })
        .await
    {
        return Ok(report_status(&status, follow.mode));
    }
    follow_job(jobs, job_id, follow, None).await
}

/// `comfyfleet cancel JOB`.
pub async fn cancel(channel: Channel, job_id: &str, mode: Mode) -> Result<u8> {
    let mut jobs = JobServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
    let request = CancelJobRequest {
        job_id: job_id.to_owned(),
        reason: "cancelled from the command line".into(),
    };
    match jobs.cancel_job(request).await {
        Ok(answer) => {
            let answer = answer.into_inner();
            let outcome = fleet_proto::v1::CancelOutcome::try_from(answer.outcome)
                .map(|o| {
                    o.as_str_name()
                        .trim_start_matches("CANCEL_OUTCOME_")
                        .to_lowercase()
                })
                .unwrap_or_default();
            match mode {
                Mode::Json => outln!("{}", json!({"job_id": job_id, "outcome": outcome})),
                _ => outln!("job {job_id}: {}", outcome.replace('_', " ")),
            }
            Ok(exit::OK)
        }
        Err(status) => Ok(report_status(&status, mode)),
    }
}

/// `comfyfleet nodes`: a table of the fleet.
pub async fn nodes(channel: Channel, mode: Mode) -> Result<u8> {
    let mut fleet = FleetServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
    let answer = match fleet.list_nodes(ListNodesRequest {}).await {
        Ok(answer) => answer.into_inner(),
        Err(status) => return Ok(report_status(&status, mode)),
    };
    if mode == Mode::Json {
        for node in &answer.nodes {
            outln!("{}", node_json(node));
        }
        return Ok(exit::OK);
    }
    outln!(
        "{:<14}  {:<9}  {:<34}  {:>17}  {:>9}  {:>9}  {:>6}  MODELS IN VRAM (LAST USED FIRST)",
        "NODE",
        "HEALTH",
        "GPU",
        "VRAM USED/TOTAL",
        "QUEUE R/P",
        "IN FLIGHT",
        "DONE"
    );
    for node in &answer.nodes {
        let used = node.vram_total.saturating_sub(node.vram_free);
        let gpu = display_gpu(&node.gpu_name, node.simulated);
        outln!(
            "{:<14}  {:<9}  {:<34}  {:>17}  {:>9}  {:>9}  {:>6}  {}",
            node.name,
            health_name(node.health),
            truncate(&gpu, 34),
            format!("{}/{}", gib(used), gib(node.vram_total)),
            format!("{}/{}", node.queue_running, node.queue_pending),
            node.in_flight,
            node.jobs_done,
            resident_models(node)
        );
    }
    Ok(exit::OK)
}

/// The checkpoints the coordinator believes the node holds, most recently used first; the last
/// model alone when talking to a coordinator that does not report the set.
fn resident_models(node: &Node) -> String {
    if node.resident_models.is_empty() {
        return node.last_model.clone();
    }
    let mut names: Vec<&str> = node.resident_models.iter().map(String::as_str).collect();
    names.reverse();
    names.join(", ")
}

/// `comfyfleet drain NODE` and `comfyfleet undrain NODE`.
pub async fn drain(channel: Channel, name: &str, drain: bool, mode: Mode) -> Result<u8> {
    let mut fleet = FleetServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
    let answer = if drain {
        fleet
            .drain_node(DrainNodeRequest {
                name: name.to_owned(),
            })
            .await
            .map(|a| a.into_inner().node)
    } else {
        fleet
            .undrain_node(UndrainNodeRequest {
                name: name.to_owned(),
            })
            .await
            .map(|a| a.into_inner().node)
    };
    match answer {
        Ok(node) => {
            let node = node.unwrap_or_default();
            match mode {
                Mode::Json => outln!("{}", node_json(&node)),
                _ => outln!("node {} is {}", node.name, health_name(node.health)),
            }
            Ok(exit::OK)
        }
        Err(status) => Ok(report_status(&status, mode)),
    }
}

fn node_json(node: &Node) -> serde_json::Value {
    json!({
        "name": node.name, "url": node.url, "health": health_name(node.health),
        "labels": node.labels, "gpu_name": node.gpu_name, "vram_total": node.vram_total,
        "vram_free": node.vram_free, "queue_running": node.queue_running,
        "queue_pending": node.queue_pending, "in_flight": node.in_flight,
        "last_model": node.last_model, "resident_models": node.resident_models,
        "jobs_done": node.jobs_done,
        "jobs_failed": node.jobs_failed, "simulated": node.simulated,
        "draining": node.draining, "last_error": node.last_error,
        "last_probe_age_seconds": node.last_probe_age.as_ref()
            .map(|age| age.seconds as f64 + f64::from(age.nanos) / 1e9),
    })
}

/// A GPU name without ComfyUI's device prefix and allocator suffix
/// (`cuda:0 NVIDIA H100 : cudaMallocAsync` reads `NVIDIA H100`).
fn display_gpu(name: &str, simulated: bool) -> String {
    let name = name
        .split_once(' ')
        .filter(|(device, _)| device.contains(':'))
        .map_or(name, |(_, rest)| rest);
    let name = name.rsplit_once(" : ").map_or(name, |(model, _)| model);
    let name = if name.is_empty() { "unknown" } else { name };
    if simulated {
        format!("{name} (sim)")
    } else {
        name.to_owned()
    }
}

fn health_name(health: i32) -> String {
    NodeHealth::try_from(health)
        .map(|h| {
            h.as_str_name()
                .trim_start_matches("NODE_HEALTH_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| "unknown".into())
}

fn gib(bytes: u64) -> String {
    format!("{:.1}G", bytes as f64 / (1u64 << 30) as f64)
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn saved_outputs_never_overwrite_a_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let name = Path::new("ComfyUI_00001_.png");
        let mut paths = Vec::new();
        for content in [b"first", b"other"] {
            let (mut file, path) = create_new_file(dir.path(), name).await.expect("creates");
            file.write_all(content).await.expect("writes");
            file.flush().await.expect("flushes");
            paths.push(path);
        }
        assert_eq!(paths[0], dir.path().join("ComfyUI_00001_.png"));
        assert_eq!(paths[1], dir.path().join("ComfyUI_00001_ (1).png"));
        assert_eq!(std::fs::read(&paths[0]).expect("first"), b"first");
        assert_eq!(std::fs::read(&paths[1]).expect("second"), b"other");
    }

    #[test]
    fn an_error_chain_says_each_message_once() {
        #[derive(Debug)]
        struct Layer(&'static str, Option<Box<Layer>>);
        impl std::fmt::Display for Layer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for Layer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.1.as_deref().map(|e| e as _)
            }
        }
        let error = Layer(
            "transport error",
            Some(Box::new(Layer(
                "tcp connect error: Connection refused (os error 111)",
                Some(Box::new(Layer(
                    "tcp connect error",
                    Some(Box::new(Layer("Connection refused (os error 111)", None))),
                ))),
            ))),
        );
        assert_eq!(
            error_chain(&error),
            "transport error: tcp connect error: Connection refused (os error 111)"
        );
    }

    #[test]
    fn subfolders_from_nodes_cannot_escape_the_output_dir() {
        assert_eq!(sanitize_subfolder("../../etc"), PathBuf::from("etc"));
        assert_eq!(sanitize_subfolder("/abs/./x"), PathBuf::from("abs/x"));
        assert_eq!(sanitize_subfolder("a\\b"), PathBuf::from("a/b"));
        assert_eq!(sanitize_subfolder(""), PathBuf::new());
    }

    #[test]
    fn gpu_names_lose_device_prefix_and_allocator() {
        assert_eq!(
            display_gpu("cuda:0 NVIDIA H200 : cudaMallocAsync", false),
            "NVIDIA H200"
        );
        assert_eq!(display_gpu("cpu", false), "cpu");
        assert_eq!(
            display_gpu("cuda:1 NVIDIA A100-SXM4-80GB : native", true),
            "NVIDIA A100-SXM4-80GB (sim)"
        );
    }

    #[test]
    fn long_gpu_names_are_cut_with_an_ellipsis() {
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
    }
}
