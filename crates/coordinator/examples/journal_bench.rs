//! Measures journal throughput with group commit.
//!
//! Runs `total` inserts from `concurrency` submitters against a fresh journal in a temporary
//! directory (synchronous=FULL, as in production), then one dispatch record per job, and prints
//! operations per second. Usage:
//!
//! ```text
//! cargo run --release -p coordinator --example journal_bench -- [total] [concurrency]
//! ```

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use coordinator::job::{Job, JobSpec, StateChange};
use coordinator::journal::{JobStore, SqliteOptions, SqliteStore};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let total: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let concurrency: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(64)
        .max(1);
    let dir = tempfile::tempdir().expect("temp dir");
    let store =
        Arc::new(SqliteStore::open_in_dir(dir.path(), SqliteOptions::default()).expect("open"));
    // A small but realistic workflow body (about 1.5 KiB).
    let workflow = format!(
        "{{\"3\":{{\"class_type\":\"KSampler\",\"inputs\":{{\"seed\":18446744073709551615,\"text\":\"{}\"}}}}}}",
        "x".repeat(1400)
    );

    let started = Instant::now();
    let per_task = total.div_ceil(concurrency);
    let tasks: Vec<_> = (0..concurrency)
        .map(|t| {
            let store = Arc::clone(&store);
            let workflow = workflow.clone();
            tokio::spawn(async move {
                let mut ids = Vec::with_capacity(per_task);
                for i in 0..per_task {
                    let mut spec =
                        JobSpec::new(workflow.clone().into_bytes(), format!("tenant-{}", t % 8));
                    spec.idempotency_key = Some(format!("{t}-{i}"));
                    let job = Job::new(spec, SystemTime::now());
                    ids.push(store.insert(job).await.expect("insert").job.id);
                }
                ids
            })
        })
        .collect();
    let mut ids = Vec::with_capacity(total);
    for task in tasks {
        ids.extend(task.await.expect("task"));
    }
    let insert_secs = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let chunks: Vec<Vec<_>> = ids.chunks(per_task).map(<[_]>::to_vec).collect();
    let tasks: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for id in chunk {
                    let change = StateChange::Dispatch {
                        node: "gpu-1".into(),
                        prompt_id: uuid::Uuid::new_v4(),
                    };
                    store
                        .record(id, change, SystemTime::now())
                        .await
                        .expect("record");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    let record_secs = started.elapsed().as_secs_f64();

    let n = ids.len() as f64;
    println!(
        "journal: {} jobs, {concurrency} concurrent submitters, synchronous=FULL",
        ids.len()
    );
    println!("inserts: {:.0}/s ({insert_secs:.2} s)", n / insert_secs);
    println!(
        "dispatch records: {:.0}/s ({record_secs:.2} s)",
        n / record_secs
    );
}
