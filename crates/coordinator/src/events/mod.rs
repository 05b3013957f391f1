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
//! [`Lagged`] carrying the oldest sequence still retained; its cursor then jumps to just before
//! that event, so its next read continues from the oldest retained event. The service is
//! expected to send the job's current snapshot (from the job record) at that point, so the
//! caller sees a consistent state even though it missed intermediate events. The same happens to
//! a watcher resuming from a cursor that was never issued by this log (e.g. from before a
//! coordinator restart).
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
#[error("watcher fell behind: oldest retained event is {oldest_retained}")]
pub struct Lagged {
    /// The oldest sequence number still in the log.
    pub oldest_retained: u64,
}
