//! Submitting jobs on a schedule and following each to its end over `WatchJob`.
//!
//! Load is open-loop: job *i* is submitted at its planned offset whether or not earlier jobs
//! have finished, as real clients do, so a slow coordinator shows up as growing latency rather
//! than as a politely reduced offered rate. Each job gets its own task that submits, then
//! watches from the first event and records when each event was *received* (client clock) and
//! when the coordinator *appended* it (the event's `time`, mapped onto the same monotonic
//! clock through one wall-clock anchor; everything runs in one process, so there is no skew
//! between machines, only between the wall and monotonic clocks over the run).

use std::time::{Duration, Instant, SystemTime};

use fleet_proto::v1::{
    SubmitJobRequest, WatchJobRequest, job_event::Kind, watch_job_response::Item,
};
use tokio::task::JoinSet;
use tokio_stream::StreamExt;
use tracing::warn;

use crate::harness::Harness;

/// Maps the coordinator's wall-clock event times onto [`Instant`]s.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    instant: Instant,
    wall: SystemTime,
}

impl Clock {
    /// Anchors both clocks now.
    pub fn now() -> Self {
        Self {
            instant: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    /// The instant of a protobuf timestamp, if it is valid.
    pub fn instant_of(&self, time: &prost_types::Timestamp) -> Option<Instant> {
        let wall = SystemTime::try_from(*time).ok()?;
        match wall.duration_since(self.wall) {
            Ok(after) => self.instant.checked_add(after),
            Err(before) => self.instant.checked_sub(before.duration()),
        }
    }
}

/// What kind of event a watcher received, reduced to what the benchmarks read.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    /// The job entered the queue.
    Queued,
    /// An attempt was bound to a node.
    Dispatched {
        /// The node.
        node: String,
        /// The node's prompt id.
        prompt_id: String,
        /// Attempt number, from 1.
        attempt: u32,
    },
    /// The node started executing the attempt.
    Started,
    /// The job goes back to the queue for another attempt.
    Retrying,
    /// The job succeeded.
    Succeeded,
    /// The job failed for good.
    Failed(String),
    /// The job was cancelled.
    Cancelled,
    /// Progress, per-node and output events.
    Other,
}

/// One event as the watcher saw it.
#[derive(Debug, Clone)]
pub struct EventSeen {
    /// What it was.
    pub kind: Seen,
    /// When the watcher received it.
    pub received: Instant,
    /// When the coordinator appended it (its `time` field).
    pub appended: Option<Instant>,
}

/// How a job ended, as far as the client knows.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Succeeded.
    Succeeded,
    /// Failed, with the failure message.
    Failed(String),
    /// Cancelled.
    Cancelled,
    /// Refused at submit, with the status message.
    Rejected(String),
    /// Not finished when the run's deadline passed, or the watch broke.
    Unfinished(String),
}

/// Everything recorded about one job.
#[derive(Debug, Clone)]
pub struct JobTrace {
    /// Index in the trace.
    pub index: usize,
    /// Job id ("" when rejected).
    pub id: String,
    /// When the submit call was sent.
    pub submit_sent: Instant,
    /// When the submit answer came back.
    pub submit_acked: Option<Instant>,
    /// Events in order.
    pub events: Vec<EventSeen>,
    /// The end.
    pub outcome: Outcome,
}

impl JobTrace {
    /// Dispatches in order (one per attempt).
    pub fn dispatches(&self) -> impl Iterator<Item = (&EventSeen, &str, &str, u32)> {
        self.events.iter().filter_map(|event| match &event.kind {
            Seen::Dispatched {
                node,
                prompt_id,
                attempt,
            } => Some((event, node.as_str(), prompt_id.as_str(), *attempt)),
            _ => None,
        })
    }

    /// The first event of a kind matching `pred`.
    pub fn first(&self, pred: impl Fn(&Seen) -> bool) -> Option<&EventSeen> {
        self.events.iter().find(|event| pred(&event.kind))
    }

    /// The last dispatch: node and prompt id of the final attempt.
    pub fn last_dispatch(&self) -> Option<(&str, &str)> {
        self.dispatches()
            .last()
            .map(|(_, node, prompt, _)| (node, prompt))
    }

    /// When the terminal event was received.
    pub fn finished_received(&self) -> Option<Instant> {
        self.first(|kind| matches!(kind, Seen::Succeeded | Seen::Failed(_) | Seen::Cancelled))
            .map(|event| event.received)
    }

    /// Number of `Retrying` events.
    pub fn retries(&self) -> usize {
        self.events
            .iter()
            .filter(|event| event.kind == Seen::Retrying)
            .count()
    }
}

