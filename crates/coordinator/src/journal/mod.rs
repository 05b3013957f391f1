//! The durable job journal.
//!
//! Once the coordinator answers a submission with a job id, the job must survive a crash or a
//! restart. The journal records every job before that answer and every state change after it
//! (a dispatch before its POST), and hands back, on start, the jobs that had not finished, in
//! queue order. [`JobStore`] is the seam: [`SqliteStore`] is the embedded default, and a shared
//! server database for several coordinators can implement the same trait later.
//!
//! The trait returns boxed futures so it can be used as `Arc<dyn JobStore>`; implementations
//! must keep blocking I/O off the async workers (a dedicated thread, `spawn_blocking`).

mod codec;
mod schema;
mod sqlite;
mod writer;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::SystemTime;

pub use sqlite::{SqliteOptions, SqliteStore};

use crate::job::{Job, JobError, JobId, JobState, StateChange};

/// A boxed future returned by [`JobStore`] methods.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, JournalError>> + Send + 'a>>;

/// Default number of jobs per page when a query asks for 0.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// Largest page a query may ask for; larger requests are clamped.
pub const MAX_PAGE_SIZE: u32 = 1000;

/// Stores jobs durably.
pub trait JobStore: Send + Sync + 'static {
    /// Stores a new queued job; resolves once it is durable.
    ///
    /// If the job has an idempotency key already used by the same tenant, nothing is written
    /// and the first job is returned (`created == false`); a different workflow under the same
    /// key is refused with [`JournalError::IdempotencyConflict`]. The check and the insert are
    /// atomic, so concurrent submissions with one key create one job.
    fn insert(&self, job: Job) -> StoreFuture<'_, Inserted>;

    /// Applies a state change to a stored job (checked by the job state machine) and returns
    /// the job as stored; resolves once the change is durable. The job manager keeps no
    /// workflow bytes in memory and posts the bytes a dispatch returns, so only a dispatch
    /// returns the workflow and prompt extras: after any other change `spec.workflow` is
    /// empty and `spec.extras` is `None`.
    fn record(&self, id: JobId, change: StateChange, at: SystemTime) -> StoreFuture<'_, Job>;

    /// Returns one job with its workflow, if it is stored.
    fn get(&self, id: JobId) -> StoreFuture<'_, Option<Job>>;

    /// Returns one page of jobs, newest first, matching the query.
    fn list(&self, query: ListQuery) -> StoreFuture<'_, JobPage>;

    /// Returns every job that has not finished, in queue order: priority descending, then
    /// arrival ascending. Used to rebuild the queue and reconcile nodes after a restart.
    /// Queued jobs come without their workflow and prompt extras (empty and `None`; a
    /// dispatch reads them back), so the memory this takes does not grow with the size of
    /// the queued workflows; jobs on nodes come whole.
    fn load_unfinished(&self) -> StoreFuture<'_, Vec<Job>>;

    /// Deletes jobs that finished before `finished_before`; returns how many.
    fn purge_finished(&self, finished_before: SystemTime) -> StoreFuture<'_, u64>;

    /// Returns the number of stored jobs in each state (every state present, 0 if none).
    fn count_by_state(&self) -> StoreFuture<'_, BTreeMap<JobState, u64>>;

    /// Records that an operator drained (`true`) or undrained the node `name`; resolves once
    /// durable, so a restart keeps the node as the operator left it.
    fn set_drained(&self, name: String, drained: bool) -> StoreFuture<'_, ()>;

    /// Returns the names of the nodes an operator drained and did not undrain.
    fn drained_nodes(&self) -> StoreFuture<'_, BTreeSet<String>>;
}

/// The outcome of [`JobStore::insert`].
#[derive(Clone, Debug, PartialEq)]
pub struct Inserted {
    /// The stored job: the one inserted, or the earlier one with the same idempotency key.
    pub job: Job,
    /// Whether this call created the job.
    pub created: bool,
}

/// Selects jobs for [`JobStore::list`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// Only jobs in these states; empty for all.
    pub states: Vec<JobState>,
    /// Only this tenant's jobs; `None` for all.
    pub tenant: Option<String>,
    /// Jobs per page; 0 means [`DEFAULT_PAGE_SIZE`], larger than [`MAX_PAGE_SIZE`] is clamped.
    pub page_size: u32,
    /// The `next_page_token` of the previous page; `None` for the first page.
    pub page_token: Option<String>,
    /// Whether to load workflows. When false, each returned job's `spec.workflow` is empty,
    /// which keeps listings cheap when workflows are megabytes.
    pub with_workflow: bool,
}

/// One page of [`JobStore::list`].
#[derive(Clone, Debug, PartialEq)]
pub struct JobPage {
    /// The jobs, newest first.
    pub jobs: Vec<Job>,
    /// The token for the next page; `None` on the last page. Opaque to callers.
    pub next_page_token: Option<String>,
}

/// Errors of the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The journal file could not be opened or prepared.
    #[error("journal {path}: cannot open: {cause}")]
    Open {
        /// The journal file.
        path: PathBuf,
        /// Why.
        cause: String,
    },
    /// The file was written by a newer version with a schema this one does not know.
    #[error("journal {path}: schema version {found} is newer than supported version {supported}")]
    SchemaTooNew {
        /// The journal file.
        path: PathBuf,
        /// The file's schema version.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// A database operation failed.
    #[error("journal: {context}: {source}")]
    Sqlite {
        /// What the journal was doing.
        context: &'static str,
        /// The driver's error.
        source: rusqlite::Error,
    },
    /// A transaction could not be committed; none of its operations took effect.
    #[error("journal: commit failed: {0}")]
    CommitFailed(String),
    /// No job with this id is stored.
    #[error("job {0}: not found in the journal")]
    NotFound(JobId),
    /// A job offered for insertion was not in the queued state.
    #[error("job {0}: only queued jobs can be inserted")]
    NotQueued(JobId),
    /// The state machine refused a change.
    #[error(transparent)]
    Transition(#[from] JobError),
    /// An idempotency key reused with a different workflow.
    #[error(
        "tenant {tenant}: idempotency key {key:?} already names job {job} with another workflow"
    )]
    IdempotencyConflict {
        /// The tenant.
        tenant: String,
        /// The key.
        key: String,
        /// The job the key already names.
        job: JobId,
    },
    /// A page token this journal did not issue.
    #[error("journal: bad page token {0:?}")]
    BadPageToken(String),
    /// A stored row that cannot be decoded.
    #[error("journal: job {id}: corrupt row: {cause}")]
    Corrupt {
        /// The row's job id, as stored.
        id: String,
        /// What is wrong with it.
        cause: String,
    },
    /// The writer thread is gone (the store was closed or the thread failed).
    #[error("journal: writer stopped")]
    WriterStopped,
    /// A blocking read task failed.
    #[error("journal: read task failed: {0}")]
    ReadTask(String),
}

impl JournalError {
    /// Whether the same write may succeed if tried again (the disk or SQLite failed), as
    /// opposed to a write the journal refuses as such (unknown job, illegal transition).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Sqlite { .. } | Self::CommitFailed(_) | Self::ReadTask(_)
        )
    }

    pub(crate) fn sqlite(context: &'static str) -> impl FnOnce(rusqlite::Error) -> Self {
        move |source| Self::Sqlite { context, source }
    }
}
