//! Conversion between [`Job`] and rows of the `jobs` table.
//!
//! Columns that queries filter or sort on are real columns; the rest of the spec and progress
//! is JSON in the `spec` and `progress` columns, so adding a field does not need a migration.
//! Times are stored as nanoseconds since the Unix epoch, which round-trips `SystemTime` exactly
//! until the year 2262.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use rusqlite::{Connection, Row, params};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::JournalError;
use crate::job::{
    AttemptRecord, Failure, Job, JobId, JobProgress, JobSpec, JobState, Labels, OutputRef,
    PromptExtras, UiValues, WorkflowAnalysis,
};

/// The columns [`job_from_row`] reads, in order, workflow and prompt extras included.
pub(crate) const JOB_COLUMNS: &str = "id, tenant, idempotency_key, priority, state, node, \
    prompt_id, attempt, created_at_ns, updated_at_ns, finished_at_ns, spec, progress, workflow, \
    extras";

/// Like [`JOB_COLUMNS`] but with an empty workflow and no prompt extras, for listings.
pub(crate) const JOB_COLUMNS_NO_WORKFLOW: &str = "id, tenant, idempotency_key, priority, state, \
    node, prompt_id, attempt, created_at_ns, updated_at_ns, finished_at_ns, spec, progress, \
    X'' AS workflow, NULL AS extras";

/// Like [`JOB_COLUMNS`] but with the workflow and prompt extras of queued jobs left out: what
/// a restart needs (jobs on nodes need their workflow for the graph titles of their events).
pub(crate) const JOB_COLUMNS_ON_NODES_WHOLE: &str = "id, tenant, idempotency_key, priority, \
    state, node, prompt_id, attempt, created_at_ns, updated_at_ns, finished_at_ns, spec, \
    progress, CASE WHEN state = 'queued' THEN X'' ELSE workflow END AS workflow, \
    CASE WHEN state = 'queued' THEN NULL ELSE extras END AS extras";

/// How many columns [`JOB_COLUMNS`] names; a query may select more after them.
pub(crate) const NUM_JOB_COLUMNS: usize = 15;

/// The JSON of the `spec` column.
#[derive(Serialize, Deserialize)]
struct SpecDoc {
    required_labels: Labels,
    deadline_ns: Option<i64>,
    analysis: WorkflowAnalysis,
}

/// The JSON of the `progress` column.
#[derive(Serialize, Deserialize)]
struct ProgressDoc {
    started_at_ns: Option<i64>,
    outputs: Vec<OutputRef>,
    // Absent in journals written before UI values were kept, and for most jobs.
    #[serde(default, skip_serializing_if = "UiValues::is_empty")]
    ui_values: UiValues,
    failure: Option<Failure>,
    cancel_reason: Option<String>,
    attempts: Vec<AttemptRecord>,
}

/// Returns `t` as nanoseconds since the Unix epoch (clamped to the `i64` range).
pub(crate) fn nanos(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_nanos()).map_or(i64::MIN, |n| -n),
    }
}

/// Returns the time `ns` nanoseconds after the Unix epoch.
pub(crate) fn from_nanos(ns: i64) -> SystemTime {
    let magnitude = Duration::from_nanos(ns.unsigned_abs());
    if ns >= 0 {
        SystemTime::UNIX_EPOCH + magnitude
    } else {
        SystemTime::UNIX_EPOCH - magnitude
    }
}

/// Inserts `job` as a new row.
pub(crate) fn insert_job(conn: &Connection, job: &Job) -> Result<(), JournalError> {
    let mut analysis = job.spec.analysis.clone();
    // JSON has no NaN or infinity; an unknown cost is 0.
    if !analysis.cost.is_finite() {
        analysis.cost = 0.0;
    }
    let spec = SpecDoc {
        required_labels: job.spec.required_labels.clone(),
        deadline_ns: job.spec.deadline.map(nanos),
        analysis,
    };
    let spec = serde_json::to_string(&spec).map_err(|e| corrupt(job.id, e))?;
    let progress = progress_json(job)?;
    // A column of its own, so listings and state changes other than a dispatch leave it
    // out: the editor's graph in `extra_pnginfo` can be larger than the workflow itself.
    let extras = match job.spec.extras.as_deref().filter(|e| !e.is_empty()) {
        Some(extras) => Some(serde_json::to_string(extras).map_err(|e| corrupt(job.id, e))?),
        None => None,
    };
    let p = &job.progress;
    conn.prepare_cached(
        "INSERT INTO jobs (id, tenant, idempotency_key, priority, state, node, prompt_id, \
         attempt, created_at_ns, updated_at_ns, finished_at_ns, spec, progress, workflow, \
         extras) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            job.id.to_string(),
            job.spec.tenant,
            job.spec.idempotency_key,
            job.spec.priority,
            p.state.as_str(),
            p.node,
            p.prompt_id.map(|id| id.to_string()),
            p.attempt,
            nanos(job.created_at),
            nanos(p.updated_at),
            p.finished_at.map(nanos),
            spec,
            progress,
            job.spec.workflow.as_ref(),
            extras,
        ])
    })
    .map_err(JournalError::sqlite("insert job"))?;
    Ok(())
}

