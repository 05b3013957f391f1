//! Backpressure at submit: a bounded queue, all tenants together and per tenant.
//!
//! A submission takes a [`Permit`] before its job is written to the journal, and gives it back
//! once the manager has queued the job. The check and the reservation happen under one lock
//! against "jobs in the queue + permits held", and the manager counts a job into the queue
//! before the permit that admitted it is returned, so new submissions can never push the
//! queue past a limit, however many arrive at once: the bound is exact, not "limit plus
//! in-flight submits".
//!
//! NOTE: jobs that come back to the queue without a submission (a retry after a failed
//! attempt, or unfinished jobs recovered at startup) are not refused, so they may take the
//! queue above a limit for a while; new submissions are then refused until it drains.
//!
//! A refusal carries a hint of when to try again, estimated from how fast jobs left the
//! queue recently (see [`Admission::retry_after`]).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How many recent departures from the queue the throughput estimate looks at.
const RATE_SAMPLES: usize = 128;
/// Departures older than this say nothing about the current rate.
const RATE_WINDOW: Duration = Duration::from_secs(120);
/// The hint when no job left the queue recently (nothing to estimate from).
const DEFAULT_RETRY: Duration = Duration::from_secs(5);
/// The longest hint given.
const MAX_RETRY: Duration = Duration::from_secs(300);

/// Why a submission was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionError {
    /// The queue of all tenants is full.
    #[error(
        "queue full: {queued} jobs waiting, limit limits.max_queued_jobs is {limit}; retry in about {}s",
        retry_after.as_secs()
    )]
    QueueFull {
        /// Jobs waiting or being admitted.
        queued: u64,
        /// The limit.
        limit: u64,
        /// When a retry is likely to be admitted.
        retry_after: Duration,
    },
    /// The tenant's share of the queue is full.
    #[error(
        "tenant {tenant}: {queued} jobs waiting, limit limits.max_queued_jobs_per_tenant is {limit}; retry in about {}s",
        retry_after.as_secs()
    )]
    TenantFull {
        /// The tenant.
        tenant: String,
        /// The tenant's jobs waiting or being admitted.
        queued: u64,
        /// The limit.
        limit: u64,
        /// When a retry is likely to be admitted.
        retry_after: Duration,
    },
}

