//! The registry of event logs, by job.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::time::Instant;

use super::EventLog;
use crate::job::JobId;

/// Sizes and lifetimes of the logs an [`EventHub`] creates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventHubConfig {
    /// Events kept per job; older ones are evicted. Default 1024.
    pub capacity: usize,
    /// Watchers admitted per job at a time. Default 64.
    pub max_watchers: usize,
    /// How long a closed log stays readable. Default 10 minutes.
    pub retention: Duration,
}

impl Default for EventHubConfig {
    fn default() -> Self {
        Self {
            capacity: 1024,
            max_watchers: 64,
            retention: Duration::from_secs(600),
        }
    }
}

/// Maps job ids to their event logs.
///
/// NOTE: the bound is per job: memory grows with the number of jobs whose logs are open
/// (queued or running, plus closed ones within retention). Queued jobs should hold few events,
/// so the global queue limit bounds this in practice.
#[derive(Debug, Default)]
pub struct EventHub {
    config: EventHubConfig,
    logs: Mutex<HashMap<JobId, Arc<EventLog>>>,
}

impl EventHub {
    /// Creates an empty hub.
    pub fn new(config: EventHubConfig) -> Self {
        Self {
            config,
            logs: Mutex::new(HashMap::new()),
        }
    }

    /// Returns the job's log, creating an empty one if there is none.
    pub fn open(&self, job_id: JobId) -> Arc<EventLog> {
        self.open_numbered_after(job_id, 0)
    }

    /// Returns the job's log, creating one numbered after `run << 32` if there is none: for a
    /// job taken back from the journal by run `run` (see
    /// [`SqliteStore::run`](crate::journal::SqliteStore::run)).
    ///
    /// An earlier run numbered this job's events from 1, or from its own base, and no run
    /// numbers 2^32 events of one job; so the numbers only ever grow across restarts. A
    /// watcher that resumes with a number from before the restart is told the events in
    /// between are gone and gets the job's snapshot, instead of having its number refused or,
    /// worse, taken for an unrelated event of the new run.
    pub fn open_resumed(&self, job_id: JobId, run: u64) -> Arc<EventLog> {
        self.open_numbered_after(job_id, run.saturating_mul(1 << 32))
    }

    fn open_numbered_after(&self, job_id: JobId, base: u64) -> Arc<EventLog> {
        let mut logs = self.lock();
        let log = logs.entry(job_id).or_insert_with(|| {
            Arc::new(EventLog::numbered_after(
                job_id,
                self.config.capacity,
                self.config.max_watchers,
                base,
            ))
        });
        Arc::clone(log)
    }

    /// Returns the job's log if there is one.
    pub fn get(&self, job_id: JobId) -> Option<Arc<EventLog>> {
        self.lock().get(&job_id).cloned()
    }

    /// Removes the job's log; watchers already attached keep reading it.
    pub fn remove(&self, job_id: JobId) -> Option<Arc<EventLog>> {
        self.lock().remove(&job_id)
    }

    /// Returns the number of logs held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Returns whether the hub holds no logs.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Removes every log closed longer ago than the retention; returns how many.
    pub fn purge_expired(&self) -> usize {
        let now = Instant::now();
        let retention = self.config.retention;
        let mut logs = self.lock();
        let before = logs.len();
        logs.retain(|_, log| {
            log.closed_at()
                .is_none_or(|closed| now.saturating_duration_since(closed) < retention)
        });
        let purged = before - logs.len();
        if purged > 0 {
            tracing::debug!(purged, remaining = logs.len(), "expired event logs purged");
        }
        purged
    }

    /// Purges expired logs every `period` until the hub is dropped. Spawn it as a task.
    pub async fn run_purger(hub: Weak<EventHub>, period: Duration) {
        let mut ticker = tokio::time::interval(period.max(Duration::from_millis(1)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let Some(hub) = hub.upgrade() else { return };
            hub.purge_expired();
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<JobId, Arc<EventLog>>> {
        // The map stays consistent across a panic elsewhere; keep using it.
        self.logs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
