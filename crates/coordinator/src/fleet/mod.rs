//! The fleet: every ComfyUI node the coordinator drives, and what it knows about each.
//!
//! Each [`Node`] pairs the node's configuration with a [`comfy_api::NodeClient`] and a small
//! mutable [`NodeStatus`] that the node's actor ([`actor`]) refreshes from probes and WebSocket
//! events. The job manager reads nodes only through [`Node::view`], which turns the status into
//! the scheduler's pure [`scheduler::NodeView`], so placement never sees a lock or a socket.
//!
//! Our prompts on a node are tracked in [`Node::prompts`]: the manager inserts a prompt id
//! before it POSTs, so WebSocket events that beat the POST answer still find their job.
//!
//! The set of nodes changes at run time (nodes found in DNS come and go, see [`discovery`]),
//! yet readers (placement rounds, the API, readiness) must never wait on a writer or see a
//! half-updated list. So the [`Fleet`] keeps an immutable member list behind an `Arc` and
//! swaps in a new one on every change (copy on write): a reader takes a [`FleetSnapshot`] in
//! one short lock and then iterates it freely.

pub mod actor;
pub mod discovery;
pub mod load_time;
mod prompts;
pub mod speed;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Deref;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use comfy_api::NodeClient;
use scheduler::{Health, NodeView};

pub use prompts::{OurPrompt, PromptTable};

/// How a node is configured: its name, address and labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// Unique name in the fleet, used in logs, metrics and the API.
    pub name: String,
    /// Base URL of the ComfyUI server (`http://host:port`).
    pub url: String,
    /// Labels a job can require.
    pub labels: BTreeMap<String, String>,
    /// Whether the node is an emulated one (shown in `nodes` and logs).
    pub simulated: bool,
}

/// Health as operators see it: the scheduler's health plus the drain flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeHealth {
    /// Probes succeed.
    Up,
    /// Recent probes failed; no new jobs.
    Suspect,
    /// Unreachable for longer than the grace; its jobs were given back.
    Down,
    /// An operator drained it: it finishes its own prompts and takes no new ones.
    Draining,
}

impl NodeHealth {
    /// The lowercase name used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Suspect => "suspect",
            Self::Down => "down",
            Self::Draining => "draining",
        }
    }
}

/// What the coordinator knows about a node right now.
#[derive(Debug, Clone)]
pub struct NodeStatus {
    /// Health from probes (drain is kept apart in `draining`).
    pub health: Health,
    /// Set by an operator.
    pub draining: bool,
    /// Set when the node's address left its discovery source: it finishes our prompts and
    /// takes no new ones, then leaves the fleet. Operators cannot undrain it.
    pub leaving: bool,
    /// GPU name from `/system_stats` (the device `name`).
    pub gpu_name: String,
    /// Whether the node computes on a CPU (`--cpu`): it then has no VRAM to speak of.
    pub cpu_only: bool,
    /// Total VRAM in bytes.
    pub vram_total: u64,
    /// Free VRAM in bytes at the last probe.
    pub vram_free: u64,
    /// Prompts running at the last probe (anyone's).
    pub queue_running: u32,
    /// Prompts pending at the last probe (anyone's).
    pub queue_pending: u32,
    /// Node classes, once read from `/object_info`. Shared with every placement view.
    pub classes: Option<Arc<BTreeSet<String>>>,
    /// Model files by folder, once read from `/models/<folder>`. Shared with every placement
    /// view.
    pub models: Arc<BTreeMap<String, BTreeSet<String>>>,
    /// When the last probe succeeded.
    pub last_probe_ok: Option<Instant>,
    /// The last probe or socket error, for operators.
    pub last_error: Option<String>,
    /// Probes failed in a row.
    pub consecutive_failures: u32,
    /// Since when the node has been failing probes.
    pub failing_since: Option<Instant>,
    /// Checkpoints of the jobs we ran there that are believed still in VRAM, least recently
    /// used first (a guess: ComfyUI does not say what it has loaded).
    pub resident: scheduler::ResidentSet,
    /// Jobs that succeeded on the node.
    pub jobs_done: u64,
    /// Jobs (attempts) that failed on the node.
    pub jobs_failed: u64,
    /// Whether the event socket is open.
    pub socket_connected: bool,
    /// Learnt speed in cost units per second.
    pub speed: Option<f64>,
}

