//! The scenario file format: fleet, load, faults, forbidden placements, coordinator settings.
//!
//! Plain serde types that refuse unknown fields, so a misspelt key fails loudly instead of
//! silently falling back to a default; defaults live next to the fields they fill.

use serde::{Deserialize, Serialize};

/// A whole scenario file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name, used in file names.
    pub name: String,
    /// What the scenario shows.
    #[serde(default)]
    pub description: String,
    /// Multiplies every simulated duration into wall time.
    pub time_scale: f64,
    /// Seed of the trace.
    #[serde(default)]
    pub seed: u64,
    /// The fleet.
    pub nodes: Vec<NodeGroup>,
    /// The offered load.
    pub load: Load,
    /// Faults injected during the run.
    #[serde(default)]
    pub faults: Vec<Fault>,
    /// Placements that must never happen.
    #[serde(default)]
    pub forbid: Vec<Forbid>,
    /// Coordinator settings (wall time).
    #[serde(default)]
    pub coordinator: CoordinatorSettings,
}

/// One or more identical nodes.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodeGroup {
    /// Node name, or prefix when `count` > 1 (`name-0`, `name-1`, ...).
    pub name: String,
    /// How many such nodes. Default 1.
    #[serde(default = "one")]
    pub count: usize,
    /// GPU model name.
    pub gpu: String,
    /// VRAM in GiB.
    pub vram_gib: f64,
    /// Simulated seconds per sampler step at 512×512.
    pub seconds_per_step: f64,
    /// Checkpoint files it holds (sizes and load times guessed from the names by the emulator).
    pub checkpoints: Vec<String>,
}

fn one() -> usize {
    1
}

/// The offered load.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Load {
    /// Jobs arriving as a Poisson process.
    #[serde(default)]
    pub jobs: usize,
    /// Mean Poisson arrivals per simulated second.
    #[serde(default)]
    pub rate: f64,
    /// Bursts: many jobs at one instant.
    #[serde(default)]
    pub bursts: Vec<Burst>,
    /// The job mix, drawn by weight.
    pub mix: Vec<JobKind>,
    /// When set, demand alternates: during window *k* of this many simulated seconds, mix entry
    /// *k mod len* gets `alternate_share` of the jobs and the others share the rest.
    #[serde(default)]
    pub alternate_every_s: Option<f64>,
    /// Share of the favoured entry when demand alternates. Default 0.8.
    #[serde(default = "default_share")]
    pub alternate_share: f64,
}

fn default_share() -> f64 {
    0.8
}

/// A burst of jobs arriving together.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Burst {
    /// Simulated second of the burst.
    pub at_s: f64,
    /// Jobs in it.
    pub jobs: usize,
}

/// One kind of job in the mix.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JobKind {
    /// Name shown in results (e.g. `sdxl`, `flux`).
    pub class: String,
    /// Relative weight. Default 1.
    #[serde(default = "unit_weight")]
    pub weight: f64,
    /// Checkpoint file.
    pub checkpoint: String,
    /// Sampler steps.
    pub steps: u32,
    /// Width in pixels. Default 512.
    #[serde(default = "default_side")]
    pub width: u32,
    /// Height in pixels. Default 512.
    #[serde(default = "default_side")]
    pub height: u32,
    /// Tenant. Default none.
    #[serde(default)]
    pub tenant: String,
}

fn unit_weight() -> f64 {
    1.0
}

fn default_side() -> u32 {
    512
}

impl JobKind {
    /// Work in sampler steps at 512×512.
    pub fn cost_units(&self) -> f64 {
        f64::from(self.steps) * f64::from(self.width) * f64::from(self.height) / (512.0 * 512.0)
    }
}

/// A fault injected during the run.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// The node (full name).
    pub node: String,
    /// Simulated second at which the node crashes (stops listening, loses its queue).
    pub kill_at_s: f64,
    /// Simulated second at which it comes back empty, if ever.
    #[serde(default)]
    pub restart_at_s: Option<f64>,
}

/// A placement that must never happen: jobs of `class` on nodes with less VRAM.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Forbid {
    /// Job class.
    pub class: String,
    /// Nodes below this much VRAM must not receive it.
    pub min_vram_gib: f64,
}

/// Coordinator settings a scenario may set (wall time, not scaled).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoordinatorSettings {
    /// Probe interval in milliseconds. Default 250.
    pub probe_interval_ms: u64,
    /// Down grace in milliseconds. Default 2000.
    pub node_down_grace_ms: u64,
    /// Slots per node; default: the coordinator's.
    pub slots_per_node: Option<u32>,
    /// Wall seconds allowed for one policy's run, from its start; jobs not finished by then
    /// count as unfinished. It must be later than the trace's last arrival (checked when the
    /// scenario is read). Default 90.
    pub deadline_s: u64,
    /// Expected-finish settings that differ from what the bench derives from the fleet.
    pub expected_finish: ExpectedFinishOverrides,
}

/// Expected-finish settings a scenario may set; unset ones keep the bench's choice (load and
/// thrash penalties from the emulator's model-load time, the rest the policy's defaults).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExpectedFinishOverrides {
    /// Thrash penalty as a multiple of the model-load time. Default 2.
    pub thrash_penalty_loads: Option<f64>,
    /// See `ExpectedFinishConfig::hold_ratio`.
    pub hold_ratio: Option<f64>,
    /// See `ExpectedFinishConfig::demand_window`.
    pub demand_window: Option<usize>,
}

impl Default for CoordinatorSettings {
    fn default() -> Self {
        Self {
            probe_interval_ms: 250,
            node_down_grace_ms: 2000,
            slots_per_node: None,
            deadline_s: 90,
            expected_finish: ExpectedFinishOverrides::default(),
        }
    }
}

/// One job of a concrete trace.
#[derive(Debug, Clone, Serialize)]
pub struct TraceJob {
    /// Arrival, simulated seconds.
    pub at_s: f64,
    /// Index into the mix.
    pub kind: usize,
    /// Seed of its sampler (unique per job).
    pub seed: u64,
}
