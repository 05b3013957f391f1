//! The per-job chain of journal writes.
//!
//! Writes run in helper tasks so the manager never waits for a disk, yet the writes of one job
//! stay in order: each job has a queue of pending writes and at most one in progress. What
//! follows a write (appending events, POSTing a prompt) runs only once it is durable.

use super::*;

impl Manager {
    /// Queues a journal write for a job, keeping the job's writes in order.
    pub(super) fn push_write(&mut self, id: JobId, write: Write) {
        let Some(live) = self.live.get_mut(&id) else {
            return;
        };
        live.writes.push_back(write);
        if !live.writing {
            self.start_next_write(id);
        }
    }

    pub(super) fn start_next_write(&mut self, id: JobId) {
        let Some(live) = self.live.get_mut(&id) else {
            return;
        };
        let Some(write) = live.writes.pop_front() else {
            live.writing = false;
            if live.job.state().is_terminal() {
                self.forget(id);
            } else if live.writes.capacity() > 0 {
                // A requeued job may wait long; its emptied list should not keep its room.
                live.writes = VecDeque::new();
            }
            return;
        };
        live.writing = true;
        let store = Arc::clone(&self.store);
        let log = Arc::clone(&live.log);
        let tx = self.tx.clone();
        let node = match &write.then {
            After::Post { node, .. } => self.fleet.get(node),
            _ => None,
        };
        let live_span = live.span();
        let uploads = self.settings.uploads.clone();
        tokio::spawn(
            async move {
                let recorded = record_with_retry(&*store, id, &write).await;
                let ok = recorded.is_some();
                match write.then {
                    After::Nothing => {}
                    After::Append(events) => {
                        for event in events {
                            let _ = log.append(event);
                        }
                    }
                    After::Post {
                        node: node_name,
                        prompt_id,
                        event,
                        titles,
                    } => {
                        let _ = log.append(*event);
                        let result = match (node, recorded) {
                            // Never POST an attempt the journal does not hold: after a restart
                            // nobody would know to look for the prompt on the node.
                            (Some(_), None) => Err(tasks::PostError::Unrecorded),
                            (Some(node), Some(job)) => {
                                // The journal's copy is the exact bytes the caller sent.
                                let workflow = job.spec.workflow;
                                if titles || install_titles(&tx, id, prompt_id, &workflow).await {
                                    tasks::post_prompt(
                                        &node,
                                        &workflow,
                                        job.spec.extras.as_deref(),
                                        prompt_id,
                                        uploads.as_ref(),
                                    )
                                    .await
                                } else {
                                    Err(tasks::PostError::Superseded)
                                }
                            }
                            (None, _) => Err(tasks::PostError::NodeGone),
                        };
                        let _ = tx.send(Msg::Posted {
                            id,
                            prompt_id,
                            node: node_name,
                            result,
                        });
                    }
                }
                let _ = tx.send(Msg::WriteDone { id, ok });
            }
            .instrument(live_span),
        );
    }

    pub(super) fn write_done(&mut self, id: JobId, _ok: bool) {
        if let Some(live) = self.live.get_mut(&id) {
            live.writing = false;
        }
        self.start_next_write(id);
    }
}

/// Parses the graph titles of a dispatched job and has the manager install them on its
/// prompt before the POST; returns whether the attempt is still current.
async fn install_titles(
    tx: &mpsc::UnboundedSender<Msg>,
    id: JobId,
    prompt_id: Uuid,
    workflow: &bytes::Bytes,
) -> bool {
    let titles = crate::analysis::titles(workflow);
    let (reply, answer) = oneshot::channel();
    let asked = tx.send(Msg::Titles {
        id,
        prompt_id,
        titles,
        reply,
    });
    asked.is_ok() && answer.await.unwrap_or(false)
}

/// The first pause after a failed journal write; it doubles up to [`WRITE_RETRY_MAX`].
const WRITE_RETRY_MIN: Duration = Duration::from_millis(50);
/// The longest pause between tries of one journal write.
const WRITE_RETRY_MAX: Duration = Duration::from_secs(5);

