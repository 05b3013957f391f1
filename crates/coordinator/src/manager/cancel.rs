//! Cancelling a live job wherever it is: in the queue, queued on a node, or running.

use super::*;

impl Manager {
    pub(super) fn cancel(
        &mut self,
        id: JobId,
        reason: String,
    ) -> Result<CancelOutcome, ManagerError> {
        let _entered = self.span_of(id).entered();
        info!(%reason, "cancel requested");
        let tx = self.tx_for_tasks();
        let Some(live) = self.live.get_mut(&id) else {
            return Err(ManagerError::NotLive(id));
        };
        let state = live.job.state();
        if state.is_terminal() {
            return Ok(CancelOutcome::AlreadyTerminal);
        }
        if state == JobState::Queued {
            if self
                .queue
                .remove(&(Reverse(live.job.spec.priority), live.arrival, id))
            {
                self.admission.left(&live.job.spec.tenant, false);
            }
            self.metrics.jobs_queued.set(self.queue.len() as i64);
            let now = SystemTime::now();
            let change = StateChange::Cancel {
                reason: reason.clone(),
            };
            let Ok(next) = live.job.apply(change.clone(), now) else {
                return Ok(CancelOutcome::AlreadyTerminal);
            };
            live.job = next;
            self.metrics
                .jobs_finished
                .with_label_values(&["cancelled"])
                .inc();
            self.push_write(
                id,
                Write {
                    change,
                    at: now,
                    then: After::Append(vec![JobEvent::Cancelled { reason }]),
                },
            );
            return Ok(CancelOutcome::RemovedFromQueue);
        }
        let outcome = if state == JobState::Running {
            CancelOutcome::Interrupted
        } else {
            CancelOutcome::DeletedFromNodeQueue
        };
        if live.cancel.is_some() {
            return Ok(outcome);
        }
        live.cancel = Some(reason);
        live.cancel_sent = Some(Instant::now());
        let (Some(node_name), Some(prompt_id)) =
            (live.job.progress.node.clone(), live.job.progress.prompt_id)
        else {
            return Ok(outcome);
        };
        if live.posted
            && let Some(node) = self.fleet.get(&node_name)
        {
            tasks::spawn_cancel_on_node(node, id, prompt_id, tx);
        }
        Ok(outcome)
    }
}
