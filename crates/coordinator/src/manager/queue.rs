//! The coordinator's queue and placement rounds.
//!
//! Jobs wait in a priority-then-arrival ordered set; a placement round hands the head of the
//! queue and a view of every node to the scheduling policy and dispatches what it assigns.
//! Dispatch records the attempt in the journal before the prompt is POSTed (see `writes`).

use super::*;

impl Manager {
    /// Adds a job to the queue (new, recovered or requeued) and returns its position.
    pub(super) fn enqueue(&mut self, job: Job, arrival: Option<u64>) -> u64 {
        let id = job.id;
        let arrival = arrival.unwrap_or_else(|| {
            self.next_arrival += 1;
            self.next_arrival
        });
        let key = (Reverse(job.spec.priority), arrival, id);
        if self.queue.insert(key) {
            self.admission.joined(&job.spec.tenant);
        }
        let position = self.position_of(&key);
        let log = self.hub.open(id);
        let view = crate::analysis::job_view(&job, arrival);
        let _ = log.append(JobEvent::Queued { position });
        let live = Live::new(job, arrival, view, log);
        live.span
            .in_scope(|| debug!(queue_position = position, "queued"));
        self.live.insert(id, live);
        self.metrics.jobs_queued.set(self.queue.len() as i64);
        self.dirty = true;
        position
    }

    /// The number of queued jobs ahead of `key`.
    pub(super) fn position_of(&self, key: &QueueKey) -> u64 {
        // Counting from the back is cheap for the common case: a new job joins the tail.
        let at_or_after = self.queue.range(key..).count();
        (self.queue.len() - at_or_after) as u64
    }

    /// One placement round: asks the policy for assignments and dispatches them.
    pub(super) fn place(&mut self) {
        if self.queue.is_empty() {
            return;
        }
        let nodes: Vec<_> = self.fleet.nodes().iter().map(|node| node.view()).collect();
        let free_slots: usize = nodes.iter().map(|node| node.free_slots() as usize).sum();
        if free_slots == 0 {
            return;
        }
        let window = self.settings.round_window.max(free_slots * 8);
        let jobs: Vec<JobView> = self
            .queue
            .iter()
            .take(window)
            .filter_map(|(_, _, id)| self.live.get(id).map(|live| live.view.clone()))
            .collect();
        let snapshot = match Snapshot::new(jobs, nodes, self.settings.queue_order) {
            Ok(snapshot) => snapshot,
            Err(error) => {
                warn!(%error, "placement snapshot refused; skipping this round");
                return;
            }
        };
        let plan = self.policy.plan(&snapshot, &mut self.rng);
        for assignment in plan.assignments {
            let Ok(uuid) = Uuid::parse_str(&assignment.job.0) else {
                continue;
            };
            self.dispatch(JobId::from_uuid(uuid), &assignment.node.0);
        }
    }

    /// Takes a queued job off the queue and sends it to `node_name`.
    pub(super) fn dispatch(&mut self, id: JobId, node_name: &str) {
        let _entered = self.span_of(id).entered();
        let Some(node) = self.fleet.get(node_name) else {
            return;
        };
        let Some(live) = self.live.get_mut(&id) else {
            return;
        };
        let prompt_id = Uuid::new_v4();
        let change = StateChange::Dispatch {
            node: node_name.to_owned(),
            prompt_id,
        };
        let now = SystemTime::now();
        let job = match live.job.apply(change.clone(), now) {
            Ok(job) => job,
            Err(error) => {
                warn!(job_id = %id, %error, "cannot dispatch");
                return;
            }
        };
        if self
            .queue
            .remove(&(Reverse(job.spec.priority), live.arrival, id))
        {
            self.admission.left(&job.spec.tenant, true);
        }
        self.metrics.jobs_queued.set(self.queue.len() as i64);
        self.metrics.jobs_running.inc();
        if live.dispatched.is_none() {
            self.metrics
                .job_queue_wait
                .observe(live.submitted.elapsed().as_secs_f64());
        }
        live.dispatched = Some(Instant::now());
        live.posted = false;
        let attempt = job.progress.attempt;
        live.job = job;

        // Registered before the POST, so events that beat the POST answer find the job.
        node.prompts.insert(
            prompt_id.to_string(),
            OurPrompt {
                job: id,
                attempt,
                cost: live.view.cost,
                titles: live.titles(),
                dispatched_at: Instant::now(),
                seen: false,
                started: false,
                started_at: None,
                last_event: Instant::now(),
            },
        );
        self.metrics
            .node_dispatches
            .with_label_values(&[node_name])
            .inc();
        self.metrics
            .node_in_flight
            .with_label_values(&[node_name])
            .set(node.prompts.len() as i64);
        if let Some(model) = live.view.checkpoint.clone() {
            let mut status = node.status();
            if status.last_model.as_deref() != Some(model.as_str()) {
                self.metrics
                    .node_model_loads
                    .with_label_values(&[node_name])
                    .inc();
            }
            status.last_model = Some(model);
        }
        info!(job_id = %id, node = node_name, %prompt_id, attempt, "dispatching");
        let event = JobEvent::Dispatched {
            node: node_name.to_owned(),
            prompt_id,
            attempt,
        };
        self.push_write(
            id,
            Write {
                change,
                at: now,
                then: After::Post {
                    node: node_name.to_owned(),
                    prompt_id,
                    event: Box::new(event),
                },
            },
        );
    }
}