/// Writes one change, trying again with backoff while the failure is transient (the disk,
/// SQLite), so a failed write does not leave the journal behind memory. The job's later
/// writes wait meanwhile, which keeps its order. Returns the job as stored (with its
/// workflow) once the change is durable, `None` if the journal refused it.
///
/// NOTE: while the journal keeps failing, the job's writes (and the events and POST that
/// follow them) wait indefinitely; the job resumes when the disk recovers. A refused write
/// (illegal transition, unknown job) is not retried: it would fail the same way.
async fn record_with_retry(store: &dyn JobStore, id: JobId, write: &Write) -> Option<Job> {
    let mut pause = WRITE_RETRY_MIN;
    let mut failures = 0u32;
    loop {
        match store.record(id, write.change.clone(), write.at).await {
            Ok(job) => {
                if failures > 0 {
                    info!(failures, "journal write succeeded after retrying");
                }
                return Some(job);
            }
            Err(error) if error.is_transient() => {
                failures += 1;
                warn!(%error, failures, retry_in = ?pause, "journal write failed; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(WRITE_RETRY_MAX);
            }
            Err(error) => {
                warn!(%error, "journal refused the write; the journal keeps the job's previous state");
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::job::JobSpec;
    use crate::journal::{
        Inserted, JobPage, JournalError, ListQuery, SqliteOptions, SqliteStore, StoreFuture,
    };

    /// A journal whose next `failures` writes fail as a disk would.
    struct Flaky {
        inner: SqliteStore,
        failures: AtomicU32,
    }

    impl JobStore for Flaky {
        fn insert(&self, job: Job) -> StoreFuture<'_, Inserted> {
            self.inner.insert(job)
        }
        fn record(&self, id: JobId, change: StateChange, at: SystemTime) -> StoreFuture<'_, Job> {
            let left = self.failures.load(Ordering::SeqCst);
            if left > 0 {
                self.failures.store(left - 1, Ordering::SeqCst);
                return Box::pin(async { Err(JournalError::CommitFailed("disk full".into())) });
            }
            self.inner.record(id, change, at)
        }
        fn get(&self, id: JobId) -> StoreFuture<'_, Option<Job>> {
            self.inner.get(id)
        }
        fn list(&self, query: ListQuery) -> StoreFuture<'_, JobPage> {
            self.inner.list(query)
        }
        fn load_unfinished(&self) -> StoreFuture<'_, Vec<Job>> {
            self.inner.load_unfinished()
        }
        fn purge_finished(&self, finished_before: SystemTime) -> StoreFuture<'_, u64> {
            self.inner.purge_finished(finished_before)
        }
        fn count_by_state(&self) -> StoreFuture<'_, BTreeMap<JobState, u64>> {
            self.inner.count_by_state()
        }
        fn set_drained(&self, name: String, drained: bool) -> StoreFuture<'_, ()> {
            self.inner.set_drained(name, drained)
        }
        fn drained_nodes(&self) -> StoreFuture<'_, std::collections::BTreeSet<String>> {
            self.inner.drained_nodes()
        }
    }

    fn write(change: StateChange) -> Write {
        Write {
            change,
            at: SystemTime::now(),
            then: After::Nothing,
        }
    }

    #[tokio::test]
    async fn transient_failures_are_retried_until_durable_and_refusals_are_not() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Flaky {
            inner: SqliteStore::open_in_dir(dir.path(), SqliteOptions::default())
                .expect("open journal"),
            failures: AtomicU32::new(3),
        };
        let job = Job::new(
            JobSpec::new(bytes::Bytes::from_static(b"{}"), "t"),
            SystemTime::now(),
        );
        let id = job.id;
        store.insert(job).await.expect("insert");
        let dispatch = StateChange::Dispatch {
            node: "gpu-0".into(),
            prompt_id: uuid::Uuid::new_v4(),
        };
        let stored = record_with_retry(&store, id, &write(dispatch))
            .await
            .expect("durable after retries");
        assert_eq!(stored.state(), JobState::Dispatched);
        assert_eq!(
            stored.spec.workflow.as_ref(),
            b"{}",
            "a dispatch comes back with the workflow it posts"
        );
        assert_eq!(
            store.failures.load(Ordering::SeqCst),
            0,
            "retried past 3 failures"
        );
        let cancel = StateChange::Cancel {
            reason: "test".into(),
        };
        let stored = record_with_retry(&store, id, &write(cancel.clone()))
            .await
            .expect("durable");
        assert_eq!(stored.state(), JobState::Cancelled);
        assert!(
            stored.spec.workflow.is_empty(),
            "other changes leave the workflow unread"
        );
        let stored = store.get(id).await.expect("get").expect("job");
        assert_eq!(
            stored.state(),
            JobState::Cancelled,
            "the terminal write is durable"
        );
        // Cancelling a cancelled job is refused by the journal: not retried forever.
        assert!(
            record_with_retry(&store, id, &write(cancel))
                .await
                .is_none()
        );
    }
}
