//! One copy of each distinct workflow analysis among live jobs.
//!
//! Jobs submitted from one template (the common case: the same graph with other seeds or
//! prompts) have equal analyses: the same node classes and model files. Each analysis is
//! several sets of strings, about a kilobyte and a half for an SDXL graph, so a queue of
//! 100,000 such jobs would hold the same sets 100,000 times. Live jobs instead hold an `Arc`
//! of one shared copy, found by content when the job joins.
//!
//! NOTE: sharing is per whole analysis. Jobs whose analyses differ in any way (a different
//! LoRA per job, say) each keep their own copy, and class and model names are not shared
//! between different analyses; interning the names would shrink those queues further.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use crate::analysis::PlacementNeeds;
use crate::job::WorkflowAnalysis;

/// One distinct analysis, with what placement reads of it worked out once.
#[derive(Debug)]
pub(super) struct Needs {
    /// The analysis as the journal keeps it.
    pub(super) analysis: WorkflowAnalysis,
    /// Its placement needs, shared in turn by every placement view of the jobs holding it.
    /// The classes are the analysis's own set; the model files are a second, flat copy of
    /// `analysis.models` in the shape the scheduler takes (usually a handful of names).
    pub(super) placement: PlacementNeeds,
}

/// The distinct analyses of live jobs, by a hash of their content.
#[derive(Debug, Default)]
pub(super) struct Analyses {
    by_hash: HashMap<u64, Vec<Arc<Needs>>>,
}

impl Analyses {
    /// Returns the shared copy equal to `analysis`, keeping `analysis` as that copy if none
    /// is held yet.
    pub(super) fn share(&mut self, analysis: WorkflowAnalysis) -> Arc<Needs> {
        let bucket = self.by_hash.entry(content_hash(&analysis)).or_default();
        if let Some(found) = bucket.iter().find(|held| held.analysis == analysis) {
            return Arc::clone(found);
        }
        let shared = Arc::new(Needs {
            placement: PlacementNeeds::of(&analysis),
            analysis,
        });
        bucket.push(Arc::clone(&shared));
        shared
    }

    /// Gives back a leaving job's copy; the analysis is forgotten once no live job holds it.
    ///
    /// Only live jobs and this table hold these `Arc`s (a caller asking for a job gets a
    /// clone of the content), so a count of two means the leaving job was the last one.
    pub(super) fn release(&mut self, shared: Arc<Needs>) {
        if Arc::strong_count(&shared) > 2 {
            return;
        }
        let hash = content_hash(&shared.analysis);
        if let Some(bucket) = self.by_hash.get_mut(&hash) {
            bucket.retain(|held| !Arc::ptr_eq(held, &shared));
            if bucket.is_empty() {
                self.by_hash.remove(&hash);
            }
        }
    }

    /// The number of distinct analyses held.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.by_hash.values().map(Vec::len).sum()
    }
}

/// A hash of everything [`WorkflowAnalysis`]'s equality compares.
fn content_hash(analysis: &WorkflowAnalysis) -> u64 {
    let mut hasher = DefaultHasher::new();
    analysis.required_classes.hash(&mut hasher);
    analysis.models.hash(&mut hasher);
    analysis.cost.to_bits().hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn analysis(classes: &[&str], checkpoint: &str, cost: f64) -> WorkflowAnalysis {
        WorkflowAnalysis {
            required_classes: Arc::new(classes.iter().map(|c| (*c).to_owned()).collect()),
            models: [(
                "checkpoints".to_owned(),
                [checkpoint.to_owned()].into_iter().collect(),
            )]
            .into_iter()
            .collect(),
            cost,
            activation_bytes: 0,
        }
    }

    #[test]
    fn equal_analyses_share_one_copy_until_the_last_holder_leaves() {
        let mut table = Analyses::default();
        let a = table.share(analysis(&["KSampler", "SaveImage"], "xl.safetensors", 20.0));
        let b = table.share(analysis(&["KSampler", "SaveImage"], "xl.safetensors", 20.0));
        assert!(Arc::ptr_eq(&a, &b), "equal analyses are one copy");
        let other_model = table.share(analysis(&["KSampler", "SaveImage"], "v15.ckpt", 20.0));
        let other_cost = table.share(analysis(&["KSampler", "SaveImage"], "xl.safetensors", 4.0));
        assert!(!Arc::ptr_eq(&a, &other_model));
        assert!(!Arc::ptr_eq(&a, &other_cost));
        assert_eq!(table.len(), 3);

        table.release(a);
        assert_eq!(table.len(), 3, "b still holds the shared copy");
        table.release(b);
        assert_eq!(table.len(), 2, "the last holder left");
        table.release(other_model);
        table.release(other_cost);
        assert_eq!(table.len(), 0);

        let again = table.share(analysis(&["KSampler", "SaveImage"], "xl.safetensors", 20.0));
        assert_eq!(
            again.analysis,
            analysis(&["KSampler", "SaveImage"], "xl.safetensors", 20.0)
        );
        assert_eq!(again.placement, PlacementNeeds::of(&again.analysis));
        assert!(
            Arc::ptr_eq(&again.placement.classes, &again.analysis.required_classes),
            "placement reads the analysis's own set of classes, not a copy"
        );
        assert_eq!(table.len(), 1);
    }
}
