//! The embedded SQLite job store.
//!
//! One file (`journal.sqlite3` under the data directory) in WAL mode. Writes go through the
//! single writer thread in [`super::writer`], which batches them into group commits; reads run
//! on `spawn_blocking` over a small pool of read connections, which WAL lets proceed alongside
//! the writer. No SQLite call ever runs on an async worker.
//!
//! Durability: `synchronous=FULL`. In WAL mode `NORMAL` survives a process crash but may lose
//! the last commits on power loss or an OS crash; the coordinator promises that an accepted job
//! cannot be lost, so every commit is fsynced. Group commit shares that fsync among all the
//! operations of a batch, which keeps throughput high under load.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rusqlite::{Connection, OpenFlags, params_from_iter};
use tokio::sync::{mpsc, oneshot};

use super::codec::{self, JOB_COLUMNS, JOB_COLUMNS_NO_WORKFLOW, JOB_COLUMNS_ON_NODES_WHOLE};
use super::writer::{self, PURGE_CHUNK, WriteOp};
use super::{
    DEFAULT_PAGE_SIZE, Inserted, JobPage, JobStore, JournalError, ListQuery, MAX_PAGE_SIZE,
    StoreFuture, schema,
};
use crate::job::{Job, JobId, JobState, StateChange};

/// The journal's file name inside the data directory.
pub const JOURNAL_FILE_NAME: &str = "journal.sqlite3";

/// Tuning of a [`SqliteStore`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SqliteOptions {
    /// Operations that may wait for the writer before callers are held back. Default 8192.
    pub write_queue: usize,
    /// Read connections kept open for reuse. Default 4.
    pub max_idle_readers: usize,
    /// How long a connection waits for a lock held by another process. Default 5 s.
    pub busy_timeout: Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            write_queue: 8192,
            max_idle_readers: 4,
            busy_timeout: Duration::from_secs(5),
        }
    }
}

/// A [`JobStore`] in one SQLite file. Cheap to clone; clones share the writer.
///
/// The writer thread stops once every clone is dropped (after finishing the operations already
/// sent).
#[derive(Clone, Debug)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// This run's number (see [`SqliteStore::run`]).
    run: u64,
    path: PathBuf,
    options: SqliteOptions,
    /// Sends operations to the writer thread; dropping the last one stops the thread.
    ops_tx: mpsc::Sender<WriteOp>,
    /// Idle read connections.
    readers: Mutex<Vec<Connection>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the journal in `data_dir`, creating the directory too.
    pub fn open_in_dir(data_dir: &Path, options: SqliteOptions) -> Result<Self, JournalError> {
        std::fs::create_dir_all(data_dir).map_err(|e| JournalError::Open {
            path: data_dir.to_owned(),
            cause: format!("create data directory: {e}"),
        })?;
        Self::open(&data_dir.join(JOURNAL_FILE_NAME), options)
    }

    /// Opens (creating if needed) the journal file at `path`, migrates its schema and starts
    /// the writer thread. Blocking: call it at startup or from `spawn_blocking`.
    pub fn open(path: &Path, options: SqliteOptions) -> Result<Self, JournalError> {
        let mut conn = open_connection(path, options, false)?;
        schema::migrate(&mut conn, path)?;
        // One statement in autocommit: durable before the journal is used, so no two runs
        // ever get one number.
        let run: i64 = conn
            .query_row(
                "INSERT INTO meta (key, value) VALUES ('runs', 1) \
                 ON CONFLICT (key) DO UPDATE SET value = value + 1 RETURNING value",
                [],
                |row| row.get(0),
            )
            .map_err(JournalError::sqlite("count this run"))?;

        let (ops_tx, ops_rx) = mpsc::channel(options.write_queue.max(1));
        std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || writer::run(conn, ops_rx))
            .map_err(|e| JournalError::Open {
                path: path.to_owned(),
                cause: format!("start writer thread: {e}"),
            })?;
        tracing::info!(path = %path.display(), run, "journal opened");
        Ok(Self {
            inner: Arc::new(Inner {
                run: u64::try_from(run).unwrap_or(1),
                path: path.to_owned(),
                options,
                ops_tx,
                readers: Mutex::new(Vec::new()),
            }),
        })
    }

    /// Returns the journal file's path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Returns which run of the coordinator this is: 1 for the first open of the journal (or
    /// the first since it gained the counter), one more for every open after it.
    ///
    /// It lets numbers handed out to callers stay unique across restarts without storing
    /// each one: event sequence numbers of a job taken back after a restart start above
    /// `run << 32`, beyond anything an earlier run numbered (see
    /// [`EventHub::open_resumed`](crate::events::EventHub::open_resumed)).
    pub fn run(&self) -> u64 {
        self.inner.run
    }

    /// Sends `op` to the writer and waits for its answer.
    async fn write<T>(
        &self,
        make_op: impl FnOnce(oneshot::Sender<Result<T, JournalError>>) -> WriteOp,
    ) -> Result<T, JournalError> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .ops_tx
            .send(make_op(reply))
            .await
            .map_err(|_| JournalError::WriterStopped)?;
        answer.await.map_err(|_| JournalError::WriterStopped)?
    }

    /// Runs `read` on a pooled read connection on the blocking pool.
    async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Connection) -> Result<T, JournalError> + Send + 'static,
    ) -> Result<T, JournalError> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let pooled = inner.lock_readers().pop();
            let conn = match pooled {
                Some(conn) => conn,
                None => open_connection(&inner.path, inner.options, true)?,
            };
            let result = read(&conn);
            let mut idle = inner.lock_readers();
            if idle.len() < inner.options.max_idle_readers {
                idle.push(conn);
            }
            result
        })
        .await
        .map_err(|e| JournalError::ReadTask(e.to_string()))?
    }
}

