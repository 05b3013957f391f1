//! The journal's single writer thread, with group commit.
//!
//! SQLite allows one writer at a time and every commit with `synchronous=FULL` costs an fsync,
//! so one commit per submission would cap throughput at the disk's fsync rate. Instead, callers
//! send operations over a bounded channel to one thread that owns the write connection; it takes
//! every operation waiting (up to [`MAX_BATCH`]), applies them in one transaction (each inside a
//! savepoint, so one failing operation does not undo the others), commits once, and only then
//! answers each caller. An answered operation is therefore durable, and the fsync is shared by
//! the whole batch.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use tokio::sync::{mpsc, oneshot};

use super::codec::{self, JOB_COLUMNS, JOB_COLUMNS_NO_WORKFLOW};
use super::{Inserted, JournalError};
use crate::job::{Job, JobId, JobState, StateChange};

/// Most operations committed in one transaction.
pub(crate) const MAX_BATCH: usize = 1024;

/// Most finished jobs deleted per purge transaction, so a large purge does not hold up
/// submissions for long.
pub(crate) const PURGE_CHUNK: usize = 5000;

/// One request to the writer thread; the reply goes to the caller after the commit.
pub(crate) enum WriteOp {
    Insert {
        job: Box<Job>,
        reply: oneshot::Sender<Result<Inserted, JournalError>>,
    },
    Record {
        id: JobId,
        change: Box<StateChange>,
        at: SystemTime,
        reply: oneshot::Sender<Result<Job, JournalError>>,
    },
    PurgeChunk {
        finished_before_ns: i64,
        reply: oneshot::Sender<Result<u64, JournalError>>,
    },
    SetDrained {
        name: String,
        drained: bool,
        reply: oneshot::Sender<Result<(), JournalError>>,
    },
}

/// An operation's outcome held until the batch commits.
enum Pending {
    Insert(
        oneshot::Sender<Result<Inserted, JournalError>>,
        Result<Inserted, JournalError>,
    ),
    Record(
        oneshot::Sender<Result<Job, JournalError>>,
        Result<Job, JournalError>,
    ),
    Purge(
        oneshot::Sender<Result<u64, JournalError>>,
        Result<u64, JournalError>,
    ),
    Drained(
        oneshot::Sender<Result<(), JournalError>>,
        Result<(), JournalError>,
    ),
}

/// Runs the writer loop until every sender is dropped. Owns `conn`.
pub(crate) fn run(mut conn: Connection, mut ops_rx: mpsc::Receiver<WriteOp>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = ops_rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match ops_rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        commit_batch(&mut conn, &mut batch);
    }
    tracing::debug!("journal writer stopped: every store handle dropped");
}

/// Applies and commits `batch`, then answers each caller. Leaves `batch` empty.
fn commit_batch(conn: &mut Connection, batch: &mut Vec<WriteOp>) {
    let num_ops = batch.len();
    let started = std::time::Instant::now();
    let tx = match conn.transaction() {
        Ok(tx) => tx,
        Err(error) => {
            let message = format!("begin transaction: {error}");
            batch.drain(..).for_each(|op| fail_op(op, &message));
            return;
        }
    };

    let pending: Vec<Pending> = batch
        .drain(..)
        .map(|op| apply_in_savepoint(&tx, op))
        .collect();

    if let Err(error) = tx.commit() {
        // Nothing of this batch took effect: every caller gets the error, none a result.
        tracing::error!(%error, num_ops, "journal commit failed");
        let message = error.to_string();
        for p in pending {
            let err = || JournalError::CommitFailed(message.clone());
            // A caller that stopped waiting is fine to ignore.
            let _ = match p {
                Pending::Insert(reply, _) => reply.send(Err(err())).map_err(drop),
                Pending::Record(reply, _) => reply.send(Err(err())).map_err(drop),
                Pending::Purge(reply, _) => reply.send(Err(err())).map_err(drop),
                Pending::Drained(reply, _) => reply.send(Err(err())).map_err(drop),
            };
        }
        return;
    }

    let elapsed = started.elapsed();
    if elapsed > Duration::from_secs(1) {
        tracing::warn!(
            num_ops,
            elapsed_ms = elapsed.as_millis() as u64,
            "slow journal commit"
        );
    } else {
        tracing::trace!(
            num_ops,
            elapsed_us = elapsed.as_micros() as u64,
            "journal batch committed"
        );
    }
    for p in pending {
        // A caller that stopped waiting is fine to ignore: the operation is committed anyway.
        let _ = match p {
            Pending::Insert(reply, result) => reply.send(result).map_err(drop),
            Pending::Record(reply, result) => reply.send(result).map_err(drop),
            Pending::Purge(reply, result) => reply.send(result).map_err(drop),
            Pending::Drained(reply, result) => reply.send(result).map_err(drop),
        };
    }
}