impl AdmissionError {
    /// When a retry is likely to be admitted (whole seconds, at least one).
    pub fn retry_after(&self) -> Duration {
        match self {
            Self::QueueFull { retry_after, .. } | Self::TenantFull { retry_after, .. } => {
                *retry_after
            }
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    queued: u64,
    reserved: u64,
    by_tenant: HashMap<String, (u64, u64)>,
    departures: VecDeque<Instant>,
}

/// The shared admission state: limits, queue counts kept by the manager, and permits held.
#[derive(Debug)]
pub struct Admission {
    max_total: u64,
    max_per_tenant: u64,
    counts: Mutex<Counts>,
}

/// A reserved place in the queue; returned when dropped.
#[derive(Debug)]
pub struct Permit {
    admission: Arc<Admission>,
    tenant: String,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut counts = self.admission.lock();
        counts.reserved = counts.reserved.saturating_sub(1);
        if let Some(entry) = counts.by_tenant.get_mut(&self.tenant) {
            entry.1 = entry.1.saturating_sub(1);
            if *entry == (0, 0) {
                counts.by_tenant.remove(&self.tenant);
            }
        }
    }
}

impl Admission {
    /// Limits of the whole queue and of each tenant's share of it.
    pub fn new(max_total: u64, max_per_tenant: u64) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_tenant,
            counts: Mutex::new(Counts::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Counts> {
        self.counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reserves a place in the queue for a job of `tenant`, or says which limit is reached.
    pub fn admit(self: &Arc<Self>, tenant: &str) -> Result<Permit, AdmissionError> {
        let mut counts = self.lock();
        let total = counts.queued + counts.reserved;
        if total >= self.max_total {
            return Err(AdmissionError::QueueFull {
                queued: total,
                limit: self.max_total,
                retry_after: retry_after(&counts, total + 1 - self.max_total, self.max_total),
            });
        }
        let (queued, reserved) = counts.by_tenant.get(tenant).copied().unwrap_or_default();
        if queued + reserved >= self.max_per_tenant {
            return Err(AdmissionError::TenantFull {
                tenant: tenant.to_owned(),
                queued: queued + reserved,
                limit: self.max_per_tenant,
                retry_after: retry_after(
                    &counts,
                    queued + reserved + 1 - self.max_per_tenant,
                    self.max_per_tenant,
                ),
            });
        }
        counts.reserved += 1;
        counts.by_tenant.entry(tenant.to_owned()).or_default().1 += 1;
        Ok(Permit {
            admission: Arc::clone(self),
            tenant: tenant.to_owned(),
        })
    }

    /// The manager put a job of `tenant` into the queue.
    pub(super) fn joined(&self, tenant: &str) {
        let mut counts = self.lock();
        counts.queued += 1;
        counts.by_tenant.entry(tenant.to_owned()).or_default().0 += 1;
    }

    /// The manager took a job of `tenant` out of the queue; `dispatched` when it went to a
    /// node (which is what the throughput estimate measures).
    pub(super) fn left(&self, tenant: &str, dispatched: bool) {
        let mut counts = self.lock();
        counts.queued = counts.queued.saturating_sub(1);
        if let Some(entry) = counts.by_tenant.get_mut(tenant) {
            entry.0 = entry.0.saturating_sub(1);
            if *entry == (0, 0) {
                counts.by_tenant.remove(tenant);
            }
        }
        if dispatched {
            if counts.departures.len() == RATE_SAMPLES {
                counts.departures.pop_front();
            }
            counts.departures.push_back(Instant::now());
        }
    }

    /// Jobs in the queue and places reserved, all tenants together.
    pub fn queued(&self) -> u64 {
        let counts = self.lock();
        counts.queued + counts.reserved
    }
}

/// How long until `excess` jobs (at least a tenth of `limit`, so that refused clients do not
/// all come back at the same instant for one free place) have left the queue at the recent
/// rate, in whole seconds between 1 and [`MAX_RETRY`].
fn retry_after(counts: &Counts, excess: u64, limit: u64) -> Duration {
    let now = Instant::now();
    let recent: Vec<&Instant> = counts
        .departures
        .iter()
        .filter(|at| now.duration_since(**at) <= RATE_WINDOW)
        .collect();
    let (Some(first), true) = (recent.first(), recent.len() >= 2) else {
        return DEFAULT_RETRY;
    };
    let span = now.duration_since(**first).as_secs_f64().max(0.001);
    let rate = recent.len() as f64 / span;
    let wanted = excess.max(limit / 10).max(1) as f64;
    let seconds = (wanted / rate).ceil().clamp(1.0, MAX_RETRY.as_secs_f64());
    Duration::from_secs(seconds as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_count_until_returned_and_limits_are_exact() {
        let admission = Admission::new(3, 2);
        let a1 = admission.admit("a").expect("first");
        let a2 = admission.admit("a").expect("second");
        let refused = admission.admit("a").expect_err("tenant a is at its limit");
        assert!(matches!(
            refused,
            AdmissionError::TenantFull {
                queued: 2,
                limit: 2,
                ..
            }
        ));
        assert!(refused.to_string().contains("max_queued_jobs_per_tenant"));
        let b1 = admission.admit("b").expect("another tenant");
        let full = admission.admit("c").expect_err("the queue is full");
        assert!(matches!(
            full,
            AdmissionError::QueueFull {
                queued: 3,
                limit: 3,
                ..
            }
        ));
        // The manager queues a's job before the permit returns: still counted once.
        admission.joined("a");
        drop(a1);
        assert_eq!(admission.queued(), 3);
        assert!(admission.admit("c").is_err());
        admission.left("a", true);
        let c1 = admission.admit("c").expect("a place freed");
        drop((a2, b1, c1));
        assert_eq!(admission.queued(), 0);
    }

    #[test]
    fn the_retry_hint_follows_recent_throughput() {
        let admission = Admission::new(10, 10);
        assert_eq!(
            retry_after(&admission.lock(), 1, 10),
            DEFAULT_RETRY,
            "no departures: the default"
        );
        {
            let mut counts = admission.lock();
            let now = Instant::now();
            // Ten departures over the last ten seconds: one per second.
            for back in (1..=10).rev() {
                counts.departures.push_back(now - Duration::from_secs(back));
            }
        }
        let hint = retry_after(&admission.lock(), 5, 10);
        assert!(
            (Duration::from_secs(4)..=Duration::from_secs(6)).contains(&hint),
            "five jobs at one per second: {hint:?}"
        );
    }
}
