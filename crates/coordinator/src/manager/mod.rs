//! The job manager: the one owner of every live job's state.
//!
//! All state changes of live jobs go through one task, so no two places can disagree about a
//! job: the gRPC service hands it new jobs and cancellations, node actors hand it
//! [`Signal`]s (a prompt started, a prompt ended, a node lost), and its own helper tasks report
//! back when a journal write, a POST or a history read finished. The manager keeps:
//!
//! - the **queue** of jobs waiting in the coordinator (priority, then arrival), from which a
//!   placement round takes jobs when nodes have free slots (late binding);
//! - every **live job** with its record, which it changes only through the pure state machine
//!   ([`crate::job::Job::apply`]) and mirrors into the journal.
//!
//! Journal writes run in helper tasks so that the manager never waits for a disk, yet the
//! writes of one job stay in order: each job has a small chain of pending writes and at most one
//! in progress. A job's terminal event is appended to its log only after the terminal state is
//! durable, and a prompt is POSTed only after its dispatch is durable.

mod admission;
mod attempts;
mod cancel;
mod outcome;
mod queue;
mod recovery;
mod shared;
mod tasks;
mod tick;
mod writes;

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rand::SeedableRng;
use rand::rngs::StdRng;
use scheduler::{JobView, Policy, QueueOrder, Snapshot};
use tokio::sync::{mpsc, oneshot};
use tracing::{Instrument, Span, debug, info, info_span, warn};
use uuid::Uuid;

use crate::events::{EventHub, EventLog};
use crate::facade::UploadStore;
use crate::fleet::actor::Signal;
use crate::fleet::{Fleet, OurPrompt};
use crate::job::{
    AttemptRecord, Failure, FailureClass, Job, JobEvent, JobId, JobState, StateChange,
    WorkflowAnalysis,
};
use crate::journal::JobStore;
use crate::metrics::Metrics;

pub use admission::{Admission, AdmissionError, Permit};
pub use outcome::AttemptEnd;

/// Settings of the manager.
#[derive(Debug, Clone)]
pub struct ManagerSettings {
    /// Most attempts per job before it fails for good. Default 3.
    pub max_attempts: u32,
    /// How many queued jobs one placement round looks at, at least. Default 512.
    ///
    /// NOTE: a round considers only the head of the queue (this many jobs, or eight per free
    /// slot if that is more) so its cost does not grow with a queue of 100,000 jobs. A job
    /// deeper in the queue that could run on an idle node while every job ahead of it waits
    /// for a busy one is placed only once it reaches that window.
    pub round_window: usize,
    /// How jobs of equal priority are ordered.
    pub queue_order: QueueOrder,
    /// Input files kept by the coordinator (`POST /upload/image`); those a workflow loads are
    /// uploaded to its node before the prompt. `None` uploads nothing.
    pub uploads: Option<UploadStore>,
    /// Jobs waiting in the queue, all tenants together, before submissions are refused.
    /// Default 10,000.
    pub max_queued_jobs: u64,
    /// Jobs of one tenant waiting in the queue before its submissions are refused.
    /// Default 1,000.
    pub max_queued_jobs_per_tenant: u64,
    /// How often the manager looks for passed deadlines, stalled prompts and unconfirmed
    /// cancellations. Default 500 ms.
    pub tick: Duration,
    /// A prompt of ours with no event for this long is reconciled over HTTP. Default 5 min.
    pub stall_timeout: Duration,
}

impl Default for ManagerSettings {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            round_window: 512,
            queue_order: QueueOrder::Arrival,
            uploads: None,
            max_queued_jobs: 10_000,
            max_queued_jobs_per_tenant: 1_000,
            tick: Duration::from_millis(500),
            stall_timeout: Duration::from_secs(300),
        }
    }
}

/// What a cancellation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The job was waiting in the coordinator and left the queue.
    RemovedFromQueue,
    /// The job was waiting on a node and was deleted from the node's queue.
    DeletedFromNodeQueue,
    /// The job was running and was interrupted by its prompt id.
    Interrupted,
    /// The job had already ended; nothing was done.
    AlreadyTerminal,
}

