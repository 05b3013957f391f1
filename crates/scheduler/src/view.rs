//! What the scheduler knows about nodes and queued jobs.
//!
//! The coordinator owns the live state (probes, journal, in-flight prompts); once per placement
//! round it copies what placement needs into these plain values. Keeping them plain data with no
//! handles, clocks or channels is what lets every policy be a pure function that tests can feed
//! with generated fleets.
//!
//! The large sets (a node's hundreds of classes and model files, a job's classes and models)
//! are behind `Arc`s: they change rarely, and a busy coordinator runs a round for nearly every
//! job it places, so a round copies pointers to them rather than the sets themselves.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use crate::resident::{MAX_RESIDENT, Resident, ResidentSet, Touch};

/// Default number of our prompts a node may hold at once: one running, one prefetched.
pub const DEFAULT_SLOT_LIMIT: u32 = 2;

/// Speed assumed for a node the coordinator has not measured yet, in cost units per second
/// (see [`JobView::cost`]): one 512×512 sampler step every 50 ms, a mid-range GPU on SDXL.
///
/// It must be in the same unit as the costs. A guess far too fast makes every busy unmeasured
/// node look as if it would finish any job at once, so expected-finish holds jobs for it
/// while measured nodes stand idle.
pub const DEFAULT_SPEED: f64 = 20.0;

/// Name of a node, unique within the fleet.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub String);

/// Id of a job, unique within the coordinator.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct JobId(pub String);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for NodeId {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl From<&str> for JobId {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

/// A model file as ComfyUI lists it: a folder (`checkpoints`, `loras`, `vae`, ...) and a file
/// name inside it (which may contain sub-folders, e.g. `sdxl/base.safetensors`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ModelFile {
    /// Model folder name, as in `GET /models`.
    pub folder: String,
    /// File name inside the folder, as in `GET /models/{folder}`.
    pub name: String,
}

impl ModelFile {
    /// Builds a model file reference from a folder and a file name.
    pub fn new(folder: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            folder: folder.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ModelFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.folder, self.name)
    }
}

/// Health of a node as the coordinator's probes see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Health {
    /// Probes and the event connection succeed.
    Up,
    /// Recent probes failed; no new jobs until it recovers.
    Suspect,
    /// Given up on; its jobs went back to the queue.
    Down,
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Up => "up",
            Self::Suspect => "suspect",
            Self::Down => "down",
        })
    }
}

/// One node as placement sees it.
///
/// Counts come from the last probe and can lag: `in_flight` covers our prompts the probe did not
/// see yet, so a node is never offered more than its slots between two probes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    /// Unique node name.
    pub id: NodeId,
    /// Health from probes; only [`Health::Up`] nodes receive jobs.
    pub health: Health,
    /// Set by an operator: the node finishes what it has and receives nothing new.
    pub draining: bool,
    /// Whether `classes` and `models` were read from the node (`/object_info`, `/models`).
    /// Until then the node receives no jobs, but feasibility counts it as one that might.
    pub inventory_known: bool,
    /// Labels of the node; a job's required labels must all match exactly.
    pub labels: BTreeMap<String, String>,
    /// Node classes installed on the node (keys of `/object_info`).
    pub classes: Arc<BTreeSet<String>>,
    /// Model files on the node, by folder.
    pub models: Arc<BTreeMap<String, BTreeSet<String>>>,
    /// Total VRAM in bytes.
    pub vram_total: u64,
    /// Free VRAM in bytes at the last probe (used only to break ties).
    pub vram_free: u64,
    /// Prompts running on the node at the last probe (anyone's).
    pub queue_running: u32,
    /// Prompts pending on the node at the last probe (anyone's).
    pub queue_pending: u32,
    /// Our prompts sent to the node that the last probe did not show yet.
    pub in_flight: u32,
    /// Most prompts the node may hold (running + pending + in flight). Default
    /// [`DEFAULT_SLOT_LIMIT`]; 0 keeps the node idle.
    pub slot_limit: u32,
    /// Estimated work already on the node, in cost units (see [`JobView::cost`]). The
    /// coordinator sums its own prompts' costs and assumes a typical cost for foreign ones.
    pub backlog_cost: u64,
    /// Checkpoints believed to be in VRAM, least recently used first (see
    /// [`ResidentSet`]): a job whose checkpoint is among them loads nothing.
    #[serde(default)]
    pub resident: ResidentSet,
    /// Learnt speed in cost units per second; `None` until measured (then [`DEFAULT_SPEED`]).
    pub speed: Option<f64>,
}

