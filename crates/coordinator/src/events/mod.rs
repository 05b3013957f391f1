//! Per-job event logs with fan-out to watchers.
//!
//! A node's WebSocket reader appends events for many jobs and must never wait for a watcher, and
//! a watcher that reconnects must be able to resume where it stopped. Each job therefore gets a
//! bounded in-memory [`EventLog`]: events are numbered 1, 2, 3, ... and kept in a ring of fixed
//! size; appending takes a short lock, pushes, and bumps a `tokio::sync::watch` version that
//! wakes every waiting watcher. Each [`Watcher`] owns its cursor (the last sequence it read), so
//! a slow watcher slows nobody else.
//!
//! # What happens to a slow watcher
//!
//! The log never blocks the appender and never grows past its capacity. A watcher that falls so
//! far behind that the event after its cursor has been evicted gets
//! [`Lagged`] naming the missing range (from the event after its cursor to the one before the
//! oldest still retained); its cursor then jumps to just before the oldest retained event, so
//! its next read continues from there. The service is expected to send the job's current
//! snapshot (from the job record) at that point, so the caller sees a consistent state even
//! though it missed intermediate events. A missing range is never empty or backwards.
//!
//! # Resuming
//!
//! A watcher may start after a sequence number it read before ([`WatchFrom::After`]). A number
//! beyond the newest event appended so far is refused with [`EventLogError::AheadOfLog`]: no
//! watcher can have read an event that does not exist yet, and waiting for the job to get
//! that far would silently skip every event in between.
//!
//! Numbers stay unique across restarts. A job taken back from the journal after a restart
//! gets a new log, numbered on from a base above anything an earlier run gave out
//! ([`EventHub::open_resumed`]); a watcher resuming with a number from before the restart is
//! told that the events between it and the new base are gone ([`Lagged`]), gets the job's
//! snapshot, and reads on. Events themselves are not journaled: what happened on the node
//! while the coordinator was down is summed up by that snapshot.
//!
//! # Previews
//!
//! Preview images are large, frequent and superseded by the next one, so they are kept out of
//! the numbered sequence: the log holds only the latest preview, and only watchers that asked
//! for previews see it. A slow preview watcher skips intermediate previews instead of lagging.
//!
//! # Closing and retention
//!
//! A terminal event closes the log: nothing can be appended afterwards, and watchers finish once
//! they have read it. [`EventHub`] maps job ids to logs and drops closed logs after a retention
//! time so late watchers can still read how a job ended.

mod hub;
mod log;

#[cfg(test)]
mod tests;

pub use hub::{EventHub, EventHubConfig};
pub use log::{EventLog, SequencedEvent, WatchFrom, WatchItem, Watcher};

use crate::job::JobId;

/// Errors of the event log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventLogError {
    /// An append after the terminal event.
    #[error("job {job}: event log is closed")]
    Closed {
        /// The job.
        job: JobId,
    },
    /// A watcher asked to start after a sequence number the log has not reached.
    #[error("job {job}: after_sequence {after} is beyond the job's last event {last}")]
    AheadOfLog {
        /// The job.
        job: JobId,
        /// The sequence number the watcher asked to start after.
        after: u64,
        /// The newest sequence number of the log (0 for none).
        last: u64,
    },
    /// A new watcher beyond the per-job limit.
    #[error("job {job}: too many watchers (limit {max})")]
    TooManyWatchers {
        /// The job.
        job: JobId,
        /// The configured limit.
        max: usize,
    },
}

/// Tells a watcher that the events after its cursor are gone from the bounded log.
///
/// The watcher's cursor has already moved to just before `oldest_retained`; reading on yields
/// events from there. See the module docs for what the service should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("watcher fell behind: events {first_missing} to {} were evicted", self.last_missing())]
pub struct Lagged {
    /// The first sequence number the watcher will not read: the one after its cursor.
    first_missing: u64,
    /// The oldest sequence number still in the log.
    oldest_retained: u64,
}

impl Lagged {
    /// Events `first_missing..oldest_retained` were evicted; the range is never empty.
    pub(crate) fn new(first_missing: u64, oldest_retained: u64) -> Self {
        debug_assert!(
            first_missing < oldest_retained,
            "a lag names at least one missing event: {first_missing}..{oldest_retained}"
        );
        Self {
            first_missing,
            oldest_retained,
        }
    }

    /// The first sequence number the watcher missed.
    pub fn first_missing(&self) -> u64 {
        self.first_missing
    }

    /// The last sequence number the watcher missed (inclusive); never before
    /// [`first_missing`](Self::first_missing).
    pub fn last_missing(&self) -> u64 {
        self.oldest_retained - 1
    }

    /// The oldest sequence number still in the log: the next event the watcher reads.
    pub fn oldest_retained(&self) -> u64 {
        self.oldest_retained
    }
}
