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
        let _ = log.append(JobEvent::Queued { position });
        let live = self.keep(job, arrival, log);
        live.new_span()
            .in_scope(|| debug!(queue_position = position, "queued"));
        self.live.insert(id, Box::new(live));
        self.metrics.jobs_queued.set(self.queue.len() as i64);
        self.dirty = true;
        position
    }

    /// The record kept of a job that becomes live: hollow, with its analysis shared and its
    /// VRAM need computed once from the full job (the activations estimate parses the graph).
    pub(super) fn keep(&mut self, mut job: Job, arrival: u64, log: Arc<EventLog>) -> Live {
        let vram_need = crate::analysis::job_view(&job, arrival).vram_need;
        let needs = self.analyses.share(std::mem::take(&mut job.spec.analysis));
        Live::new(job, arrival, needs, vram_need, log)
    }

    /// Forgets a live job that has ended and whose writes are done.
    pub(super) fn forget(&mut self, id: JobId) {
        if let Some(live) = self.live.remove(&id) {
            self.analyses.release(live.needs);
        }
    }

    /// The number of queued jobs ahead of `key`.
    pub(super) fn position_of(&self, key: &QueueKey) -> u64 {
        // Counting from the back is cheap for the common case: a new job joins the tail.
        let at_or_after = self.queue.range(key..).count();
        (self.queue.len() - at_or_after) as u64
    }

    /// One placement round: asks the policy for assignments and dispatches them. Returns
    /// whether it looked at the nodes (false when the queue was empty or no slot was free).
    pub(super) fn place(&mut self) -> bool {
        if self.queue.is_empty() {
            return false;
        }
        let fleet = self.fleet.nodes();
        // A full view copies each node's class and model inventory (hundreds of names), and
        // rounds run on almost every wake of a busy manager; most of them find every slot
        // taken. Counting free slots first, from the few numbers they depend on, skips those
        // rounds without building a single view.
        let free_slots: usize = fleet.iter().map(|node| free_slots(node) as usize).sum();
        if free_slots == 0 {
            return false;
        }
        let nodes: Vec<_> = fleet.iter().map(|node| node.view()).collect();
        let window = self.settings.round_window.max(free_slots * 8);
        let jobs: Vec<JobView> = self
            .queue
            .iter()
            .take(window)
            .filter_map(|(_, _, id)| self.live.get(id).map(|live| live.view()))
            .map(|mut view| {
                view.load_secs = view
                    .checkpoint
                    .as_deref()
                    .and_then(|c| self.load_times.load_secs(c));
                view
            })
            .collect();
        let snapshot = match Snapshot::new(jobs, nodes, self.settings.queue_order) {
            Ok(snapshot) => snapshot,
            Err(error) => {
                warn!(%error, "placement snapshot refused; skipping this round");
                return true;
            }
        };
        let plan = self.policy.plan(&snapshot, &mut self.rng);
        for assignment in plan.assignments {
            let Ok(uuid) = Uuid::parse_str(&assignment.job.0) else {
                continue;
            };
            self.dispatch(JobId::from_uuid(uuid), &assignment.node.0);
        }
        true
    }

    /// Takes a queued job off the queue and sends it to `node_name`.
    pub(super) fn dispatch(&mut self, id: JobId, node_name: &str) {
        // The tick finds passed deadlines only every so often; a job whose deadline passed
        // since is failed here rather than sent to run after it.
        let now = SystemTime::now();
        let past_deadline = self.live.get(&id).is_some_and(|live| {
            !live.expired && live.job.spec.deadline.is_some_and(|at| at <= now)
        });
        if past_deadline {
            self.expire(id, now);
            return;
        }
        let Some(live) = self.live.get_mut(&id) else {
            return;
        };
        let _entered = live.span().entered();
        let Some(node) = self.fleet.get(node_name) else {
            return;
        };
        let prompt_id = Uuid::new_v4();
        let change = StateChange::Dispatch {
            node: node_name.to_owned(),
            prompt_id,
        };
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
        let titles_known = live.titles.is_some();

        let mut cold = false;
        if let Some(model) = live.needs.placement.checkpoint.clone() {
            let mut status = node.status();
            let vram_total = status.placement_vram_total();
            cold = status
                .resident
                .touch(model, live.vram_need, vram_total)
                .loaded;
            if cold {
                self.metrics
                    .node_model_loads
                    .with_label_values(&[node_name])
                    .inc();
            }
        }
        let mut prompt = OurPrompt::dispatched(
            id,
            attempt,
            live.cost(),
            // Known from an earlier attempt, else installed before the POST (`Msg::Titles`).
            live.titles.clone().unwrap_or_default(),
        );
        prompt.cold = cold;
        // Registered before the POST, so events that beat the POST answer find the job.
        node.prompts.insert(prompt_id.to_string(), prompt);
        self.metrics
            .node_dispatches
            .with_label_values(&[node_name])
            .inc();
        self.metrics
            .node_in_flight
            .with_label_values(&[node_name])
            .set(node.prompts.len() as i64);
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
                    titles: titles_known,
                },
            },
        );
    }

    /// Installs the graph titles parsed after a durable dispatch on the job and on its
    /// registered prompt; returns whether that dispatch is still the job's current attempt.
    pub(super) fn install_titles(
        &mut self,
        id: JobId,
        prompt_id: Uuid,
        titles: Arc<HashMap<String, (String, String)>>,
    ) -> bool {
        let Some(live) = self.live.get_mut(&id) else {
            return false;
        };
        if live.job.progress.prompt_id != Some(prompt_id)
            || live.job.state() != JobState::Dispatched
        {
            return false;
        }
        let Some(node) = live
            .job
            .progress
            .node
            .as_deref()
            .and_then(|name| self.fleet.get(name))
        else {
            return false;
        };
        // Only this task adds and removes entries, and the node cannot report a prompt that
        // was not posted yet, so reading and writing back the entry loses nothing.
        let key = prompt_id.to_string();
        let Some(mut prompt) = node.prompts.get(&key) else {
            return false;
        };
        prompt.titles = Arc::clone(&titles);
        node.prompts.insert(key, prompt);
        live.titles = Some(titles);
        true
    }
}