/// Errors of manager requests.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    /// No live job has this id.
    #[error("job {0}: not a live job")]
    NotLive(JobId),
    /// The manager task has stopped (the coordinator is shutting down).
    #[error("the coordinator is shutting down")]
    Stopped,
}

/// A live job as the service sees it.
#[derive(Debug, Clone)]
pub struct LiveJob {
    /// The record. Its `spec.workflow` is empty: the manager does not keep a live job's
    /// workflow bytes in memory; the journal has them ([`JobStore::get`]).
    pub job: Job,
    /// Position in the coordinator's queue (0 = next), when queued.
    pub queue_position: Option<u64>,
}

enum Msg {
    Enqueue {
        job: Box<Job>,
        reply: oneshot::Sender<u64>,
    },
    Adopt {
        job: Box<Job>,
    },
    Cancel {
        id: JobId,
        reason: String,
        reply: oneshot::Sender<Result<CancelOutcome, ManagerError>>,
    },
    Get {
        id: JobId,
        reply: oneshot::Sender<Option<LiveJob>>,
    },
    Signal(Signal),
    Tick,
    WriteDone {
        id: JobId,
        ok: bool,
    },
    /// A dispatch is durable and its workflow was read back from the journal: install the
    /// graph's titles on the registered prompt before it is posted. The answer says whether
    /// the attempt is still current (a POST for a superseded attempt is not sent).
    Titles {
        id: JobId,
        prompt_id: Uuid,
        titles: Arc<HashMap<String, (String, String)>>,
        reply: oneshot::Sender<bool>,
    },
    Posted {
        id: JobId,
        prompt_id: Uuid,
        node: String,
        result: Result<(), tasks::PostError>,
    },
    AttemptEnded {
        id: JobId,
        prompt_id: Uuid,
        node: String,
        end: AttemptEnd,
    },
}

/// A cheap handle to the manager task.
#[derive(Clone)]
pub struct ManagerHandle {
    tx: mpsc::UnboundedSender<Msg>,
    admission: Arc<Admission>,
}

impl ManagerHandle {
    /// Reserves a place in the queue for a new job of `tenant` before it is written; hold the
    /// permit until [`ManagerHandle::enqueue`] has answered (see [`admission`](self)).
    pub fn admit(&self, tenant: &str) -> Result<Permit, AdmissionError> {
        self.admission.admit(tenant)
    }

    /// Puts a job that is already durable in the journal into the queue; returns its position.
    pub async fn enqueue(&self, job: Job) -> Result<u64, ManagerError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Msg::Enqueue {
                job: Box::new(job),
                reply,
            })
            .map_err(|_| ManagerError::Stopped)?;
        answer.await.map_err(|_| ManagerError::Stopped)
    }

    /// Takes back a job found unfinished in the journal at startup: a queued job rejoins the
    /// queue; a job that was on a node is tracked there again and reconciled with the node
    /// (still queued there: reattach; in its history: finish from it; on neither: retry).
    pub fn recover(&self, job: Job) -> Result<(), ManagerError> {
        let msg = if job.state() == JobState::Queued {
            let (reply, _) = oneshot::channel();
            Msg::Enqueue {
                job: Box::new(job),
                reply,
            }
        } else {
            Msg::Adopt { job: Box::new(job) }
        };
        self.tx.send(msg).map_err(|_| ManagerError::Stopped)
    }

    /// Cancels a live job wherever it is.
    pub async fn cancel(&self, id: JobId, reason: String) -> Result<CancelOutcome, ManagerError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Msg::Cancel { id, reason, reply })
            .map_err(|_| ManagerError::Stopped)?;
        answer.await.map_err(|_| ManagerError::Stopped)?
    }

    /// Returns the live job, or `None` when it is not live (finished or unknown).
    pub async fn get(&self, id: JobId) -> Result<Option<LiveJob>, ManagerError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Msg::Get { id, reply })
            .map_err(|_| ManagerError::Stopped)?;
        answer.await.map_err(|_| ManagerError::Stopped)
    }

    /// Asks for a placement round (a node changed, e.g. drained or undrained).
    pub fn wake(&self) {
        let _ = self.tx.send(Msg::Signal(Signal::Wake));
    }
}

