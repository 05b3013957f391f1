//! The manager's periodic tick: deadlines, the stall watchdog, and unfinished cancellations.
//!
//! Events from nodes drive jobs forward, but some things happen because nothing happened:
//! a deadline passes, a node goes quiet about a prompt, a cancel's interrupt was not yet
//! visible when it was checked. A tick (every [`ManagerSettings::tick`]) looks for these:
//!
//! - a **queued** job past its deadline leaves the queue and fails with class `deadline`;
//!   a job **on a node** past its deadline is interrupted by its prompt id and fails with
//!   class `deadline` once the node confirms it stopped (a run that finished meanwhile keeps
//!   its success);
//! - a prompt of ours with no event for [`ManagerSettings::stall_timeout`] is reconciled
//!   over HTTP (`/queue`, then `/history`), which ends the attempt exactly once whatever the
//!   socket missed;
//! - a job being cancelled (by a caller or its deadline) whose prompt is still on the node is
//!   asked again every [`RECHECK_CANCEL`], so a cancel cannot hang on one early check.
//!
//! A job without a deadline has none: estimating one from cost would fail slow but healthy
//! runs, and a node that hangs is caught by the stall watchdog and node health instead.
//!
//! NOTE: deadlines are found by scanning every live job each tick, which is cheap for the
//! tens of thousands of jobs a coordinator holds but grows with them; an index by deadline
//! would be needed for millions.

use super::*;

/// How often an unfinished cancellation is pushed again.
const RECHECK_CANCEL: Duration = Duration::from_secs(2);

impl Manager {
    /// One tick (see the module docs).
    pub(super) fn tick(&mut self) {
        let now = SystemTime::now();
        let expired: Vec<JobId> = self
            .live
            .iter()
            .filter(|(_, live)| {
                !live.expired
                    && !live.job.state().is_terminal()
                    && live.job.spec.deadline.is_some_and(|at| at <= now)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.expire(id, now);
        }
        self.recheck_cancels();
        self.watch_stalls();
    }

    /// Ends or interrupts a job whose deadline passed.
    pub(super) fn expire(&mut self, id: JobId, now: SystemTime) {
        let _entered = self.span_of(id).entered();
        let tx = self.tx_for_tasks();
        let Some(live) = self.live.get_mut(&id) else {
            return;
        };
        live.expired = true;
        if live.job.state() == JobState::Queued {
            if self
                .queue
                .remove(&(Reverse(live.job.spec.priority), live.arrival, id))
            {
                self.admission.left(&live.job.spec.tenant, false);
            }
            self.metrics.jobs_queued.set(self.queue.len() as i64);
            let failure = Failure::new(
                FailureClass::Deadline,
                "the deadline passed while the job was queued",
            );
            let change = StateChange::Fail {
                failure: failure.clone(),
            };
            let Ok(next) = live.job.apply(change.clone(), now) else {
                return;
            };
            let event = JobEvent::Failed {
                failure,
                attempts: live.job.progress.attempt,
                history: live.job.progress.attempts.clone(),
            };
            live.job = next;
            warn!("deadline passed in the queue; failing the job");
            self.metrics
                .jobs_finished
                .with_label_values(&["failed"])
                .inc();
            self.push_write(
                id,
                Write {
                    change,
                    at: now,
                    then: After::Append(vec![event]),
                },
            );
            return;
        }
        if live.cancel.is_some() {
            // Already being cancelled by a caller: that ending stands.
            return;
        }
        warn!("deadline passed on the node; interrupting the prompt");
        live.cancel = Some("the deadline passed".to_owned());
        live.cancel_sent = Some(Instant::now());
        let (Some(node_name), Some(prompt_id)) =
            (live.job.progress.node.clone(), live.job.progress.prompt_id)
        else {
            return;
        };
        if live.posted
            && let Some(node) = self.fleet.get(&node_name)
        {
            tasks::spawn_cancel_on_node(node, id, prompt_id, tx);
        }
    }

    /// Pushes cancellations whose prompt is still on its node.
    fn recheck_cancels(&mut self) {
        let due: Vec<(JobId, String, Uuid)> = self
            .live
            .iter_mut()
            .filter(|(_, live)| {
                live.posted
                    && live.cancel.is_some()
                    && !live.job.state().is_terminal()
                    && live
                        .cancel_sent
                        .is_none_or(|at| at.elapsed() >= RECHECK_CANCEL)
            })
            .filter_map(|(id, live)| {
                live.cancel_sent = Some(Instant::now());
                Some((
                    *id,
                    live.job.progress.node.clone()?,
                    live.job.progress.prompt_id?,
                ))
            })
            .collect();
        for (id, node_name, prompt_id) in due {
            let Some(node) = self.fleet.get(&node_name) else {
                continue;
            };
            let _entered = self.span_of(id).entered();
            debug!(node = %node_name, "cancel not confirmed yet; asking the node again");
            tasks::spawn_cancel_on_node(node, id, prompt_id, self.tx_for_tasks());
        }
    }

    /// Reconciles our prompts that no event has mentioned for the stall timeout.
    fn watch_stalls(&mut self) {
        let timeout = self.settings.stall_timeout;
        for node in &self.fleet.nodes() {
            for (prompt_id, prompt) in node.prompts.all() {
                if prompt.last_event.elapsed() < timeout {
                    continue;
                }
                let posted = self.live.get(&prompt.job).is_some_and(|live| live.posted);
                let Ok(uuid) = Uuid::parse_str(&prompt_id) else {
                    continue;
                };
                if !posted {
                    continue;
                }
                // Checked now: the next check waits a whole timeout again.
                node.prompts.touch(&prompt_id);
                let _entered = self.span_of(prompt.job).entered();
                warn!(
                    node = %node.spec.name,
                    %prompt_id,
                    silent_for = ?timeout,
                    "no event about the prompt for the stall timeout; reconciling over HTTP"
                );
                tasks::spawn_reconcile(Arc::clone(node), prompt.job, uuid, self.tx_for_tasks());
            }
        }
    }
}