impl Inner {
    fn lock_readers(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        // The pool is a plain list; a panic elsewhere cannot leave it inconsistent.
        self.readers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl JobStore for SqliteStore {
    fn insert(&self, job: Job) -> StoreFuture<'_, Inserted> {
        Box::pin(self.write(move |reply| WriteOp::Insert {
            job: Box::new(job),
            reply,
        }))
    }

    fn record(&self, id: JobId, change: StateChange, at: SystemTime) -> StoreFuture<'_, Job> {
        Box::pin(self.write(move |reply| WriteOp::Record {
            id,
            change: Box::new(change),
            at,
            reply,
        }))
    }

    fn get(&self, id: JobId) -> StoreFuture<'_, Option<Job>> {
        Box::pin(self.read(move |conn| {
            let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1");
            writer::select_one(conn, &sql, [id.to_string()])
        }))
    }

    fn list(&self, query: ListQuery) -> StoreFuture<'_, JobPage> {
        Box::pin(self.read(move |conn| list_page(conn, &query)))
    }

    fn load_unfinished(&self) -> StoreFuture<'_, Vec<Job>> {
        Box::pin(self.read(|conn| {
            // A queued job's workflow and extras are read back at its dispatch; loading them
            // here would make a restart with a deep queue peak at the size of every queued
            // workflow at once.
            let sql = format!(
                "SELECT {JOB_COLUMNS_ON_NODES_WHOLE} FROM jobs \
                 INDEXED BY jobs_unfinished_in_queue_order \
                 WHERE finished_at_ns IS NULL ORDER BY priority DESC, seq ASC"
            );
            select_many(conn, &sql, Vec::<rusqlite::types::Value>::new())
        }))
    }

    fn purge_finished(&self, finished_before: SystemTime) -> StoreFuture<'_, u64> {
        let finished_before_ns = codec::nanos(finished_before);
        Box::pin(async move {
            // Chunks in separate transactions, so submissions interleave with a big purge.
            let mut total = 0;
            loop {
                let deleted = self
                    .write(|reply| WriteOp::PurgeChunk {
                        finished_before_ns,
                        reply,
                    })
                    .await?;
                total += deleted;
                if deleted < PURGE_CHUNK as u64 {
                    break;
                }
            }
            if total > 0 {
                tracing::info!(purged = total, "finished jobs purged from the journal");
            }
            Ok(total)
        })
    }

    fn set_drained(&self, name: String, drained: bool) -> StoreFuture<'_, ()> {
        Box::pin(self.write(move |reply| WriteOp::SetDrained {
            name,
            drained,
            reply,
        }))
    }

    fn drained_nodes(&self) -> StoreFuture<'_, BTreeSet<String>> {
        Box::pin(self.read(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT name FROM drained_nodes")
                .map_err(JournalError::sqlite("prepare drained nodes"))?;
            let rows = stmt
                .query_map([], |row| row.get::<_, String>(0))
                .map_err(JournalError::sqlite("read drained nodes"))?;
            rows.collect::<Result<BTreeSet<_>, _>>()
                .map_err(JournalError::sqlite("read drained nodes"))
        }))
    }

    fn count_by_state(&self) -> StoreFuture<'_, BTreeMap<JobState, u64>> {
        Box::pin(self.read(|conn| {
            let mut counts: BTreeMap<JobState, u64> =
                JobState::ALL.into_iter().map(|s| (s, 0)).collect();
            let mut stmt = conn
                .prepare_cached("SELECT state, COUNT(*) FROM jobs GROUP BY state")
                .map_err(JournalError::sqlite("prepare state counts"))?;
            let rows = stmt
                .query_map([], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
                })
                .map_err(JournalError::sqlite("count jobs by state"))?;
            for row in rows {
                let (state, count) = row.map_err(JournalError::sqlite("read state count"))?;
                let state: JobState =
                    state
                        .parse()
                        .map_err(|e: crate::job::JobError| JournalError::Corrupt {
                            id: "*".into(),
                            cause: e.to_string(),
                        })?;
                counts.insert(state, count.max(0) as u64);
            }
            Ok(counts)
        }))
    }
}

