//! Crash safety of the journal: a writer process killed with SIGKILL in the middle of a write
//! loop loses no job whose insert (or state change) it had been told was stored.
//!
//! The test re-runs its own test binary as the child, selecting the ignored test
//! `crash_child_write_loop`, which writes forever and prints one line per acknowledged
//! operation. The parent kills it mid-flight and checks every acknowledged operation on reopen.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use coordinator::job::{JobId, JobState, StateChange};
use coordinator::journal::{JobStore, SqliteOptions, SqliteStore};
use support::job_for_test;
use uuid::Uuid;

/// Set only in the child: the data directory to write into.
const CHILD_DIR_ENV: &str = "COMFYFLEET_TEST_CRASH_CHILD_DIR";

/// Acknowledged operations to wait for before killing the child.
const ACKS_BEFORE_KILL: usize = 3000;

#[test]
#[ignore = "child process of acknowledged_jobs_survive_kill_9; does nothing when run alone"]
fn crash_child_write_loop() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let store = SqliteStore::open_in_dir(dir.as_ref(), SqliteOptions::default()).expect("open");
        let (line_tx, mut line_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        // Many concurrent writers, so the kill lands while batches are in flight.
        for writer in 0..16u64 {
            let store = store.clone();
            let line_tx = line_tx.clone();
            tokio::spawn(async move {
                for i in 0.. {
                    let job = job_for_test("crash", 0, writer * 1_000_000 + i);
                    let id = job.id;
                    store.insert(job).await.expect("insert");
                    let _ = line_tx.send(format!("inserted {id}"));
                    if i % 2 == 0 {
                        let change = StateChange::Dispatch {
                            node: "gpu-1".into(),
                            prompt_id: Uuid::new_v4(),
                        };
                        store
                            .record(id, change, std::time::SystemTime::now())
                            .await
                            .expect("record");
                        let _ = line_tx.send(format!("dispatched {id}"));
                    }
                }
            });
        }
        let mut stdout = std::io::stdout().lock();
        while let Some(line) = line_rx.recv().await {
            writeln!(stdout, "{line}").expect("stdout");
            stdout.flush().expect("flush");
        }
    });
}

#[tokio::test]
async fn acknowledged_jobs_survive_kill_9() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(std::env::current_exe().expect("test binary path"))
        .args([
            "--exact",
            "crash_child_write_loop",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child writer");

    // Read acknowledgements until enough have arrived, then kill mid-loop.
    let stdout = child.stdout.take().expect("piped stdout");
    let mut inserted = Vec::new();
    let mut dispatched = Vec::new();
    let started = Instant::now();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("child output");
        if let Some(id) = line.strip_prefix("inserted ") {
            inserted.push(JobId::from_str(id).expect("job id"));
        } else if let Some(id) = line.strip_prefix("dispatched ") {
            dispatched.push(JobId::from_str(id).expect("job id"));
        }
        if inserted.len() + dispatched.len() >= ACKS_BEFORE_KILL {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "child writer too slow"
        );
    }
    child.kill().expect("SIGKILL the child"); // Child::kill sends SIGKILL on Unix.
    child.wait().expect("reap child");
    assert!(
        inserted.len() > 100,
        "the child acknowledged {} inserts",
        inserted.len()
    );

    let store = SqliteStore::open_in_dir(dir.path(), SqliteOptions::default()).expect("reopen");
    for id in &inserted {
        assert!(
            store.get(*id).await.expect("get").is_some(),
            "acknowledged job {id} lost"
        );
    }
    for id in &dispatched {
        let job = store.get(*id).await.expect("get").expect("stored");
        assert_eq!(
            job.state(),
            JobState::Dispatched,
            "acknowledged dispatch of {id} lost"
        );
    }
    let counts = store.count_by_state().await.expect("counts");
    let total: u64 = counts.values().sum();
    assert!(
        total >= inserted.len() as u64,
        "store holds at least every acknowledged job"
    );
    println!(
        "crash test: {} inserts, {} dispatches acknowledged, {total} stored",
        inserted.len(),
        dispatched.len()
    );
}