/// Writes the progress of `job` over its stored row.
pub(crate) fn update_progress(conn: &Connection, job: &Job) -> Result<(), JournalError> {
    let progress = progress_json(job)?;
    let p = &job.progress;
    let changed = conn
        .prepare_cached(
            "UPDATE jobs SET state = ?2, node = ?3, prompt_id = ?4, attempt = ?5, \
             updated_at_ns = ?6, finished_at_ns = ?7, progress = ?8 WHERE id = ?1",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                job.id.to_string(),
                p.state.as_str(),
                p.node,
                p.prompt_id.map(|id| id.to_string()),
                p.attempt,
                nanos(p.updated_at),
                p.finished_at.map(nanos),
                progress,
            ])
        })
        .map_err(JournalError::sqlite("update job"))?;
    if changed == 0 {
        return Err(JournalError::NotFound(job.id));
    }
    Ok(())
}

/// Decodes a row selected with [`JOB_COLUMNS`] or [`JOB_COLUMNS_NO_WORKFLOW`].
pub(crate) fn job_from_row(row: &Row<'_>) -> Result<Job, JournalError> {
    let get_err = JournalError::sqlite("read job row");
    let id_text: String = row.get(0).map_err(get_err)?;
    let bad = |cause: String| JournalError::Corrupt {
        id: id_text.clone(),
        cause,
    };
    let column = |e: rusqlite::Error| bad(e.to_string());

    let id: JobId = id_text
        .parse()
        .map_err(|e: crate::job::JobError| bad(e.to_string()))?;
    let state: JobState = row
        .get::<_, String>(4)
        .map_err(column)?
        .parse()
        .map_err(|e: crate::job::JobError| bad(e.to_string()))?;
    let prompt_id = row
        .get::<_, Option<String>>(6)
        .map_err(column)?
        .map(|text| Uuid::try_parse(&text).map_err(|e| bad(format!("prompt id: {e}"))))
        .transpose()?;
    let spec_doc: SpecDoc = serde_json::from_str(&row.get::<_, String>(11).map_err(column)?)
        .map_err(|e| bad(format!("spec: {e}")))?;
    let progress_doc: ProgressDoc =
        serde_json::from_str(&row.get::<_, String>(12).map_err(column)?)
            .map_err(|e| bad(format!("progress: {e}")))?;

    let extras = row
        .get::<_, Option<String>>(14)
        .map_err(column)?
        .map(|text| serde_json::from_str::<PromptExtras>(&text))
        .transpose()
        .map_err(|e| bad(format!("extras: {e}")))?
        .map(Arc::new);
    let spec = JobSpec {
        workflow: Bytes::from(row.get::<_, Vec<u8>>(13).map_err(column)?),
        tenant: row.get(1).map_err(column)?,
        priority: row.get(3).map_err(column)?,
        required_labels: spec_doc.required_labels,
        idempotency_key: row.get(2).map_err(column)?,
        deadline: spec_doc.deadline_ns.map(from_nanos),
        analysis: spec_doc.analysis,
        extras,
    };
    let progress = JobProgress {
        state,
        node: row.get(5).map_err(column)?,
        prompt_id,
        attempt: row.get(7).map_err(column)?,
        updated_at: from_nanos(row.get(9).map_err(column)?),
        started_at: progress_doc.started_at_ns.map(from_nanos),
        finished_at: row
            .get::<_, Option<i64>>(10)
            .map_err(column)?
            .map(from_nanos),
        outputs: progress_doc.outputs,
        ui_values: progress_doc.ui_values,
        failure: progress_doc.failure,
        cancel_reason: progress_doc.cancel_reason,
        attempts: progress_doc.attempts,
    };
    Ok(Job {
        id,
        spec,
        created_at: from_nanos(row.get(8).map_err(column)?),
        progress,
    })
}

fn progress_json(job: &Job) -> Result<String, JournalError> {
    let p = &job.progress;
    let doc = ProgressDoc {
        started_at_ns: p.started_at.map(nanos),
        outputs: p.outputs.clone(),
        ui_values: p.ui_values.clone(),
        failure: p.failure.clone(),
        cancel_reason: p.cancel_reason.clone(),
        attempts: p.attempts.clone(),
    };
    serde_json::to_string(&doc).map_err(|e| corrupt(job.id, e))
}

fn corrupt(id: JobId, cause: impl std::fmt::Display) -> JournalError {
    JournalError::Corrupt {
        id: id.to_string(),
        cause: cause.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nanosecond_times_round_trip_exactly() {
        let times = [
            SystemTime::UNIX_EPOCH,
            SystemTime::UNIX_EPOCH + Duration::new(1_796_399_172, 891_123_457),
            SystemTime::UNIX_EPOCH - Duration::from_nanos(5),
            SystemTime::now(),
        ];
        for t in times {
            assert_eq!(
                from_nanos(nanos(t)),
                t,
                "{t:?} must survive the journal unchanged"
            );
        }
    }
}