/// Opens a connection configured for the journal.
fn open_connection(
    path: &Path,
    options: SqliteOptions,
    read_only: bool,
) -> Result<Connection, JournalError> {
    let open_err = |cause: String| JournalError::Open {
        path: path.to_owned(),
        cause,
    };
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags).map_err(|e| open_err(e.to_string()))?;
    conn.busy_timeout(options.busy_timeout)
        .map_err(|e| open_err(format!("set busy timeout: {e}")))?;
    if !read_only {
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(|e| open_err(format!("enable WAL: {e}")))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(open_err(format!(
                "file system refused WAL mode (got {mode})"
            )));
        }
        // See the module docs for why FULL and not NORMAL.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(|e| open_err(format!("set synchronous: {e}")))?;
    }
    Ok(conn)
}

/// Reads one page for `query`, newest first; the token is the `seq` of the page's last job.
fn list_page(conn: &Connection, query: &ListQuery) -> Result<JobPage, JournalError> {
    let page_size = match query.page_size {
        0 => DEFAULT_PAGE_SIZE,
        n => n.min(MAX_PAGE_SIZE),
    };
    let columns = if query.with_workflow {
        JOB_COLUMNS
    } else {
        JOB_COLUMNS_NO_WORKFLOW
    };

    // Build the filter; every value is bound, never spliced.
    let mut clauses = Vec::new();
    let mut values: Vec<rusqlite::types::Value> = Vec::new();
    let filters = filters_fingerprint(query);
    if let Some(token) = &query.page_token {
        let before: i64 = token
            .strip_prefix("s")
            .and_then(|rest| rest.split_once('.'))
            .filter(|(_, mark)| u32::from_str_radix(mark, 16).ok() == Some(filters))
            .and_then(|(n, _)| n.parse().ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| JournalError::BadPageToken(token.clone()))?;
        clauses.push("seq < ?".to_owned());
        values.push(before.into());
    }
    if let Some(tenant) = &query.tenant {
        clauses.push("tenant = ?".to_owned());
        values.push(tenant.clone().into());
    }
    if !query.states.is_empty() {
        let marks = vec!["?"; query.states.len()].join(", ");
        clauses.push(format!("state IN ({marks})"));
        values.extend(query.states.iter().map(|s| s.as_str().to_owned().into()));
    }
    let filter = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    // One extra row tells whether another page follows.
    values.push(i64::from(page_size + 1).into());
    let sql = format!("SELECT {columns}, seq FROM jobs {filter} ORDER BY seq DESC LIMIT ?");

    let mut stmt = conn
        .prepare(&sql)
        .map_err(JournalError::sqlite("prepare job listing"))?;
    let mut rows = stmt
        .query(params_from_iter(values))
        .map_err(JournalError::sqlite("list jobs"))?;
    let mut jobs = Vec::new();
    let mut last_seq = None;
    let mut more = false;
    while let Some(row) = rows
        .next()
        .map_err(JournalError::sqlite("read job listing"))?
    {
        if jobs.len() == page_size as usize {
            more = true;
            break;
        }
        // `seq` comes after the job columns, which `job_from_row` reads from index 0.
        last_seq = Some(
            row.get::<_, i64>(codec::NUM_JOB_COLUMNS)
                .map_err(JournalError::sqlite("read seq"))?,
        );
        jobs.push(codec::job_from_row(row)?);
    }
    Ok(JobPage {
        jobs,
        next_page_token: if more {
            last_seq.map(|s| format!("s{s}.{filters:08x}"))
        } else {
            None
        },
    })
}

/// A mark of a listing's filters (tenant and states), carried in its page tokens: a token is
/// only good for the listing that issued it, and the next page of another listing would
/// silently skip or repeat jobs. FNV-1a, so the mark is the same in every build.
fn filters_fingerprint(query: &ListQuery) -> u32 {
    let mut states: Vec<&str> = query.states.iter().map(|state| state.as_str()).collect();
    states.sort_unstable();
    states.dedup();
    let mut hash: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for byte in bytes {
            hash ^= u32::from(*byte);
            hash = hash.wrapping_mul(0x0100_0193);
        }
    };
    match &query.tenant {
        Some(tenant) => {
            feed(b"t");
            feed(tenant.as_bytes());
        }
        None => feed(b"-"),
    }
    for state in states {
        // A separator no state or tenant contains, so the parts cannot run together.
        feed(b"\0");
        feed(state.as_bytes());
    }
    hash
}

/// Runs a query returning any number of jobs.
fn select_many(
    conn: &Connection,
    sql: &str,
    values: Vec<rusqlite::types::Value>,
) -> Result<Vec<Job>, JournalError> {
    let mut stmt = conn
        .prepare_cached(sql)
        .map_err(JournalError::sqlite("prepare job query"))?;
    let mut rows = stmt
        .query(params_from_iter(values))
        .map_err(JournalError::sqlite("query jobs"))?;
    let mut jobs = Vec::new();
    while let Some(row) = rows.next().map_err(JournalError::sqlite("read job row"))? {
        jobs.push(codec::job_from_row(row)?);
    }
    Ok(jobs)
}
