//! Which checkpoints a node is believed to hold in VRAM.
//!
//! ComfyUI keeps a model loaded after its prompt finishes and unloads the least recently used
//! ones only when a new load does not fit beside them, so a 24 GiB GPU that alternates between
//! a Flux job and an SD 1.5 job loads each once. No ComfyUI route lists what is loaded, so the
//! coordinator keeps its own guess: the checkpoints of the jobs it sent to the node, least
//! recently used first, each with the estimated VRAM of the job that used it last, and it drops
//! the least recently used ones while their sum exceeds the GPU.
//!
//! A checkpoint whose size is unknown (0 bytes) is assumed to fill the GPU: loading it pushes
//! every other one out, and loading anything else pushes it out. With unknown sizes the guess is
//! therefore "the last checkpoint the node ran", which is never optimistic.
//!
//! The sizes are job estimates that include the sampler's activations, so the sum overstates
//! what stays resident between prompts and the guess errs towards predicting an eviction.

use serde::{Deserialize, Serialize};

/// Most checkpoints one node is believed to hold. VRAM bounds the set already; this bounds it
/// also when sizes are tiny estimates (a checkpoint of an unknown family counts only its
/// sampler's activations), so a node's entry in `ListNodes` stays short.
pub const MAX_RESIDENT: usize = 16;

/// One checkpoint believed resident on a node. `N` is how its name is held: owned in a
/// [`crate::NodeView`], borrowed from the snapshot while a placement round plans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resident<N = String> {
    /// Checkpoint (or diffusion model) file name.
    pub checkpoint: N,
    /// Estimated VRAM in bytes of the last job that used it; 0 when unknown.
    pub vram: u64,
}

/// Checkpoints believed resident on a node, least recently used first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ResidentSet<N = String> {
    models: Vec<Resident<N>>,
}

impl<N> Default for ResidentSet<N> {
    fn default() -> Self {
        Self { models: Vec::new() }
    }
}

/// What [`ResidentSet::touch`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Touch<N> {
    /// The checkpoint was not resident before: the node had to load it.
    pub loaded: bool,
    /// Checkpoints the load pushed out, least recently used first.
    pub evicted: Vec<N>,
}

impl<N: AsRef<str>> ResidentSet<N> {
    /// Creates an empty set (nothing known to be loaded).
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `checkpoint` is believed resident.
    pub fn contains(&self, checkpoint: &str) -> bool {
        self.models
            .iter()
            .any(|m| m.checkpoint.as_ref() == checkpoint)
    }

    /// The checkpoint used last, if any.
    pub fn most_recent(&self) -> Option<&str> {
        self.models.last().map(|m| m.checkpoint.as_ref())
    }

    /// The resident checkpoints, least recently used first.
    pub fn iter(&self) -> impl Iterator<Item = &Resident<N>> {
        self.models.iter()
    }

    /// How many checkpoints are believed resident.
    pub fn len(&self) -> usize {
        self.models.len()
    }

    /// Whether nothing is believed resident.
    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    /// The checkpoints a load of `checkpoint` by a job needing `vram` bytes would push out of
    /// a GPU of `vram_total` bytes, least recently used first; none when it is resident.
    pub fn evictions<'a>(
        &'a self,
        checkpoint: &str,
        vram: u64,
        vram_total: u64,
    ) -> impl Iterator<Item = &'a N> + 'a {
        let others = if self.contains(checkpoint) {
            &self.models[..0]
        } else {
            &self.models[..]
        };
        let mut fit = Fit::new(vram, vram_total, others.iter().map(|m| m.vram));
        others
            .iter()
            .filter(move |m| fit.evicts(m.vram))
            .map(|m| &m.checkpoint)
    }

    /// Records that a job needing `vram` bytes ran `checkpoint` on a GPU of `vram_total` bytes:
    /// the checkpoint becomes the most recently used, and the least recently used others are
    /// dropped while the set does not fit (or holds more than [`MAX_RESIDENT`]).
    pub fn touch(&mut self, checkpoint: impl Into<N>, vram: u64, vram_total: u64) -> Touch<N> {
        let checkpoint = checkpoint.into();
        let position = self
            .models
            .iter()
            .position(|m| m.checkpoint.as_ref() == checkpoint.as_ref());
        if let Some(position) = position {
            self.models.remove(position);
        }
        let mut fit = Fit::new(vram, vram_total, self.models.iter().map(|m| m.vram));
        let mut evicted = Vec::new();
        let mut kept = Vec::with_capacity(self.models.len() + 1);
        for model in self.models.drain(..) {
            if fit.evicts(model.vram) {
                evicted.push(model.checkpoint);
            } else {
                kept.push(model);
            }
        }
        kept.push(Resident { checkpoint, vram });
        self.models = kept;
        Touch {
            loaded: position.is_none(),
            evicted,
        }
    }
}

impl ResidentSet {
    /// The same set with names borrowed from this one, for planning.
    pub(crate) fn borrowed(&self) -> ResidentSet<&str> {
        ResidentSet {
            models: self
                .models
                .iter()
                .map(|m| Resident {
                    checkpoint: m.checkpoint.as_str(),
                    vram: m.vram,
                })
                .collect(),
        }
    }
}

impl<N> FromIterator<Resident<N>> for ResidentSet<N> {
    /// Builds a set from checkpoints least recently used first, as given (no eviction).
    fn from_iter<I: IntoIterator<Item = Resident<N>>>(iter: I) -> Self {
        Self {
            models: iter.into_iter().collect(),
        }
    }
}