impl Default for NodeStatus {
    fn default() -> Self {
        Self {
            // A node is not offered jobs before its first successful probe.
            health: Health::Suspect,
            draining: false,
            leaving: false,
            gpu_name: String::new(),
            cpu_only: false,
            vram_total: 0,
            vram_free: 0,
            queue_running: 0,
            queue_pending: 0,
            classes: None,
            models: Arc::default(),
            last_probe_ok: None,
            last_error: None,
            consecutive_failures: 0,
            failing_since: None,
            resident: scheduler::ResidentSet::new(),
            jobs_done: 0,
            jobs_failed: 0,
            socket_connected: false,
            speed: None,
        }
    }
}

impl NodeStatus {
    /// Health as operators see it.
    pub fn operator_health(&self) -> NodeHealth {
        match (self.draining || self.leaving, self.health) {
            (true, _) => NodeHealth::Draining,
            (false, Health::Up) => NodeHealth::Up,
            (false, Health::Suspect) => NodeHealth::Suspect,
            (false, Health::Down) => NodeHealth::Down,
        }
    }

    /// VRAM as placement counts it: 0 on a GPU-less node, which then runs no job with a VRAM
    /// need and holds one model at a time.
    pub fn placement_vram_total(&self) -> u64 {
        if self.cpu_only { 0 } else { self.vram_total }
    }
}

/// One node of the fleet.
#[derive(Debug)]
pub struct Node {
    /// Its configuration.
    pub spec: NodeSpec,
    /// The HTTP client for it.
    pub client: NodeClient,
    /// The client id of our WebSocket session with it: events of our prompts go there.
    pub client_id: String,
    /// What we know about it.
    status: Mutex<NodeStatus>,
    /// Our prompts on it, by prompt id.
    pub prompts: PromptTable,
    /// Slot limit: most of our prompts it may hold.
    pub slot_limit: u32,
    /// Fired by the probe when the node comes back up, so its event socket reconnects at
    /// once instead of when its backoff runs out.
    pub(crate) socket_retry: tokio::sync::Notify,
}

impl Node {
    /// Creates a node record; nothing is probed until its actor starts.
    pub fn new(spec: NodeSpec, client: NodeClient, client_id: String, slot_limit: u32) -> Self {
        Self {
            spec,
            client,
            client_id,
            status: Mutex::new(NodeStatus::default()),
            prompts: PromptTable::default(),
            slot_limit,
            socket_retry: tokio::sync::Notify::new(),
        }
    }

    /// Locks the status for a short read or update. Never hold it across an `.await`.
    pub fn status(&self) -> MutexGuard<'_, NodeStatus> {
        // A panic while holding the lock cannot leave the plain-data status inconsistent in a
        // way worse than stale numbers, so a poisoned lock is still used.
        self.status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The node as the placement policy sees it.
    pub fn view(&self) -> NodeView {
        let mut view = NodeView::new(self.spec.name.clone());
        view.labels = self.spec.labels.clone();
        view.slot_limit = self.slot_limit;
        {
            // Copied field by field under the lock: the inventories are shared, not cloned,
            // and the rest of the status (error text, GPU name) is not needed here. The lock
            // is let go before the prompt table's is taken.
            let status = self.status();
            view.vram_total = status.placement_vram_total();
            // A node whose event socket is down would run a job without a word of progress,
            // and a cancel could not tell whether its prompt started: it takes no job until
            // the socket is back (its actor asks for that as soon as HTTP answers again).
            view.health = match status.health {
                Health::Up if !status.socket_connected => Health::Suspect,
                health => health,
            };
            view.draining = status.draining || status.leaving;
            view.inventory_known = status.classes.is_some();
            view.classes = status.classes.clone().unwrap_or_default();
            view.models = Arc::clone(&status.models);
            view.vram_free = status.vram_free;
            view.queue_running = status.queue_running;
            view.queue_pending = status.queue_pending;
            view.resident = status.resident.clone();
            view.speed = status.speed;
        }
        // Our prompts the probe already shows are in running/pending; those it has not seen
        // yet are added as in flight, so the slot limit holds between probes.
        let prompts = self.prompts.summary_at(Instant::now(), view.speed);
        view.in_flight = prompts.unseen;
        view.backlog_cost = prompts.cost;
        view
    }

    /// Notes that a request we sent could not reach the node (connection refused or reset
    /// before it was sent): the node is suspect from now on, so placement sends it nothing
    /// until its next good probe. Without this, a node that died between two probes looks
    /// free (its prompts just failed) and a retry goes straight back to it.
    pub fn mark_unreachable(&self, error: &str) {
        let mut status = self.status();
        if status.health == Health::Up {
            status.health = Health::Suspect;
        }
        status.failing_since.get_or_insert_with(Instant::now);
        status.last_error = Some(error.to_owned());
    }

    /// The time since the last successful probe.
    pub fn probe_age(&self) -> Option<Duration> {
        self.status().last_probe_ok.map(|at| at.elapsed())
    }
}

