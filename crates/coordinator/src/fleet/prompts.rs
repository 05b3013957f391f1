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
    /// When its first sampler step was reported (`progress`): the work after any model load.
    pub sampling_since: Option<Instant>,
    /// Whether its checkpoint was not believed resident on the node when it was sent, so the
    /// node had to load it (see [`crate::fleet::load_time`]).
    pub cold: bool,
    /// When the node last said anything about it (or it was dispatched or last checked), for
    /// the stall watchdog.
    pub last_event: Instant,
}

impl OurPrompt {
    /// A prompt just handed to the node: not seen, not started, nothing heard yet.
    pub fn dispatched(
        job: JobId,
        attempt: u32,
        cost: u64,
        titles: Arc<HashMap<String, (String, String)>>,
    ) -> Self {
        let now = Instant::now();
        Self {
            job,
            attempt,
            cost,
            titles,
            dispatched_at: now,
            seen: false,
            started: false,
            started_at: None,
            sampling_since: None,
            cold: false,
            last_event: now,
        }
    }
}

/// Counts the placement policy needs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PromptSummary {
    /// Our prompts on the node.
    pub total: u32,
    /// Our prompts the node has not shown yet (in flight).
    pub unseen: u32,
    /// Summed cost of our prompts still to do: a prompt that is running counts only the
    /// part its elapsed time has not covered yet (see [`PromptTable::summary_at`]).
    pub cost: u64,
}

/// Returns the part of `prompt`'s cost still to do at `now` on a node of `speed`.
fn remaining_cost(prompt: &OurPrompt, now: Instant, speed: Option<f64>) -> u64 {
    // Counted from the first sampler step: before it the node may still be loading the model,
    // which the speed does not cover.
    let (Some(started), Some(speed)) = (prompt.sampling_since, speed) else {
        return prompt.cost;
    };
    if !(speed.is_finite() && speed > 0.0) {
        return prompt.cost;
    }
    let floor = prompt.cost / 20;
    let done = now.saturating_duration_since(started).as_secs_f64() * speed;
    // Truncation is fine for an estimate; `as` saturates on overflow and NaN cannot occur
    // (finite positive speed, finite elapsed time).
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let done = done as u64;
    prompt.cost.saturating_sub(done).max(floor)
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

    /// Notes the first `progress` event of the prompt: its sampler has started, so any model
    /// load is behind it.
    pub fn mark_sampling(&self, prompt_id: &str) {
        if let Some(prompt) = self.lock().get_mut(prompt_id) {
            prompt.sampling_since.get_or_insert_with(Instant::now);
        }
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

    /// Counts for placement, with the whole cost of every prompt.
    pub fn summary(&self) -> PromptSummary {
        self.summary_at(Instant::now(), None)
    }

    /// Counts for placement at `now`, on a node working at `speed` cost units per second.
    ///
    /// With a known speed, a running prompt counts only its remaining cost: its cost less what
    /// `speed` gets through in the time since its first sampler step. A node halfway through a long job is
    /// closer to free than one that just began it, and the expected-finish estimate should say
    /// so. A prompt past its expected time still counts a twentieth of its cost: it has not
    /// finished, and the node may simply be slower than learnt.
    pub fn summary_at(&self, now: Instant, speed: Option<f64>) -> PromptSummary {
        let table = self.lock();
        let mut summary = PromptSummary::default();
        for prompt in table.values() {
            summary.total += 1;
            summary.unseen += u32::from(!prompt.seen);
            summary.cost = summary
                .cost
                .saturating_add(remaining_cost(prompt, now, speed));
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn prompt(cost: u64, sampling_since: Option<Instant>) -> OurPrompt {
        let mut prompt = OurPrompt::dispatched(JobId::new(), 1, cost, Arc::default());
        prompt.seen = true;
        prompt.started = sampling_since.is_some();
        prompt.started_at = sampling_since;
        prompt.sampling_since = sampling_since;
        prompt
    }

    #[test]
    fn a_running_prompt_counts_only_what_its_elapsed_time_has_not_covered() {
        let start = Instant::now();
        let table = PromptTable::default();
        table.insert("running".into(), prompt(1_000, Some(start)));
        table.insert("waiting".into(), prompt(500, None));
        let later = start + Duration::from_secs(3);

        // 3 s at 200 units/s covers 600 of the running prompt's 1,000.
        assert_eq!(table.summary_at(later, Some(200.0)).cost, 400 + 500);
        // Without a learnt speed nothing is subtracted.
        assert_eq!(table.summary_at(later, None).cost, 1_500);
        // An unusable speed is ignored rather than trusted.
        assert_eq!(table.summary_at(later, Some(f64::NAN)).cost, 1_500);
        // Overdue: the running prompt still counts a twentieth of its cost.
        assert_eq!(table.summary_at(later, Some(1.0e9)).cost, 50 + 500);
        let summary = table.summary_at(later, Some(200.0));
        assert_eq!((summary.total, summary.unseen), (2, 0));
    }
}