/// A pending journal write of one job, and what to do once it is durable.
struct Write {
    change: StateChange,
    at: SystemTime,
    then: After,
}

/// What follows a durable write.
enum After {
    Nothing,
    /// Append these events to the job's log.
    Append(Vec<JobEvent>),
    /// Append `Dispatched`, then POST the prompt, whose bytes are read back from the journal
    /// by the write itself. `titles` is false when the job's graph titles are not known yet:
    /// they are parsed from those bytes and installed (`Msg::Titles`) before the POST.
    Post {
        node: String,
        prompt_id: Uuid,
        event: Box<JobEvent>,
        titles: bool,
    },
}

/// What the manager keeps of a live job.
///
/// A deep queue holds one of these per waiting job, so it keeps only what placement and the
/// job's next steps need: the workflow bytes stay in the journal (a dispatch reads them back
/// with its write), the analysis is shared by every job with the same one, and placement
/// builds its [`JobView`]s per round for the head of the queue only.
struct Live {
    /// The record, hollow: `spec.workflow` is empty, `spec.extras` is `None` and `spec.analysis`
    /// is the default (the
    /// analysis is in `needs`). [`Live::full_job`] puts the analysis back.
    job: Job,
    arrival: u64,
    /// The job's workflow analysis, shared with every live job that has an equal one.
    needs: Arc<shared::Needs>,
    /// Estimated VRAM need in bytes (weights and activations, see
    /// [`crate::analysis::job_view`]); raised after an out-of-memory failure.
    vram_need: u64,
    /// Whether an attempt already ran out of memory on a GPU no other in the fleet is larger
    /// than; a second such failure ends the job instead of another retry.
    oom_on_largest: bool,
    log: Arc<EventLog>,
    submitted: Instant,
    dispatched: Option<Instant>,
    /// Why the job is being cancelled, once asked.
    cancel: Option<String>,
    /// Whether its current prompt was acknowledged by the node.
    posted: bool,
    writes: VecDeque<Write>,
    writing: bool,
    /// The job's tracing span (`job_id`, `tenant`), entered for every log line about it so
    /// structured logs can be filtered by job from submit to its end. Created when the job
    /// first leaves the queue (or is cancelled there); a line about a job still waiting gets
    /// a fresh span with the same fields, so a deep queue does not hold a span per job.
    span: Option<Span>,
    /// Whether its deadline passed (a cancellation then ends it as failed, class deadline).
    expired: bool,
    /// When a cancel was last sent to its node, to push it again if not confirmed.
    cancel_sent: Option<Instant>,
    /// Class and title of each graph node, parsed once (after the first dispatch is durable,
    /// from the journal's bytes) and shared by every attempt.
    titles: Option<Arc<HashMap<String, (String, String)>>>,
}

impl Live {
    /// Keeps `job` hollow (see [`Live::job`]) with its shared analysis.
    fn new(
        mut job: Job,
        arrival: u64,
        needs: Arc<shared::Needs>,
        vram_need: u64,
        log: Arc<EventLog>,
    ) -> Self {
        job.spec.workflow = bytes::Bytes::new();
        job.spec.analysis = WorkflowAnalysis::default();
        // Like the workflow, what the client sent beside it comes back from the journal with
        // the dispatch that forwards it.
        job.spec.extras = None;
        Self {
            job,
            arrival,
            needs,
            vram_need,
            oom_on_largest: false,
            log,
            submitted: Instant::now(),
            dispatched: None,
            cancel: None,
            posted: false,
            writes: VecDeque::new(),
            writing: false,
            span: None,
            expired: false,
            cancel_sent: None,
            titles: None,
        }
    }

    /// A new span carrying the job's fields. A root span: its lines carry the job's fields,
    /// not the manager's.
    fn new_span(&self) -> Span {
        info_span!(parent: None, "job", job_id = %self.job.id, tenant = %self.job.spec.tenant)
    }

    /// The job's span, created and kept on first use.
    fn span(&mut self) -> Span {
        if self.span.is_none() {
            self.span = Some(self.new_span());
        }
        self.span.clone().unwrap_or_else(Span::none)
    }