/// Applies one operation inside a savepoint of `tx`, rolled back if the operation fails.
fn apply_in_savepoint(tx: &Transaction<'_>, op: WriteOp) -> Pending {
    // A savepoint on an open transaction only fails if the connection is broken; then the
    // operation runs without one and the commit reports the problem.
    // Cached statements: parsing these three on every operation was a visible share of the
    // writer's time under load.
    let run = |sql: &str| {
        tx.prepare_cached(sql)
            .and_then(|mut stmt| stmt.execute([]))
            .map(drop)
    };
    let savepoint = run("SAVEPOINT op").is_ok();
    let finish = |ok: bool| {
        if savepoint {
            let result = if ok {
                run("RELEASE op")
            } else {
                run("ROLLBACK TO op").and_then(|()| run("RELEASE op"))
            };
            if let Err(error) = result {
                tracing::error!(%error, "journal savepoint could not be closed");
            }
        }
    };
    match op {
        WriteOp::Insert { job, reply } => {
            let result = insert(tx, *job);
            finish(result.is_ok());
            Pending::Insert(reply, result)
        }
        WriteOp::Record {
            id,
            change,
            at,
            reply,
        } => {
            let result = record(tx, id, *change, at);
            finish(result.is_ok());
            Pending::Record(reply, result)
        }
        WriteOp::PurgeChunk {
            finished_before_ns,
            reply,
        } => {
            let result = purge_chunk(tx, finished_before_ns);
            finish(result.is_ok());
            Pending::Purge(reply, result)
        }
        WriteOp::SetDrained {
            name,
            drained,
            reply,
        } => {
            let sql = if drained {
                "INSERT OR IGNORE INTO drained_nodes (name) VALUES (?1)"
            } else {
                "DELETE FROM drained_nodes WHERE name = ?1"
            };
            let result = tx
                .prepare_cached(sql)
                .and_then(|mut stmt| stmt.execute([&name]))
                .map(drop)
                .map_err(JournalError::sqlite("record a drain"));
            finish(result.is_ok());
            Pending::Drained(reply, result)
        }
    }
}

fn insert(conn: &Connection, job: Job) -> Result<Inserted, JournalError> {
    if job.state() != JobState::Queued {
        return Err(JournalError::NotQueued(job.id));
    }

    // The lookup and the insert run on the single writer, inside one transaction, so two
    // submissions with one key cannot both miss the lookup.
    if let Some(key) = &job.spec.idempotency_key {
        let sql =
            format!("SELECT {JOB_COLUMNS} FROM jobs WHERE tenant = ?1 AND idempotency_key = ?2");
        let existing = select_one(conn, &sql, params![job.spec.tenant, key])?;
        if let Some(existing) = existing {
            if existing.spec.workflow != job.spec.workflow {
                return Err(JournalError::IdempotencyConflict {
                    tenant: job.spec.tenant.clone(),
                    key: key.clone(),
                    job: existing.id,
                });
            }
            return Ok(Inserted {
                job: existing,
                created: false,
            });
        }
    }
    codec::insert_job(conn, &job)?;
    Ok(Inserted { job, created: true })
}

/// The lookups of [`record`], built once.
static RECORD_DISPATCH_SQL: OnceLock<String> = OnceLock::new();
static RECORD_OTHER_SQL: OnceLock<String> = OnceLock::new();

fn record(
    conn: &Connection,
    id: JobId,
    change: StateChange,
    at: SystemTime,
) -> Result<Job, JournalError> {
    // Only a dispatch posts the workflow and its extras; every other change leaves them
    // unread, which matters when the editor's graph rides along in the extras.
    let sql = if matches!(change, StateChange::Dispatch { .. }) {
        RECORD_DISPATCH_SQL.get_or_init(|| format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"))
    } else {
        RECORD_OTHER_SQL
            .get_or_init(|| format!("SELECT {JOB_COLUMNS_NO_WORKFLOW} FROM jobs WHERE id = ?1"))
    };
    let job = select_one(conn, sql, params![id.to_string()])?.ok_or(JournalError::NotFound(id))?;
    let next = job.apply(change, at)?;
    codec::update_progress(conn, &next)?;
    Ok(next)
}

fn purge_chunk(conn: &Connection, finished_before_ns: i64) -> Result<u64, JournalError> {
    let deleted = conn
        .prepare_cached(
            "DELETE FROM jobs WHERE seq IN (SELECT seq FROM jobs \
             WHERE finished_at_ns IS NOT NULL AND finished_at_ns < ?1 LIMIT ?2)",
        )
        .and_then(|mut stmt| stmt.execute(params![finished_before_ns, PURGE_CHUNK as i64]))
        .map_err(JournalError::sqlite("purge finished jobs"))?;
    Ok(deleted as u64)
}

/// Runs a query expected to match at most one job.
pub(crate) fn select_one(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Option<Job>, JournalError> {
    let mut stmt = conn
        .prepare_cached(sql)
        .map_err(JournalError::sqlite("prepare job lookup"))?;
    let mut decoded = None;
    stmt.query_row(params, |row| {
        decoded = Some(codec::job_from_row(row));
        Ok(())
    })
    .optional()
    .map_err(JournalError::sqlite("look up job"))?;
    decoded.transpose()
}

/// Answers an operation that could not even be attempted.
fn fail_op(op: WriteOp, message: &str) {
    let err = || JournalError::CommitFailed(message.to_owned());
    let _ = match op {
        WriteOp::Insert { reply, .. } => reply.send(Err(err())).map_err(drop),
        WriteOp::Record { reply, .. } => reply.send(Err(err())).map_err(drop),
        WriteOp::PurgeChunk { reply, .. } => reply.send(Err(err())).map_err(drop),
        WriteOp::SetDrained { reply, .. } => reply.send(Err(err())).map_err(drop),
    };
}