/// Every node of the fleet, by name; nodes may join and leave while the coordinator runs.
#[derive(Debug, Default)]
pub struct Fleet {
    members: RwLock<Arc<Members>>,
    /// Names an operator drained, whether or not such a node is in the fleet now: a node
    /// that joins (or, found in DNS, leaves and comes back) under a drained name starts
    /// drained.
    drained: Mutex<BTreeSet<String>>,
}

/// One immutable version of the member list.
#[derive(Debug, Default, Clone)]
struct Members {
    nodes: Vec<Arc<Node>>,
    by_name: HashMap<String, usize>,
}

impl Members {
    fn from_nodes(nodes: Vec<Arc<Node>>) -> Self {
        let by_name = nodes
            .iter()
            .enumerate()
            .map(|(index, node)| (node.spec.name.clone(), index))
            .collect();
        Self { nodes, by_name }
    }
}

/// The fleet's members at one instant. Cheap to take and to clone; it does not change when
/// nodes join or leave later.
#[derive(Debug, Clone)]
pub struct FleetSnapshot(Arc<Members>);

impl Deref for FleetSnapshot {
    type Target = [Arc<Node>];

    fn deref(&self) -> &[Arc<Node>] {
        &self.0.nodes
    }
}

impl IntoIterator for FleetSnapshot {
    type Item = Arc<Node>;
    type IntoIter = std::vec::IntoIter<Arc<Node>>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.nodes.clone().into_iter()
    }
}

impl<'a> IntoIterator for &'a FleetSnapshot {
    type Item = &'a Arc<Node>;
    type IntoIter = std::slice::Iter<'a, Arc<Node>>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.nodes.iter()
    }
}

impl Fleet {
    /// Creates a fleet from nodes with unique names (a later duplicate hides an earlier one
    /// in lookups; configuration validation rules duplicates out).
    pub fn new(nodes: Vec<Arc<Node>>) -> Self {
        Self {
            members: RwLock::new(Arc::new(Members::from_nodes(nodes))),
            drained: Mutex::default(),
        }
    }

    fn drained(&self) -> MutexGuard<'_, BTreeSet<String>> {
        // A set of names: every edit leaves it whole, so a poisoned lock is still sound.
        self.drained
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records that an operator drained (`true`) or undrained the node `name` and applies it
    /// to the node if it is in the fleet now, which is returned. The record outlives the
    /// node: one that joins later under this name starts drained.
    pub fn set_drained(&self, name: &str, drained: bool) -> Option<Arc<Node>> {
        {
            let mut names = self.drained();
            if drained {
                names.insert(name.to_owned());
            } else {
                names.remove(name);
            }
        }
        let node = self.get(name)?;
        node.status().draining = drained;
        Some(node)
    }

    fn current(&self) -> Arc<Members> {
        // The list is replaced whole under the lock, never edited in place, so a poisoned
        // lock still guards a consistent list.
        self.members
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Every node now: configured nodes in configuration order, then discovered ones in the
    /// order they joined.
    pub fn nodes(&self) -> FleetSnapshot {
        FleetSnapshot(self.current())
    }

    /// The node named `name`, if it is in the fleet now.
    pub fn get(&self, name: &str) -> Option<Arc<Node>> {
        let members = self.current();
        members
            .by_name
            .get(name)
            .map(|&index| members.nodes[index].clone())
    }

    /// Adds `node` unless a node of the same name is already in the fleet; returns whether
    /// it was added.
    pub fn insert(&self, node: Arc<Node>) -> bool {
        let mut guard = self
            .members
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if guard.by_name.contains_key(&node.spec.name) {
            return false;
        }
        // Under the members lock, so a drain recorded at the same time is not missed: it
        // either sees the node in the list or is in the set read here.
        if self.drained().contains(&node.spec.name) {
            node.status().draining = true;
        }
        let mut nodes = guard.nodes.clone();
        nodes.push(node);
        *guard = Arc::new(Members::from_nodes(nodes));
        true
    }

    /// Removes the node named `name` and returns it; snapshots taken before still hold it.
    pub fn remove(&self, name: &str) -> Option<Arc<Node>> {
        let mut guard = self
            .members
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let index = *guard.by_name.get(name)?;
        let mut nodes = guard.nodes.clone();
        let removed = nodes.remove(index);
        *guard = Arc::new(Members::from_nodes(nodes));
        Some(removed)
    }

    /// Whether at least one node is up (for readiness).
    pub fn any_up(&self) -> bool {
        self.nodes()
            .iter()
            .any(|node| node.status().health == Health::Up)
    }
}