    /// The record with its analysis (the workflow bytes stay in the journal).
    fn full_job(&self) -> Job {
        let mut job = self.job.clone();
        job.spec.analysis = self.needs.analysis.clone();
        job
    }

    /// The estimated cost in cost units, as placement counts it.
    fn cost(&self) -> u64 {
        self.needs.placement.cost
    }

    /// The job as placement sees it, built from the shared analysis; equal to what
    /// [`crate::analysis::job_view`] makes of the full job (with the VRAM need kept here).
    fn view(&self) -> JobView {
        crate::analysis::placement_view(
            &self.job,
            &self.needs.placement,
            self.arrival,
            self.vram_need,
        )
    }
}

type QueueKey = (Reverse<i32>, u64, JobId);

/// The least time between two placement rounds that look at the nodes.
///
/// A round copies every node's view (its whole class and model inventory) and hands the head
/// of the queue to the policy, so its cost grows with the fleet. Under load the manager wakes
/// for nearly every message (a submission, a finished write, a node's status broadcast), and
/// one round per wake made placement most of the coordinator's work. Rounds owed within this
/// gap are merged into one that runs when it has passed; an idle manager still places a new
/// job at once, since its last round is older than the gap.
const MIN_ROUND_GAP: Duration = Duration::from_millis(1);

/// The gap after a round, as a multiple of the time it took: placement may take at most a
/// fifth of the manager's time however costly a round is.
///
/// A round's cost grows with the fleet and with the policy: expected-finish scores each job
/// of the window against every node it could use, busy ones included, which on 1,000 mostly
/// full nodes takes tens of milliseconds (`cargo run --release -p scheduler --example
/// plan_timing`). Every finished job frees a slot and owes a round, so with a fixed gap such
/// a fleet would spend the manager entirely on placement and fall behind on everything else.
/// Waiting four round-times instead lets the jobs that free slots meanwhile share one round.
const ROUND_GAP_FACTOR: u32 = 4;

/// The least time from the start of a round that took `took` to the start of the next.
fn round_gap(took: Duration) -> Duration {
    took.saturating_add(took.saturating_mul(ROUND_GAP_FACTOR))
        .max(MIN_ROUND_GAP)
}

/// The manager task's state (see the module docs).
pub struct Manager {
    store: Arc<dyn JobStore>,
    hub: Arc<EventHub>,
    fleet: Arc<Fleet>,
    metrics: Metrics,
    policy: Box<dyn Policy>,
    rng: StdRng,
    settings: ManagerSettings,
    queue: BTreeSet<QueueKey>,
    /// Boxed: the map's spare capacity then costs a pointer per slot, not a whole record.
    live: HashMap<JobId, Box<Live>>,
    /// The analyses of live jobs, each kept once.
    analyses: shared::Analyses,
    next_arrival: u64,
    tx: mpsc::UnboundedSender<Msg>,
    dirty: bool,
    admission: Arc<Admission>,
    /// Model-load times learnt from cold starts, for placement's estimates.
    load_times: crate::fleet::load_time::LoadTimes,
}

/// Starts the manager task. Returns its handle and the sender node actors signal into.
pub fn spawn(
    store: Arc<dyn JobStore>,
    hub: Arc<EventHub>,
    fleet: Arc<Fleet>,
    metrics: Metrics,
    policy: Box<dyn Policy>,
    settings: ManagerSettings,
) -> (
    ManagerHandle,
    mpsc::UnboundedSender<Signal>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (signals_tx, mut signals_rx) = mpsc::unbounded_channel::<Signal>();
    // Signals are forwarded into the one inbox so the manager has a single ordered stream.
    let forward_tx = tx.clone();
    tokio::spawn(async move {
        while let Some(signal) = signals_rx.recv().await {
            if forward_tx.send(Msg::Signal(signal)).is_err() {
                break;
            }
        }
    });
    // The tick stops with the manager: its sends fail once the inbox is gone.
    let tick_tx = tx.clone();
    let period = settings.tick.max(Duration::from_millis(10));
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            if tick_tx.send(Msg::Tick).is_err() {
                break;
            }
        }
    });
    let admission = Admission::new(
        settings.max_queued_jobs,
        settings.max_queued_jobs_per_tenant,
    );
    let manager = Manager {
        store,
        hub,
        fleet,
        metrics,
        policy,
        rng: StdRng::seed_from_u64(0x5eed),
        settings,
        queue: BTreeSet::new(),
        live: HashMap::new(),
        analyses: shared::Analyses::default(),
        next_arrival: 0,
        tx: tx.clone(),
        dirty: false,
        admission: Arc::clone(&admission),
        load_times: crate::fleet::load_time::LoadTimes::new(),
    };
    let task = tokio::spawn(manager.run(rx).instrument(info_span!("manager")));
    (ManagerHandle { tx, admission }, signals_tx, task)
}

