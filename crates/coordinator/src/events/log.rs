//! One job's bounded event log and its watchers.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use tokio::sync::watch;
use tokio::time::Instant;

use super::{EventLogError, Lagged};
use crate::job::{JobEvent, JobId};

/// One event with its place in the job's sequence.
#[derive(Clone, Debug, PartialEq)]
pub struct SequencedEvent {
    /// The event's sequence number: 1 for the job's first event, then 2, 3, ... (for a job
    /// taken back after a restart, counting on from a base above the earlier run's numbers).
    pub sequence: u64,
    /// When the coordinator appended it.
    pub at: SystemTime,
    /// The event, shared between all watchers that read it.
    pub event: Arc<JobEvent>,
}

/// What a watcher reads next.
#[derive(Clone, Debug, PartialEq)]
pub enum WatchItem {
    /// The next event of the sequence.
    Event(SequencedEvent),
    /// The latest preview image (only for watchers that asked for previews).
    Preview(Arc<JobEvent>),
}

/// Where a new watcher starts reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchFrom {
    /// From the oldest event still retained: a replay of the job's history, then live events.
    Oldest,
    /// After this sequence number: resuming a watch that already read it.
    After(u64),
    /// From the next event appended: live events only. The service should subscribe first and
    /// read the job's snapshot afterwards, so that nothing falls between the two.
    Live,
}

/// The mutable part of a log, behind its mutex.
#[derive(Debug)]
struct LogState {
    /// Retained events, oldest first, with consecutive sequence numbers.
    events: VecDeque<SequencedEvent>,
    /// The sequence number of the newest event ever appended (0 for none).
    last_sequence: u64,
    /// The latest preview and its number (previews are numbered 1, 2, ... on their own).
    preview: Option<(u64, Arc<JobEvent>)>,
    /// When the terminal event was appended.
    closed_at: Option<Instant>,
}

impl LogState {
    fn oldest_retained(&self) -> u64 {
        self.events
            .front()
            .map_or(self.last_sequence + 1, |e| e.sequence)
    }
}

/// A bounded, append-only log of one job's events with any number of watchers.
#[derive(Debug)]
pub struct EventLog {
    job_id: JobId,
    capacity: usize,
    max_watchers: usize,
    state: Mutex<LogState>,
    /// Bumped on every append, preview and close; every watcher holds a receiver. The log owns
    /// the sender, and watchers hold an `Arc` of the log, so it outlives them.
    changed_tx: watch::Sender<()>,
    num_watchers: AtomicUsize,
}

impl EventLog {
    /// Creates an empty log keeping at most `capacity` events (at least 1) and admitting at most
    /// `max_watchers` watchers at a time.
    pub fn new(job_id: JobId, capacity: usize, max_watchers: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            job_id,
            capacity,
            max_watchers,
            state: Mutex::new(LogState {
                // Start empty: a queued job holds one or two events for as long as it waits,
                // and a deep queue (100,000 jobs) would otherwise pay for room it never uses.
                events: VecDeque::new(),
                last_sequence: 0,
                preview: None,
                closed_at: None,
            }),
            changed_tx: watch::Sender::new(()),
            num_watchers: AtomicUsize::new(0),
        }
    }

    /// Creates an empty log whose first event is numbered `after + 1`: for a job taken back
    /// after a restart, whose earlier events were numbered by another run (see
    /// [`EventHub::open_resumed`](super::EventHub::open_resumed)). A watcher resuming from a
    /// number at most `after` is told the events up to `after` are missing, then reads on.
    pub fn numbered_after(job_id: JobId, capacity: usize, max_watchers: usize, after: u64) -> Self {
        let log = Self::new(job_id, capacity, max_watchers);
        log.lock().last_sequence = after;
        log
    }

    /// Returns the job this log belongs to.
    pub fn job_id(&self) -> JobId {
        self.job_id
    }

    /// Appends an event and wakes the watchers; never waits for them.
    ///
    /// Returns the event's sequence number, or `None` for a preview image, which is kept out of
    /// the sequence (see the module docs). A terminal event closes the log; appending to a
    /// closed log fails with [`EventLogError::Closed`].
    pub fn append(&self, event: JobEvent) -> Result<Option<u64>, EventLogError> {
        let sequence = {
            let mut state = self.lock();
            if state.closed_at.is_some() {
                return Err(EventLogError::Closed { job: self.job_id });
            }
            if event.is_preview() {
                let number = state.preview.as_ref().map_or(1, |(n, _)| n + 1);
                state.preview = Some((number, Arc::new(event)));
                None
            } else {
                let terminal = event.is_terminal();
                state.last_sequence += 1;
                let sequence = state.last_sequence;
                if state.events.len() == self.capacity {
                    state.events.pop_front();
                }
                state.events.push_back(SequencedEvent {
                    sequence,
                    at: SystemTime::now(),
                    event: Arc::new(event),
                });
                if terminal {
                    state.closed_at = Some(Instant::now());
                }
                debug_assert!(
                    state.events.len() <= self.capacity,
                    "log stays within capacity"
                );
                Some(sequence)
            }
        };
        // Outside the lock: wake every watcher. `send_modify` notifies even with no receivers.
        self.changed_tx.send_modify(|_| ());
        tracing::trace!(job_id = %self.job_id, ?sequence, "event appended");
        Ok(sequence)
    }

    /// Starts a watcher at `from`; with `previews` it also receives preview images.
    ///
    /// Fails with [`EventLogError::AheadOfLog`] for [`WatchFrom::After`] a sequence number the
    /// log has not reached, and with [`EventLogError::TooManyWatchers`] at the watcher limit.
    pub fn watch(
        self: &Arc<Self>,
        from: WatchFrom,
        previews: bool,
    ) -> Result<Watcher, EventLogError> {
        // Subscribe before reading the cursor so no append can fall in between unseen.
        let changed_rx = self.changed_tx.subscribe();
        let (after, seen_preview) = {
            let state = self.lock();
            let after = match from {
                WatchFrom::Oldest => state.oldest_retained() - 1,
                WatchFrom::After(n) if n > state.last_sequence => {
                    return Err(EventLogError::AheadOfLog {
                        job: self.job_id,
                        after: n,
                        last: state.last_sequence,
                    });
                }
                WatchFrom::After(n) => n,
                WatchFrom::Live => state.last_sequence,
            };
            // A live watcher does not want the preview that is already there.
            let seen_preview = match from {
                WatchFrom::Live => state.preview.as_ref().map_or(0, |(n, _)| *n),
                _ => 0,
            };
            (after, seen_preview)
        };
        let admitted = self
            .num_watchers
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_watchers).then_some(n + 1)
            });
        if admitted.is_err() {
            return Err(EventLogError::TooManyWatchers {
                job: self.job_id,
                max: self.max_watchers,
            });
        }
        Ok(Watcher {
            log: Arc::clone(self),
            after,
            previews,
            seen_preview,
            changed_rx,
        })
    }

    /// Returns the sequence number of the newest event (0 if none).
    pub fn last_sequence(&self) -> u64 {
        self.lock().last_sequence
    }

    /// Returns the oldest sequence number still retained (`last_sequence + 1` if none).
    pub fn oldest_retained(&self) -> u64 {
        self.lock().oldest_retained()
    }

    /// Returns a copy of every retained event, oldest first.
    pub fn retained(&self) -> Vec<SequencedEvent> {
        self.lock().events.iter().cloned().collect()
    }

    /// Returns when the log was closed by a terminal event, if it was.
    pub fn closed_at(&self) -> Option<Instant> {
        self.lock().closed_at
    }

    /// Returns the number of watchers currently attached.
    pub fn num_watchers(&self) -> usize {
        self.num_watchers.load(Ordering::Acquire)
    }

    fn lock(&self) -> MutexGuard<'_, LogState> {
        // A panic while holding this lock cannot leave the state half-updated in a way that
        // matters more than losing the log, so a poisoned lock is used as is.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Reads one job's events in order from its own cursor.
