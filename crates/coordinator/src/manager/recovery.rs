//! Taking back jobs after a restart and reacting to node signals.
//!
//! A job that was on a node when the coordinator stopped is tracked there again and
//! reconciled over HTTP; node actors' signals (prompt started or ended, events possibly
//! missed, node lost) are turned into reconciliations or attempt ends here.

use super::*;

impl Manager {
    /// Tracks a job that was on a node when the coordinator stopped (see
    /// [`ManagerHandle::recover`]).
    pub(super) fn adopt(&mut self, job: Job) {
        let id = job.id;
        let node = job
            .progress
            .node
            .as_deref()
            .and_then(|name| self.fleet.get(name));
        let prompt_id = job.progress.prompt_id;
        self.next_arrival += 1;
        let arrival = self.next_arrival;
        let log = self.hub.open(id);
        let started = job.state() == JobState::Running;
        let attempt = job.progress.attempt;
        // The journal gave the workflow with the job: parse the titles now, before the record
        // drops the bytes, for the events of the attempt being reattached.
        let titles = crate::analysis::titles(&job.spec.workflow);
        let mut live = self.keep(job, arrival, log);
        live.titles = Some(Arc::clone(&titles));
        live.dispatched = Some(Instant::now());
        live.posted = true;
        let cost = live.cost();
        let _entered = live.span().entered();
        info!(
            ?prompt_id,
            attempt, "recovered a job that was on a node; reconciling"
        );
        self.live.insert(id, Box::new(live));
        self.metrics.jobs_running.inc();
        let (Some(node), Some(prompt_id)) = (node, prompt_id) else {
            // Its node left the configuration: the attempt cannot be checked, so retry it.
            let end = AttemptEnd::Failed(Failure::new(
                FailureClass::NodeLost,
                "the job's node is no longer configured",
            ));
            if let Some(prompt_id) = prompt_id {
                let name = self.live[&id].job.progress.node.clone().unwrap_or_default();
                self.end_attempt(id, prompt_id, &name, end);
            }
            return;
        };
        node.prompts.insert(
            prompt_id.to_string(),
            OurPrompt {
                started,
                ..OurPrompt::dispatched(id, attempt, cost, titles)
            },
        );
        tasks::spawn_reconcile(node, id, prompt_id, self.tx_for_tasks());
    }

    pub(super) fn signal(&mut self, signal: Signal) {
        match signal {
            Signal::Wake => self.dirty = true,
            Signal::PromptStarted { job, prompt_id, .. } => {
                let Some(live) = self.live.get_mut(&job) else {
                    return;
                };
                let _entered = live.span().entered();
                if live.job.progress.prompt_id.map(|p| p.to_string()) != Some(prompt_id) {
                    return;
                }
                let now = SystemTime::now();
                if let Ok(next) = live.job.apply(StateChange::Start, now) {
                    live.job = next;
                    self.push_write(
                        job,
                        Write {
                            change: StateChange::Start,
                            at: now,
                            then: After::Nothing,
                        },
                    );
                }
            }
            Signal::PromptEnded {
                node,
                prompt_id,
                job,
            } => {
                let Some(node) = self.fleet.get(&node) else {
                    return;
                };
                let Ok(prompt) = Uuid::parse_str(&prompt_id) else {
                    return;
                };
                let _entered = self.span_of(job).entered();
                tasks::spawn_read_history(node, job, prompt, self.tx_for_tasks());
            }
            Signal::Reconcile { node } => {
                let Some(node) = self.fleet.get(&node) else {
                    return;
                };
                for (prompt_id, prompt) in node.prompts.all() {
                    let Ok(uuid) = Uuid::parse_str(&prompt_id) else {
                        continue;
                    };
                    let posted = self.live.get(&prompt.job).is_some_and(|live| live.posted);
                    if posted {
                        let _entered = self.span_of(prompt.job).entered();
                        tasks::spawn_reconcile(node.clone(), prompt.job, uuid, self.tx_for_tasks());
                    }
                }
            }
            Signal::NodeLost { node: name } => {
                let Some(node) = self.fleet.get(&name) else {
                    return;
                };
                for (prompt_id, prompt) in node.prompts.all() {
                    let Ok(uuid) = Uuid::parse_str(&prompt_id) else {
                        continue;
                    };
                    let _entered = self.span_of(prompt.job).entered();
                    warn!(node = %name, "node lost with our prompt; requeueing");
                    let failure = Failure::new(
                        FailureClass::NodeLost,
                        format!("node {name} stopped answering while holding the prompt"),
                    );
                    self.end_attempt(prompt.job, uuid, &name, AttemptEnd::Failed(failure));
                }
            }
        }
    }
}
