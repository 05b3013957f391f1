//! Our prompts on one node.
//!
//! The table maps a prompt id to its job. The manager inserts an entry before the POST (so
//! events that arrive before the POST answer are matched), the node actor marks entries seen
//! when a probe of `/queue` lists them, and the entry is removed when the job's attempt ends.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::job::JobId;

/// One of our prompts on a node.
#[derive(Debug, Clone)]
pub struct OurPrompt {
    /// The job it belongs to.
    pub job: JobId,
    /// The attempt number it is.
    pub attempt: u32,
    /// The job's estimated cost, for the node's backlog.
    pub cost: u64,
    /// Class type and title of each workflow node, to describe `executing` events.
    pub titles: Arc<HashMap<String, (String, String)>>,
    /// When it was handed to the node.
    pub dispatched_at: Instant,
    /// Whether a `/queue` probe or an event has shown the node holds it.
    pub seen: bool,
    /// Whether the node said it started executing it.
    pub started: bool,
    /// When the node said it started executing it (`execution_start`).
    pub started_at: Option<Instant>,
    /// When the node last said anything about it (or it was dispatched or last checked), for
    /// the stall watchdog.
    pub last_event: Instant,
}

/// Counts the placement policy needs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PromptSummary {
    /// Our prompts on the node.
    pub total: u32,
    /// Our prompts the node has not shown yet (in flight).
    pub unseen: u32,
    /// Summed cost of our prompts.
    pub cost: u64,
}

/// Our prompts on one node, by prompt id.
#[derive(Debug, Default)]
pub struct PromptTable {
    inner: Mutex<HashMap<String, OurPrompt>>,
}

impl PromptTable {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, OurPrompt>> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a prompt before it is posted.
    pub fn insert(&self, prompt_id: String, prompt: OurPrompt) {
        self.lock().insert(prompt_id, prompt);
    }

    /// Forgets a prompt; returns it if it was there.
    pub fn remove(&self, prompt_id: &str) -> Option<OurPrompt> {
        self.lock().remove(prompt_id)
    }

    /// Returns the prompt's entry.
    pub fn get(&self, prompt_id: &str) -> Option<OurPrompt> {
        self.lock().get(prompt_id).cloned()
    }

    /// Marks the prompt as seen and started on the node; returns its entry and whether this
    /// is the first start.
    pub fn mark_started(&self, prompt_id: &str) -> Option<(OurPrompt, bool)> {
        let mut table = self.lock();
        let prompt = table.get_mut(prompt_id)?;
        prompt.seen = true;
        let first = !prompt.started;
        prompt.started = true;
        prompt.started_at.get_or_insert_with(Instant::now);
        Some((prompt.clone(), first))
    }

    /// Notes that the node just said something about the prompt (or that it was checked).
    pub fn touch(&self, prompt_id: &str) {
        if let Some(prompt) = self.lock().get_mut(prompt_id) {
            prompt.last_event = Instant::now();
        }
    }

    /// Marks as seen every prompt the node listed in `/queue`; returns the ids of ours that
    /// the node listed.
    pub fn mark_seen(&self, listed: &HashSet<String>) {
        for (id, prompt) in self.lock().iter_mut() {
            if listed.contains(id) {
                prompt.seen = true;
            }
        }
    }

    /// Marks as seen every prompt of ours among `listed` (the ids a `/queue` probe listed).
    pub fn mark_listed(&self, listed: &[String]) {
        let mut table = self.lock();
        for id in listed {
            if let Some(prompt) = table.get_mut(id) {
                prompt.seen = true;
            }
        }
    }

    /// Every prompt id with its entry.
    pub fn all(&self) -> Vec<(String, OurPrompt)> {
        self.lock()
            .iter()
            .map(|(id, p)| (id.clone(), p.clone()))
            .collect()
    }

    /// Counts for placement.
    pub fn summary(&self) -> PromptSummary {
        let table = self.lock();
        let mut summary = PromptSummary::default();
        for prompt in table.values() {
            summary.total += 1;
            summary.unseen += u32::from(!prompt.seen);
            summary.cost = summary.cost.saturating_add(prompt.cost);
        }
        summary
    }

    /// Our prompts on the node.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether we have no prompt there.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}