///
/// Dropping a watcher detaches it from the log (freeing its place under the watcher limit).
#[derive(Debug)]
pub struct Watcher {
    log: Arc<EventLog>,
    /// The last sequence number this watcher has read.
    after: u64,
    previews: bool,
    /// The number of the last preview this watcher has read.
    seen_preview: u64,
    changed_rx: watch::Receiver<()>,
}

impl Watcher {
    /// Waits for and returns the next item: the event after the cursor, else a newer preview
    /// (if asked for), else waits. Returns `Some(Err(Lagged))` once when the event after the
    /// cursor has been evicted (the cursor then moves to the oldest retained event), and `None`
    /// after the terminal event has been read.
    ///
    /// Cancel-safe: dropping the future loses nothing.
    pub async fn next(&mut self) -> Option<Result<WatchItem, Lagged>> {
        loop {
            // Mark the current version seen before looking, so an append that happens after the
            // look wakes the wait below.
            self.changed_rx.borrow_and_update();
            if let Some(item) = self.try_next() {
                return item;
            }
            if self.changed_rx.changed().await.is_err() {
                // The sender lives in the log we hold, so this cannot happen; end cleanly.
                return None;
            }
        }
    }

    /// Returns the next item if one is ready, without waiting: `None` when nothing is ready,
    /// `Some(None)` when the log is closed and fully read.
    pub fn try_next(&mut self) -> Option<Option<Result<WatchItem, Lagged>>> {
        let state = self.log.lock();
        let oldest = state.oldest_retained();

        // A cursor only ever names an event the log issued: `watch` refuses one ahead of the
        // log, and reading moves it to an existing event or to just before the oldest one.
        debug_assert!(
            self.after <= state.last_sequence,
            "cursor {} is beyond the last event {}",
            self.after,
            state.last_sequence
        );

        // The wanted event was evicted.
        if self.after + 1 < oldest {
            let lagged = Lagged::new(self.after + 1, oldest);
            self.after = oldest - 1;
            tracing::debug!(
                job_id = %self.log.job_id,
                first_missing = lagged.first_missing(),
                oldest_retained = oldest,
                "watcher lagged"
            );
            return Some(Some(Err(lagged)));
        }

        if self.after < state.last_sequence {
            let index = (self.after + 1 - oldest) as usize;
            let event = state.events[index].clone();
            debug_assert_eq!(
                event.sequence,
                self.after + 1,
                "retained events are consecutive"
            );
            self.after = event.sequence;
            return Some(Some(Ok(WatchItem::Event(event))));
        }

        // A preview older than the terminal event is of no use any more.
        if state.closed_at.is_some() {
            return Some(None);
        }

        if self.previews
            && let Some((number, preview)) = &state.preview
            && *number > self.seen_preview
        {
            self.seen_preview = *number;
            return Some(Some(Ok(WatchItem::Preview(Arc::clone(preview)))));
        }
        None
    }

    /// Returns the last sequence number this watcher has read.
    pub fn cursor(&self) -> u64 {
        self.after
    }

    /// Returns the log this watcher reads.
    pub fn log(&self) -> &Arc<EventLog> {
        &self.log
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.log.num_watchers.fetch_sub(1, Ordering::AcqRel);
    }
}
