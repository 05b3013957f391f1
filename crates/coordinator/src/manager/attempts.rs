//! The end of an attempt: success, retry, failure or cancellation.
//!
//! Every way an attempt can end (the node's history, a refused or uncertain POST, a lost node)
//! comes here; only the job's current attempt may move it, so late reports are moot.

use super::*;
use crate::fleet::speed::{SpeedEstimator, SpeedSample};

impl Manager {
    pub(super) fn posted(
        &mut self,
        id: JobId,
        prompt_id: Uuid,
        node_name: String,
        result: Result<(), tasks::PostError>,
    ) {
        let _entered = self.span_of(id).entered();
        let Some(live) = self.live.get_mut(&id) else {
            return;
        };
        if live.job.progress.prompt_id != Some(prompt_id) {
            return;
        }
        match result {
            Ok(()) => {
                live.posted = true;
                if let Some(reason) = live.cancel.clone() {
                    // The cancel arrived while the POST was in flight: finish it now.
                    if let Some(node) = self.fleet.get(&node_name) {
                        tasks::spawn_cancel_on_node(node, id, prompt_id, self.tx_for_tasks());
                    }
                    debug!(reason, "cancel deferred until the prompt was posted");
                }
            }
            Err(tasks::PostError::Rejected(failure)) => {
                // The node refused the workflow (validation): the job's own fault.
                self.end_attempt(id, prompt_id, &node_name, AttemptEnd::Failed(*failure));
            }
            Err(error) => {
                let class = if matches!(error, tasks::PostError::Unrecorded) {
                    FailureClass::Coordinator
                } else {
                    FailureClass::NodeLost
                };
                let failure = Failure::new(class, format!("node {node_name}: {error}"));
                if error.certainly_not_received() {
                    if matches!(error, tasks::PostError::Transport { .. })
                        && let Some(node) = self.fleet.get(&node_name)
                    {
                        // The retry must not go straight back to a node that cannot be reached.
                        warn!(node = %node_name, %error, "node unreachable; suspect until it answers a probe");
                        node.mark_unreachable(&error.to_string());
                    }
                    self.end_attempt(id, prompt_id, &node_name, AttemptEnd::Failed(failure));
                } else {
                    // The POST may have reached the node: never POST again before the node's
                    // queue and history show it is on neither.
                    if let Some(node) = self.fleet.get(&node_name) {
                        warn!(%error, "prompt post uncertain; reconciling");
                        tasks::spawn_reconcile(node, id, prompt_id, self.tx_for_tasks());
                    }
                }
            }
        }
    }

    pub(super) fn tx_for_tasks(&self) -> tasks::Reply {
        let tx = self.tx.clone();
        tasks::Reply::new(move |id, prompt_id, node, end| {
            let _ = tx.send(Msg::AttemptEnded {
                id,
                prompt_id,
                node,
                end,
            });
        })
    }

    pub(super) fn attempt_ended(
        &mut self,
        id: JobId,
        prompt_id: Uuid,
        node: &str,
        end: AttemptEnd,
    ) {
        self.end_attempt(id, prompt_id, node, end);
    }