impl NodeView {
    /// Creates an up, empty node with the default slot limit and nothing installed; tests and
    /// the coordinator fill in the rest field by field.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: NodeId(id.into()),
            health: Health::Up,
            draining: false,
            inventory_known: true,
            labels: BTreeMap::new(),
            classes: Arc::default(),
            models: Arc::default(),
            vram_total: 0,
            vram_free: 0,
            queue_running: 0,
            queue_pending: 0,
            in_flight: 0,
            slot_limit: DEFAULT_SLOT_LIMIT,
            backlog_cost: 0,
            resident: ResidentSet::new(),
            speed: None,
        }
    }

    /// Returns the prompts the node holds: running + pending + in flight.
    pub fn load(&self) -> u32 {
        self.queue_running
            .saturating_add(self.queue_pending)
            .saturating_add(self.in_flight)
    }

    /// Returns how many more prompts the node may take now.
    pub fn free_slots(&self) -> u32 {
        self.slot_limit.saturating_sub(self.load())
    }

    /// Returns whether the node has the model file.
    pub fn has_model(&self, model: &ModelFile) -> bool {
        self.models
            .get(&model.folder)
            .is_some_and(|files| files.contains(&model.name))
    }

    /// Returns the speed to plan with: the learnt one if it is a positive finite number, else
    /// [`DEFAULT_SPEED`].
    pub fn effective_speed(&self) -> f64 {
        match self.speed {
            Some(speed) if speed.is_finite() && speed > 0.0 => speed,
            _ => DEFAULT_SPEED,
        }
    }
}

/// One queued job as placement sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    /// Unique job id.
    pub id: JobId,
    /// Higher runs first.
    pub priority: i32,
    /// Order of arrival in the queue (smaller came first); breaks priority ties. A job sent
    /// back to the queue keeps its original arrival so it does not lose its place.
    pub arrival: u64,
    /// Tenant that submitted the job (used by fair-share queue ordering).
    pub tenant: String,
    /// Labels a node must carry, each with exactly this value.
    pub required_labels: BTreeMap<String, String>,
    /// Node classes the workflow uses.
    pub required_classes: Arc<BTreeSet<String>>,
    /// Model files the workflow loads.
    pub required_models: Arc<BTreeSet<ModelFile>>,
    /// Estimated VRAM the job needs, in bytes; 0 when unknown. Compared with the GPU's total.
    pub vram_need: u64,
    /// Estimated work in cost units: sampler steps × output pixels / (512 × 512), summed over
    /// samplers, so one unit is one 512×512 sampler step.
    pub cost: u64,
    /// Checkpoint the job loads first, for model affinity; `None` when it loads none.
    pub checkpoint: Option<String>,
    /// Seconds a node takes to load `checkpoint`, as the coordinator learnt it from cold
    /// starts; `None` until learnt, when a policy uses its configured load time.
    #[serde(default)]
    pub load_secs: Option<f64>,
}

impl JobView {
    /// Creates a job with priority 0, tenant "default" and no requirements.
    pub fn new(id: impl Into<String>, arrival: u64) -> Self {
        Self {
            id: JobId(id.into()),
            priority: 0,
            arrival,
            tenant: "default".to_owned(),
            required_labels: BTreeMap::new(),
            required_classes: Arc::default(),
            required_models: Arc::default(),
            vram_need: 0,
            cost: 0,
            checkpoint: None,
            load_secs: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_counts_running_pending_and_in_flight() {
        let mut node = NodeView::new("gpu-1");
        node.queue_running = 1;
        node.queue_pending = 3;
        node.in_flight = 2;
        assert_eq!(node.load(), 6);
        assert_eq!(
            node.free_slots(),
            0,
            "a node over its limit has no free slot"
        );
        node.slot_limit = 8;
        assert_eq!(node.free_slots(), 2);
    }

    #[test]
    fn unusable_speed_falls_back_to_the_default() {
        let mut node = NodeView::new("gpu-1");
        for bad in [
            None,
            Some(0.0),
            Some(-3.0),
            Some(f64::NAN),
            Some(f64::INFINITY),
        ] {
            node.speed = bad;
            assert_eq!(
                node.effective_speed(),
                DEFAULT_SPEED,
                "speed {bad:?} must not be used"
            );
        }
        node.speed = Some(10.0);
        assert_eq!(node.effective_speed(), 10.0);
    }

    #[test]
    fn has_model_looks_in_the_right_folder() {
        let mut node = NodeView::new("gpu-1");
        Arc::make_mut(&mut node.models)
            .entry("checkpoints".into())
            .or_default()
            .insert("a.safetensors".into());
        assert!(node.has_model(&ModelFile::new("checkpoints", "a.safetensors")));
        assert!(!node.has_model(&ModelFile::new("loras", "a.safetensors")));
    }
}