/// The free slots of `node`, as [`scheduler::NodeView::free_slots`] of [`crate::fleet::Node::view`]
/// would count them, without copying the node's inventory.
pub(super) fn free_slots(node: &crate::fleet::Node) -> u32 {
    let unseen = node.prompts.summary().unseen;
    let status = node.status();
    let load = status
        .queue_running
        .saturating_add(status.queue_pending)
        .saturating_add(unseen);
    node.slot_limit.saturating_sub(load)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use comfy_api::{ClientConfig, NodeClient};

    use super::*;
    use crate::fleet::{Node, NodeSpec};

    fn prompt(job: JobId) -> OurPrompt {
        OurPrompt::dispatched(job, 1, 1, Arc::default())
    }

    #[test]
    fn a_live_job_is_hollow_yet_placed_as_the_full_job() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/sdxl-portrait.json"
        );
        let workflow = bytes::Bytes::from(std::fs::read(path).expect("example workflow"));
        let analysed = crate::analysis::analyse(&workflow).expect("valid workflow");
        let mut spec = crate::job::JobSpec::new(analysed.forward, "tenant-a");
        spec.analysis = analysed.analysis;
        spec.priority = 3;
        spec.required_labels.insert("gpu".into(), "a100".into());
        let job = Job::new(spec, SystemTime::now());
        let expected = crate::analysis::job_view(&job, 7);
        assert!(expected.checkpoint.is_some() && !expected.required_models.is_empty());

        let mut analyses = shared::Analyses::default();
        let needs = analyses.share(job.spec.analysis.clone());
        let log = Arc::new(EventLog::new(job.id, 8, 8));
        let live = Live::new(job.clone(), 7, needs, expected.vram_need, log);
        assert!(
            live.job.spec.workflow.is_empty(),
            "the bytes stay in the journal"
        );
        assert!(live.job.spec.analysis.required_classes.is_empty());
        assert_eq!(live.view(), expected);
        assert_eq!(live.cost(), expected.cost);
        assert_eq!(live.full_job().spec.analysis, job.spec.analysis);

        // A round views every job in its window: jobs with an equal analysis hand placement
        // the one shared copy of their sets, not a copy each.
        let twin = Job::new(job.spec.clone(), SystemTime::now());
        let twin_needs = analyses.share(twin.spec.analysis.clone());
        let twin_log = Arc::new(EventLog::new(twin.id, 8, 8));
        let twin = Live::new(twin, 8, twin_needs, expected.vram_need, twin_log);
        let (a, b) = (live.view(), twin.view());
        assert!(Arc::ptr_eq(&a.required_classes, &b.required_classes));
        assert!(Arc::ptr_eq(&a.required_models, &b.required_models));
    }

    /// A node with three slots whose URL is a closed port on loopback (9, discard).
    fn closed_port_node() -> Node {
        let spec = NodeSpec {
            name: "gpu-0".into(),
            url: "http://127.0.0.1:9".into(),
            labels: Default::default(),
            simulated: true,
        };
        let client = NodeClient::new("gpu-0", "http://127.0.0.1:9", ClientConfig::default())
            .expect("client");
        Node::new(spec, client, "test".into(), 3)
    }

    #[test]
    fn node_views_share_the_node_inventory() {
        let node = closed_port_node();
        {
            let mut status = node.status();
            status.classes = Some(Arc::new(["KSampler".to_owned()].into()));
            let models = [(
                "checkpoints".to_owned(),
                ["xl.safetensors".to_owned()].into(),
            )];
            status.models = Arc::new(models.into());
        }
        let (a, b) = (node.view(), node.view());
        assert!(a.inventory_known);
        assert!(a.has_model(&scheduler::ModelFile::new("checkpoints", "xl.safetensors")));
        assert!(
            Arc::ptr_eq(&a.classes, &b.classes),
            "one copy, not one per round"
        );
        assert!(Arc::ptr_eq(&a.models, &b.models));
    }

    #[test]
    fn free_slots_count_as_the_full_view_does() {
        let node = closed_port_node();
        let check = |node: &Node| {
            assert_eq!(
                free_slots(node),
                node.view().free_slots(),
                "{:?}",
                node.view()
            );
            free_slots(node)
        };
        assert_eq!(check(&node), 3, "an empty node has every slot");
        node.prompts.insert("a".into(), prompt(JobId::new()));
        node.prompts.insert("b".into(), prompt(JobId::new()));
        assert_eq!(check(&node), 1, "unseen prompts hold slots");
        // Once the node lists a prompt, it counts through the node's queue instead.
        node.prompts.mark_seen(&HashSet::from(["a".to_owned()]));
        assert_eq!(check(&node), 2);
        node.status().queue_running = 1;
        assert_eq!(check(&node), 1);
        node.status().queue_pending = 5;
        assert_eq!(check(&node), 0, "a node with foreign work has no slot left");
    }

    #[tokio::test]
    async fn a_node_takes_no_job_while_its_event_socket_is_down() {
        let node = closed_port_node();
        {
            let mut status = node.status();
            status.health = scheduler::Health::Up;
            status.classes = Some(Arc::default());
        }
        assert_eq!(node.view().health, scheduler::Health::Suspect);
        assert!(!scheduler::eligibility::is_available(&node.view()));
        node.status().socket_connected = true;
        assert_eq!(node.view().health, scheduler::Health::Up);
        assert!(scheduler::eligibility::is_available(&node.view()));
        // A node down stays down whatever its socket says.
        node.status().health = scheduler::Health::Down;
        assert_eq!(node.view().health, scheduler::Health::Down);
    }

    #[tokio::test]
    async fn a_node_that_refuses_the_post_is_suspect_and_gets_no_more_jobs() {
        // Port 9 on loopback (discard) is closed here, as a dead ComfyUI's port is: the POST
        // is refused before anything is sent.
        let node = closed_port_node();
        {
            let mut status = node.status();
            status.health = scheduler::Health::Up;
            status.socket_connected = true;
        }
        let workflow = bytes::Bytes::from_static(br#"{"1": {"class_type": "X", "inputs": {}}}"#);
        let error = tasks::post_prompt(&node, &workflow, None, Uuid::new_v4(), None)
            .await
            .expect_err("nothing listens");
        assert!(error.certainly_not_received(), "{error}");
        node.mark_unreachable(&error.to_string());
        let view = node.view();
        assert_eq!(view.health, scheduler::Health::Suspect);
        assert!(!scheduler::eligibility::is_available(&view));
        assert!(node.status().failing_since.is_some());
    }
}