    /// Decides what follows the end of an attempt: success, retry, failure or cancellation.
    pub(super) fn end_attempt(
        &mut self,
        id: JobId,
        prompt_id: Uuid,
        node_name: &str,
        end: AttemptEnd,
    ) {
        let _entered = self.span_of(id).entered();
        // A GPU that ran out of memory will most likely do so again, and so will any GPU of
        // the same size: the VRAM estimate made at submit was too low. When the fleet has a
        // larger GPU, the retry must need more VRAM than the failing one has, so placement
        // moves it up instead of burning every attempt on the same node.
        // On the fleet's largest GPU there is nowhere to move up to: one retry there is allowed
        // (the node frees its memory after the failure, and another job's leftovers may have
        // been the cause), a second such failure ends the job.
        let oom = matches!(&end, AttemptEnd::Failed(failure) if failure.class == FailureClass::OutOfMemory);
        let failed_vram = if oom {
            self.fleet
                .get(node_name)
                .map(|failed| failed.view().vram_total)
        } else {
            None
        };
        let larger_exists = failed_vram.map(|failed_vram| {
            self.fleet
                .nodes()
                .iter()
                .any(|other| other.view().vram_total > failed_vram)
        });
        let oom_vram_floor = match (failed_vram, larger_exists) {
            (Some(failed_vram), Some(true)) => Some(failed_vram.saturating_add(1)),
            _ => None,
        };
        let oom_on_largest = larger_exists == Some(false);
        let Some(live) = self.live.get_mut(&id) else {
            return;
        };
        // Only the current attempt may move the job; a late report of an earlier one is moot.
        if live.job.progress.prompt_id != Some(prompt_id) || live.job.state().is_terminal() {
            return;
        }
        let node = self.fleet.get(node_name);
        let mut ended_prompt = None;
        if let Some(node) = &node {
            ended_prompt = node.prompts.remove(&prompt_id.to_string());
            self.metrics
                .node_in_flight
                .with_label_values(&[node_name])
                .set(node.prompts.len() as i64);
        }
        self.metrics.jobs_running.dec();
        self.dirty = true;
        let execution = live
            .dispatched
            .map(|at| at.elapsed().as_secs_f64())
            .unwrap_or_default();
        let now = SystemTime::now();
        let attempt = live.job.progress.attempt;

        let (change, events, outcome): (StateChange, Vec<JobEvent>, &str) =
            match (end, live.cancel.clone()) {
                (AttemptEnd::Succeeded(outputs, ui_values), _) => {
                    if let Some(node) = &node {
                        let mut status = node.status();
                        status.jobs_done += 1;
                        // Each success teaches placement how fast this node is: the time from
                        // its first sampler step (else from the prompt's start) to its end,
                        // against the job's cost. Timing from the first step leaves a model load
                        // out: a cold first job would otherwise teach a speed several times too
                        // low, and a node judged slow is never given the job that would correct
                        // it.
                        if let Some(started_at) = ended_prompt
                            .as_ref()
                            .and_then(|p| p.sampling_since.or(p.started_at))
                        {
                            let sample = SpeedSample {
                                cost: ended_prompt.as_ref().map_or(0, |p| p.cost),
                                execution_secs: started_at.elapsed().as_secs_f64(),
                                model_load_secs: None,
                            };
                            status.speed = SpeedEstimator::default().update(status.speed, &sample);
                        }
                        // The gap before the first sampler step holds the model load, if any.
                        if let (Some(prompt), Some(model)) =
                            (&ended_prompt, live.needs.placement.checkpoint.clone())
                            && let (Some(started), Some(sampling)) =
                                (prompt.started_at, prompt.sampling_since)
                        {
                            self.load_times.record(
                                &model,
                                prompt.cold,
                                sampling.saturating_duration_since(started).as_secs_f64(),
                            );
                            if let Some(secs) = self.load_times.load_secs(&model) {
                                self.metrics
                                    .model_load_seconds
                                    .with_label_values(&[model.as_str()])
                                    .set(secs);
                            }
                        }
                    }
                    (
                        StateChange::Succeed {
                            outputs: outputs.clone(),
                            ui_values: ui_values.clone(),
                        },
                        vec![JobEvent::Succeeded { outputs, ui_values }],
                        "succeeded",
                    )
                }
                (AttemptEnd::Interrupted | AttemptEnd::Vanished, Some(reason)) => (
                    StateChange::Cancel {
                        reason: reason.clone(),
                    },
                    vec![JobEvent::Cancelled { reason }],
                    "cancelled",
                ),
                (end, cancel) => {
                    let failure = match end {
                        AttemptEnd::Failed(failure) => failure,
                        AttemptEnd::Interrupted => Failure::new(
                            FailureClass::NodeEnvironment,
                            format!("node {node_name}: the prompt was interrupted by someone else"),
                        ),
                        AttemptEnd::Vanished => Failure::new(
                            FailureClass::NodeLost,
                            format!(
                                "node {node_name}: the prompt is neither queued nor in history"
                            ),
                        ),
                        AttemptEnd::Succeeded(..) => unreachable!("handled above"),
                    };
                    if let Some(node) = &node {
                        node.status().jobs_failed += 1;
                        if failure.class == FailureClass::OutOfMemory {
                            tasks::spawn_free(node.clone());
                        }
                    }
                    if let Some(reason) = cancel {
                        // A cancelled job that failed meanwhile still ends as cancelled.
                        (
                            StateChange::Cancel {
                                reason: reason.clone(),
                            },
                            vec![JobEvent::Cancelled { reason }],
                            "cancelled",
                        )
                    } else if failure.retryable
                        && attempt < self.settings.max_attempts
                        && !(oom_on_largest && live.oom_on_largest)
                    {
                        let reason = failure.message.clone();
                        info!(attempt, %reason, "retrying");
                        self.metrics
                            .jobs_retried
                            .with_label_values(&[failure.class.as_str()])
                            .inc();
                        let change = StateChange::Requeue {
                            reason: reason.clone(),
                            class: Some(failure.class),
                        };
                        let Ok(next) = live.job.apply(change.clone(), now) else {
                            return;
                        };
                        let arrival = live.arrival;
                        let key = (Reverse(next.spec.priority), arrival, id);
                        live.job = next;
                        live.dispatched = None;
                        live.posted = false;
                        if let Some(floor) = oom_vram_floor {
                            info!(vram_need = floor, "out of memory; retry needs a larger GPU");
                            live.vram_need = live.vram_need.max(floor);
                        }
                        live.oom_on_largest |= oom_on_largest;
                        if self.queue.insert(key) {
                            self.admission.joined(&live.job.spec.tenant);
                        }
                        let position = self.position_of(&key);
                        self.metrics.jobs_queued.set(self.queue.len() as i64);
                        let events = vec![
                            JobEvent::Retrying {
                                attempt,
                                reason,
                                class: failure.class,
                            },
                            JobEvent::Queued { position },
                        ];
                        self.push_write(
                            id,
                            Write {
                                change,
                                at: now,
                                then: After::Append(events),
                            },
                        );
                        return;
                    } else {
                        let mut failure = failure;
                        if failure.retryable && oom_on_largest && live.oom_on_largest {
                            let gib =
                                failed_vram.unwrap_or_default() as f64 / f64::from(1u32 << 30);
                            failure.message = format!(
                                "{} (out of memory twice on the largest GPU in the fleet, \
                                 {gib:.0} GiB: no node can run it)",
                                failure.message
                            );
                        } else if failure.retryable {
                            failure.message =
                                format!("{} (gave up after {attempt} attempts)", failure.message);
                        }
                        failure.retryable = false;
                        final_failure(&live.job, node_name, prompt_id, now, failure)
                    }
                }
            };
        // A job interrupted because its deadline passed fails (class deadline) rather than
        // being cancelled: nobody asked for it to stop.
        let (change, events, outcome) = if outcome == "cancelled" && live.expired {
            let failure = Failure::new(
                FailureClass::Deadline,
                format!("the deadline passed while the job was on node {node_name}"),
            );
            final_failure(&live.job, node_name, prompt_id, now, failure)
        } else {
            (change, events, outcome)
        };
        let Ok(next) = live.job.apply(change.clone(), now) else {
            return;
        };
        live.job = next;
        self.metrics
            .jobs_finished
            .with_label_values(&[outcome])
            .inc();
        self.metrics.job_execution.observe(execution);
        self.metrics
            .job_end_to_end
            .observe(live.submitted.elapsed().as_secs_f64());
        info!(outcome, "job finished");
        self.push_write(
            id,
            Write {
                change,
                at: now,
                then: After::Append(events),
            },
        );
    }
}

/// The change, events and outcome label of a job that fails for good on its current attempt:
/// the Failed event carries every attempt, this last one included.
fn final_failure(
    job: &Job,
    node_name: &str,
    prompt_id: Uuid,
    now: SystemTime,
    failure: Failure,
) -> (StateChange, Vec<JobEvent>, &'static str) {
    let attempt = job.progress.attempt;
    let mut history = job.progress.attempts.clone();
    history.push(AttemptRecord {
        attempt,
        node: node_name.to_owned(),
        prompt_id,
        reason: failure.message.clone(),
        class: Some(failure.class),
        ended_at: now,
    });
    (
        StateChange::Fail {
            failure: failure.clone(),
        },
        vec![JobEvent::Failed {
            failure,
            attempts: attempt,
            history,
        }],
        "failed",
    )
}
