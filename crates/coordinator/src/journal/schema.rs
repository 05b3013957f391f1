//! The journal's SQLite schema and its migrations.
//!
//! The schema version lives in SQLite's `user_version` header field. Each migration moves the
//! schema one version up and runs, with the version bump, in one transaction, so a crash in the
//! middle leaves the previous version intact. Migrations are append-only: never edit a released
//! one, add the next.

use std::path::Path;

use rusqlite::Connection;

use super::JournalError;

/// Migration `i` moves the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // Version 1: the jobs table. `seq` orders arrival and is never reused (AUTOINCREMENT), so
    // page tokens stay valid across purges. Times are nanoseconds since the Unix epoch. `spec`
    // and `progress` hold the JSON of fields that are read but never filtered on.
    r#"
    CREATE TABLE jobs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        tenant TEXT NOT NULL,
        idempotency_key TEXT,
        priority INTEGER NOT NULL,
        state TEXT NOT NULL,
        node TEXT,
        prompt_id TEXT,
        attempt INTEGER NOT NULL,
        created_at_ns INTEGER NOT NULL,
        updated_at_ns INTEGER NOT NULL,
        finished_at_ns INTEGER,
        workflow BLOB NOT NULL,
        spec TEXT NOT NULL,
        progress TEXT NOT NULL
    ) STRICT;
    CREATE UNIQUE INDEX jobs_by_idempotency_key ON jobs (tenant, idempotency_key)
        WHERE idempotency_key IS NOT NULL;
    CREATE INDEX jobs_unfinished_in_queue_order ON jobs (priority DESC, seq)
        WHERE finished_at_ns IS NULL;
    CREATE INDEX jobs_by_state ON jobs (state, seq);
    CREATE INDEX jobs_by_tenant ON jobs (tenant, seq);
    CREATE INDEX jobs_by_finish ON jobs (finished_at_ns) WHERE finished_at_ns IS NOT NULL;
    CREATE INDEX jobs_by_prompt_id ON jobs (prompt_id) WHERE prompt_id IS NOT NULL;
    "#,
    // Version 2: journal-wide counters. `runs` counts the coordinator runs that opened the
    // journal (see `SqliteStore::run`).
    r#"
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    ) STRICT;
    "#,
    // Version 3: what a ComfyUI client sent beside the graph (`extra_data`,
    // `partial_execution_targets`), as JSON; NULL when it sent nothing of the kind.
    r#"
    ALTER TABLE jobs ADD COLUMN extras TEXT;
    "#,
    // Version 4: nodes an operator drained, so a restart keeps them drained.
    r#"
    CREATE TABLE drained_nodes (name TEXT PRIMARY KEY) STRICT;
    "#,
];

/// The schema version this build writes.
pub(crate) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the schema of `conn` (the journal at `path`) up to [`SCHEMA_VERSION`].
pub(crate) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), JournalError> {
    let found: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(JournalError::sqlite("read schema version"))?;
    if found > SCHEMA_VERSION {
        return Err(JournalError::SchemaTooNew {
            path: path.to_owned(),
            found,
            supported: SCHEMA_VERSION,
        });
    }

    for version in found..SCHEMA_VERSION {
        let tx = conn
            .transaction()
            .map_err(JournalError::sqlite("begin migration"))?;
        tx.execute_batch(MIGRATIONS[version as usize])
            .map_err(JournalError::sqlite("apply migration"))?;
        tx.pragma_update(None, "user_version", version + 1)
            .map_err(JournalError::sqlite("bump schema version"))?;
        tx.commit()
            .map_err(JournalError::sqlite("commit migration"))?;
        tracing::info!(path = %path.display(), version = version + 1, "journal schema migrated");
    }
    Ok(())
}