/// Decides, least recently used first, which resident checkpoints a load pushes out: those of
/// unknown size, then the least recently used until the load fits beside the rest and at most
/// [`MAX_RESIDENT`] checkpoints remain with it.
///
/// Built with the size of the load and the sizes of the others; then `evicts` is asked once per
/// other checkpoint, in least-recently-used order.
#[derive(Debug)]
struct Fit {
    /// Bytes the load and the checkpoints not yet evicted add up to.
    remaining: u64,
    vram_total: u64,
    /// How many more of the others must go to respect [`MAX_RESIDENT`].
    over_count: usize,
    /// The load's size or the GPU's is unknown: everything else goes.
    evict_all: bool,
}

impl Fit {
    fn new(vram: u64, vram_total: u64, others: impl ExactSizeIterator<Item = u64>) -> Self {
        let over_count = (others.len() + 1).saturating_sub(MAX_RESIDENT);
        Self {
            remaining: others.fold(vram, u64::saturating_add),
            vram_total,
            over_count,
            evict_all: vram == 0 || vram_total == 0,
        }
    }

    /// Whether the next checkpoint (of `size` bytes, least recently used first) is evicted.
    fn evicts(&mut self, size: u64) -> bool {
        if self.evict_all || size == 0 {
            return true;
        }
        if self.over_count > 0 || self.remaining > self.vram_total {
            self.over_count = self.over_count.saturating_sub(1);
            self.remaining -= size;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn names(set: &ResidentSet) -> Vec<&str> {
        set.iter().map(|m| m.checkpoint.as_str()).collect()
    }

    #[test]
    fn checkpoints_that_fit_together_stay_together() {
        let mut set: ResidentSet = ResidentSet::new();
        assert!(set.touch("flux", 12 * GIB, 24 * GIB).loaded);
        assert!(set.touch("sd15", 2 * GIB, 24 * GIB).loaded);
        assert!(
            !set.touch("flux", 12 * GIB, 24 * GIB).loaded,
            "still resident"
        );
        assert_eq!(names(&set), ["sd15", "flux"]);
        assert_eq!(set.most_recent(), Some("flux"));
    }

    #[test]
    fn a_load_that_does_not_fit_drops_the_least_recently_used_first() {
        let mut set: ResidentSet = ResidentSet::new();
        set.touch("a", 6 * GIB, 16 * GIB);
        set.touch("b", 6 * GIB, 16 * GIB);
        set.touch("a", 6 * GIB, 16 * GIB);
        assert_eq!(
            set.evictions("c", 6 * GIB, 16 * GIB).collect::<Vec<_>>(),
            ["b"]
        );
        let touch = set.touch("c", 6 * GIB, 16 * GIB);
        assert!(touch.loaded);
        assert_eq!(touch.evicted, ["b"]);
        assert_eq!(names(&set), ["a", "c"], "b was used least recently");
        assert_eq!(
            set.evictions("a", 12 * GIB, 16 * GIB).count(),
            0,
            "a is resident"
        );
        assert_eq!(set.touch("d", 12 * GIB, 16 * GIB).evicted, ["a", "c"]);
        assert_eq!(names(&set), ["d"]);
    }

    #[test]
    fn unknown_sizes_leave_only_the_last_checkpoint() {
        let mut set: ResidentSet = ResidentSet::new();
        set.touch("a", 2 * GIB, 24 * GIB);
        set.touch("b", 0, 24 * GIB);
        assert_eq!(
            names(&set),
            ["b"],
            "a load of unknown size evicts everything"
        );
        set.touch("c", 2 * GIB, 24 * GIB);
        assert_eq!(
            names(&set),
            ["c"],
            "a checkpoint of unknown size is evicted by any load"
        );
        set.touch("d", 2 * GIB, 0);
        assert_eq!(
            names(&set),
            ["d"],
            "a GPU of unknown size holds one checkpoint"
        );
    }

    #[test]
    fn a_checkpoint_larger_than_the_gpu_still_counts_as_resident() {
        // Eligibility keeps such jobs off the node; if one ran anyway, it is what was loaded.
        let mut set: ResidentSet = ResidentSet::new();
        set.touch("a", 2 * GIB, 8 * GIB);
        set.touch("huge", 20 * GIB, 8 * GIB);
        assert_eq!(names(&set), ["huge"]);
    }

    #[test]
    fn the_set_never_grows_past_its_bound() {
        let mut set: ResidentSet = ResidentSet::new();
        for i in 0..100 {
            set.touch(format!("m{i}"), 1 << 20, 80 * GIB);
        }
        assert_eq!(set.len(), MAX_RESIDENT);
        assert_eq!(set.most_recent(), Some("m99"));
        assert_eq!(
            set.iter().next().map(|m| m.checkpoint.as_str()),
            Some("m84")
        );
    }

    #[test]
    fn serializes_as_a_plain_list() {
        let set: ResidentSet = [Resident {
            checkpoint: "a".into(),
            vram: 5,
        }]
        .into_iter()
        .collect();
        let json = serde_json::to_string(&set).unwrap();
        assert_eq!(json, r#"[{"checkpoint":"a","vram":5}]"#);
        assert_eq!(serde_json::from_str::<ResidentSet>(&json).unwrap(), set);
    }
}