/// A job to submit at an offset from the start of the run.
#[derive(Debug, Clone)]
pub struct Planned {
    /// Offset from the start.
    pub at: Duration,
    /// The API-format workflow.
    pub workflow: Vec<u8>,
    /// Tenant ("" for the default).
    pub tenant: String,
}

/// Submits every planned job at its offset and follows each to its end or to `deadline`
/// (measured from the start). Returns the traces in plan order and the start instant.
pub async fn run_open_loop(
    harness: &Harness,
    plan: Vec<Planned>,
    deadline: Duration,
) -> (Vec<JobTrace>, Instant) {
    let clock = Clock::now();
    let start = Instant::now();
    let end = start + deadline;
    let mut tasks = JoinSet::new();
    for (index, planned) in plan.into_iter().enumerate() {
        let client = harness.jobs(index);
        tasks.spawn(async move {
            tokio::time::sleep_until((start + planned.at).into()).await;
            follow(client, index, planned, clock, end).await
        });
    }
    let mut traces = Vec::with_capacity(tasks.len());
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(trace) => traces.push(trace),
            Err(error) => warn!(%error, "a job task ended abnormally"),
        }
    }
    traces.sort_by_key(|trace| trace.index);
    (traces, start)
}

/// Submits one job and follows its events to a terminal one or to `end`; `index` numbers
/// the trace.
pub async fn follow(
    mut client: fleet_proto::v1::job_service_client::JobServiceClient<tonic::transport::Channel>,
    index: usize,
    planned: Planned,
    clock: Clock,
    end: Instant,
) -> JobTrace {
    let submit_sent = Instant::now();
    let mut trace = JobTrace {
        index,
        id: String::new(),
        submit_sent,
        submit_acked: None,
        events: Vec::new(),
        outcome: Outcome::Unfinished("not submitted".into()),
    };
    let request = SubmitJobRequest {
        workflow: planned.workflow,
        tenant: planned.tenant,
        ..SubmitJobRequest::default()
    };
    let answer = match client.submit_job(request).await {
        Ok(answer) => answer.into_inner(),
        Err(status) => {
            trace.outcome = Outcome::Rejected(format!("{:?}: {}", status.code(), status.message()));
            return trace;
        }
    };
    trace.submit_acked = Some(Instant::now());
    trace.id = answer.job_id;
    let watch = WatchJobRequest {
        job_id: trace.id.clone(),
        after_sequence: 0,
        include_previews: false,
    };
    let result = tokio::time::timeout_at(end.into(), async {
        let mut stream = client
            .watch_job(watch)
            .await
            .map_err(|status| format!("watch: {}", status.message()))?
            .into_inner();
        while let Some(item) = stream.next().await {
            let item = item.map_err(|status| format!("watch stream: {}", status.message()))?;
            let received = Instant::now();
            let Some(Item::Event(event)) = item.item else {
                continue;
            };
            let appended = event.time.as_ref().and_then(|time| clock.instant_of(time));
            let kind = match event.kind {
                Some(Kind::Queued(_)) => Seen::Queued,
                Some(Kind::Dispatched(d)) => Seen::Dispatched {
                    node: d.node,
                    prompt_id: d.prompt_id,
                    attempt: d.attempt,
                },
                Some(Kind::Started(_)) => Seen::Started,
                Some(Kind::Retrying(_)) => Seen::Retrying,
                Some(Kind::Succeeded(_)) => Seen::Succeeded,
                Some(Kind::Failed(failed)) => Seen::Failed(
                    failed
                        .failure
                        .map(|failure| failure.message)
                        .unwrap_or_default(),
                ),
                Some(Kind::Cancelled(_)) => Seen::Cancelled,
                _ => Seen::Other,
            };
            let terminal = match &kind {
                Seen::Succeeded => Some(Outcome::Succeeded),
                Seen::Failed(message) => Some(Outcome::Failed(message.clone())),
                Seen::Cancelled => Some(Outcome::Cancelled),
                _ => None,
            };
            trace.events.push(EventSeen {
                kind,
                received,
                appended,
            });
            if let Some(outcome) = terminal {
                return Ok(outcome);
            }
        }
        Err("watch stream ended before a terminal event".to_owned())
    })
    .await;
    trace.outcome = match result {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(message)) => Outcome::Unfinished(message),
        Err(_) => Outcome::Unfinished("deadline passed".into()),
    };
    trace
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_maps_wall_times_onto_instants() {
        let clock = Clock::now();
        let later = prost_types::Timestamp::from(clock.wall + Duration::from_millis(250));
        let earlier = prost_types::Timestamp::from(clock.wall - Duration::from_millis(100));
        assert_eq!(
            clock.instant_of(&later),
            Some(clock.instant + Duration::from_millis(250))
        );
        assert_eq!(
            clock.instant_of(&earlier),
            Some(clock.instant - Duration::from_millis(100))
        );
    }
}
