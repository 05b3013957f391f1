//! Which fleet job each facade prompt became, durably.
//!
//! ComfyUI clients name prompts with their own ids (any string, repeats allowed) and tie them
//! to a WebSocket session (`client_id`) and a queue `number`; the coordinator's journal knows
//! only job ids. This registry keeps that mapping in a small SQLite file next to the journal
//! (`facade.sqlite3` in the data directory), so `/history`, `/queue` and `/view` keep working
//! for facade prompts after a coordinator restart. Rows are few and tiny, so calls are
//! synchronous under one mutex; handlers run them on the blocking pool.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};

use super::FacadeError;
use crate::job::JobId;

/// One prompt submitted through the facade.
#[derive(Debug, Clone, PartialEq)]
pub struct FacadePrompt {
    /// The id the client knows (its own or one the facade chose).
    pub prompt_id: String,
    /// The fleet job that runs it.
    pub job_id: JobId,
    /// The WebSocket session that receives its events, if any.
    pub client_id: Option<String>,
    /// The queue `number` answered to the client.
    pub number: serde_json::Value,
    /// The client's `extra_data`, with `client_id` merged in as ComfyUI does.
    pub extra_data: serde_json::Value,
}

/// The durable prompt-id ↔ job mapping.
#[derive(Clone)]
pub struct Registry {
    conn: Arc<Mutex<Connection>>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS prompts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    prompt_id TEXT NOT NULL,
    job_id TEXT NOT NULL UNIQUE,
    client_id TEXT,
    number TEXT NOT NULL,
    extra_data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS prompts_by_prompt_id ON prompts (prompt_id, seq);
";

impl Registry {
    /// Opens (creating if needed) the registry in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, FacadeError> {
        let path = data_dir.join("facade.sqlite3");
        let conn = Connection::open(&path).map_err(|e| FacadeError::registry("open", e))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| FacadeError::registry("set wal mode", e))?;
        conn.execute_batch(SCHEMA)
            .map_err(|e| FacadeError::registry("create schema", e))?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Opens a registry that lives in memory only (tests).
    pub fn in_memory() -> Result<Self, FacadeError> {
        let conn = Connection::open_in_memory().map_err(|e| FacadeError::registry("open", e))?;
        conn.execute_batch(SCHEMA)
            .map_err(|e| FacadeError::registry("create schema", e))?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a half-written row (SQLite is atomic).
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a new prompt.
    pub fn insert(&self, prompt: &FacadePrompt) -> Result<(), FacadeError> {
        self.lock()
            .execute(
                "INSERT INTO prompts (prompt_id, job_id, client_id, number, extra_data)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    prompt.prompt_id,
                    prompt.job_id.to_string(),
                    prompt.client_id,
                    prompt.number.to_string(),
                    prompt.extra_data.to_string()
                ],
            )
            .map_err(|e| FacadeError::registry("insert prompt", e))?;
        Ok(())
    }

    /// The newest prompt with this id (a repeated id names the latest submission, as a repeated
    /// id replaces the earlier history entry in ComfyUI).
    pub fn by_prompt_id(&self, prompt_id: &str) -> Result<Option<FacadePrompt>, FacadeError> {
        self.lock()
            .query_row(
                "SELECT prompt_id, job_id, client_id, number, extra_data FROM prompts
                 WHERE prompt_id = ?1 ORDER BY seq DESC LIMIT 1",
                params![prompt_id],
                row_to_prompt,
            )
            .optional()
            .map_err(|e| FacadeError::registry("read prompt", e))?
            .transpose()
    }

    /// The prompt a job was submitted as, if it came through the facade.
    pub fn by_job(&self, job_id: JobId) -> Result<Option<FacadePrompt>, FacadeError> {
        self.lock()
            .query_row(
                "SELECT prompt_id, job_id, client_id, number, extra_data FROM prompts
                 WHERE job_id = ?1",
                params![job_id.to_string()],
                row_to_prompt,
            )
            .optional()
            .map_err(|e| FacadeError::registry("read prompt", e))?
            .transpose()
    }

    /// The newest `limit` prompts, oldest first.
    pub fn recent(&self, limit: usize) -> Result<Vec<FacadePrompt>, FacadeError> {
        let conn = self.lock();
        let mut statement = conn
            .prepare(
                "SELECT prompt_id, job_id, client_id, number, extra_data FROM prompts
                 ORDER BY seq DESC LIMIT ?1",
            )
            .map_err(|e| FacadeError::registry("list prompts", e))?;
        let rows = statement
            .query_map(
                params![i64::try_from(limit).unwrap_or(i64::MAX)],
                row_to_prompt,
            )
            .map_err(|e| FacadeError::registry("list prompts", e))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row.map_err(|e| FacadeError::registry("list prompts", e))??);
        }
        out.reverse();
        Ok(out)
    }

    /// Forgets prompts whose jobs are gone from the journal (after its retention purge).
    pub fn forget(&self, job_ids: &[JobId]) -> Result<(), FacadeError> {
        let conn = self.lock();
        for id in job_ids {
            conn.execute(
                "DELETE FROM prompts WHERE job_id = ?1",
                params![id.to_string()],
            )
            .map_err(|e| FacadeError::registry("delete prompt", e))?;
        }
        Ok(())
    }
}

type RowResult = Result<FacadePrompt, FacadeError>;

fn row_to_prompt(row: &rusqlite::Row<'_>) -> rusqlite::Result<RowResult> {
    let prompt_id: String = row.get(0)?;
    let job_text: String = row.get(1)?;
    let client_id: Option<String> = row.get(2)?;
    let number: String = row.get(3)?;
    let extra: String = row.get(4)?;
    Ok((|| {
        let job_id = job_text
            .parse::<JobId>()
            .map_err(|_| FacadeError::Corrupt(format!("prompt {prompt_id}: bad job id")))?;
        let number = serde_json::from_str(&number)
            .map_err(|_| FacadeError::Corrupt(format!("prompt {prompt_id}: bad number")))?;
        let extra_data = serde_json::from_str(&extra)
            .map_err(|_| FacadeError::Corrupt(format!("prompt {prompt_id}: bad extra_data")))?;
        Ok(FacadePrompt {
            prompt_id,
            job_id,
            client_id,
            number,
            extra_data,
        })
    })())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prompt(id: &str) -> FacadePrompt {
        FacadePrompt {
            prompt_id: id.into(),
            job_id: JobId::new(),
            client_id: Some("c1".into()),
            number: serde_json::json!(3),
            extra_data: serde_json::json!({"client_id": "c1"}),
        }
    }

    #[test]
    fn repeated_prompt_id_names_the_latest_job() {
        let registry = Registry::in_memory().expect("opens");
        let first = prompt("mine");
        let second = prompt("mine");
        registry.insert(&first).expect("insert");
        registry.insert(&second).expect("insert");
        let found = registry
            .by_prompt_id("mine")
            .expect("reads")
            .expect("found");
        assert_eq!(found.job_id, second.job_id);
        assert_eq!(
            registry.by_job(first.job_id).expect("reads"),
            Some(first.clone())
        );
        assert_eq!(registry.recent(10).expect("lists"), vec![first, second]);
    }

    #[test]
    fn survives_reopen() {
        let dir = tempfile::tempdir().expect("temp dir");
        let one = prompt("p1");
        Registry::open(dir.path())
            .expect("opens")
            .insert(&one)
            .expect("insert");
        let again = Registry::open(dir.path()).expect("reopens");
        assert_eq!(again.by_prompt_id("p1").expect("reads"), Some(one));
        assert_eq!(again.by_prompt_id("p2").expect("reads"), None);
    }
}