impl Manager {
    /// The span of a live job (a disabled span for an unknown one), to enter while handling it.
    fn span_of(&self, id: JobId) -> Span {
        self.live.get(&id).map_or_else(Span::none, |live| {
            live.span.clone().unwrap_or_else(|| live.new_span())
        })
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        // The earliest start of the next round that builds node views (see `round_gap`).
        let mut next_round: Option<Instant> = None;
        loop {
            if self.dirty {
                let now = Instant::now();
                if next_round.is_none_or(|at| now >= at) {
                    self.dirty = false;
                    if self.place() {
                        next_round = Some(now + round_gap(now.elapsed()));
                    }
                }
            }
            let msg = match next_round {
                // A round is owed but the last one was too recent: wait for the gap to pass
                // while still taking messages, which the owed round will then include.
                Some(at) if self.dirty => {
                    tokio::select! {
                        msg = rx.recv() => msg,
                        () = tokio::time::sleep_until(at.into()) => continue,
                    }
                }
                _ => rx.recv().await,
            };
            let Some(msg) = msg else {
                break;
            };
            self.handle(msg);
            // Drain what else is waiting before planning, so a burst of submissions or
            // probe results costs one placement round, not one each.
            while let Ok(msg) = rx.try_recv() {
                self.handle(msg);
            }
        }
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Enqueue { job, reply } => {
                let position = self.enqueue(*job, None);
                let _ = reply.send(position);
            }
            Msg::Adopt { job } => self.adopt(*job),
            Msg::Cancel { id, reason, reply } => {
                let _ = reply.send(self.cancel(id, reason));
            }
            Msg::Get { id, reply } => {
                let live = self.live.get(&id).map(|live| LiveJob {
                    job: live.full_job(),
                    queue_position: (live.job.state() == JobState::Queued).then(|| {
                        self.position_of(&(Reverse(live.job.spec.priority), live.arrival, id))
                    }),
                });
                let _ = reply.send(live);
            }
            Msg::Signal(signal) => self.signal(signal),
            Msg::Tick => self.tick(),
            Msg::WriteDone { id, ok } => self.write_done(id, ok),
            Msg::Titles {
                id,
                prompt_id,
                titles,
                reply,
            } => {
                let _ = reply.send(self.install_titles(id, prompt_id, titles));
            }
            Msg::Posted {
                id,
                prompt_id,
                node,
                result,
            } => self.posted(id, prompt_id, node, result),
            Msg::AttemptEnded {
                id,
                prompt_id,
                node,
                end,
            } => {
                self.attempt_ended(id, prompt_id, &node, end);
            }
        }
    }
}

#[cfg(test)]
mod round_gap_tests {
    use super::*;

    #[test]
    fn placement_takes_at_most_a_fifth_of_the_manager() {
        // Cheap rounds are held to the fixed floor, so an idle manager places at once.
        assert_eq!(round_gap(Duration::from_micros(20)), MIN_ROUND_GAP);
        // A round of 35 ms (expected-finish on 1,000 mostly full nodes) is followed by four
        // times as long without one.
        let took = Duration::from_millis(35);
        let gap = round_gap(took);
        assert_eq!(gap, Duration::from_millis(175));
        assert!(took.as_secs_f64() / gap.as_secs_f64() <= 0.2 + 1e-9);
    }
}
