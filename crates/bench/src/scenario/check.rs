//! Reading a scenario file and checking that it is consistent.
//!
//! A scenario that parses can still be meaningless (no nodes, a zero rate, a fault on a node
//! that does not exist); every such problem is collected and reported at once, so one edit can
//! fix them all.

use std::path::Path;

use super::Scenario;
use crate::error::BenchError;

/// The largest scenario file read.
const MAX_SCENARIO_BYTES: u64 = 1 << 20;
/// The most nodes a scenario may start (each is a server in the benchmark process).
const MAX_NODES: usize = 2_000;
/// The most jobs one trace may hold: beyond it a run is hours long and its trace gigabytes.
const MAX_JOBS: usize = 1_000_000;
/// The latest simulated instant an arrival or a fault may have (about 11.5 days).
const MAX_SIMULATED_S: f64 = 1e6;
/// The largest time scale: a simulated second as more than this many wall seconds.
const MAX_TIME_SCALE: f64 = 1000.0;

/// Whether `name` is non-empty ASCII letters, digits, `-`, `_` and `.`: what the coordinator
/// accepts as a node name, and safe as a file name.
fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Whether a number is finite and above zero (NaN is not).
fn positive(value: f64) -> bool {
    value.is_finite() && value > 0.0
}

impl Scenario {
    /// Reads and checks a scenario file.
    ///
    /// # Errors
    /// [`BenchError::Scenario`] when the file cannot be read, parsed or is inconsistent.
    pub fn load(path: &Path) -> Result<Self, BenchError> {
        use std::io::Read;

        let failed = |message: String| BenchError::Scenario {
            path: path.to_path_buf(),
            message,
        };
        let file = std::fs::File::open(path).map_err(|e| failed(format!("cannot read: {e}")))?;
        // Read one byte past the limit to tell a file at the limit from a longer one (or an
        // endless one, like a device).
        let mut bytes = Vec::new();
        file.take(MAX_SCENARIO_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| failed(format!("cannot read: {e}")))?;
        if bytes.len() as u64 > MAX_SCENARIO_BYTES {
            return Err(failed(format!(
                "longer than {} KiB; a scenario is a short TOML file",
                MAX_SCENARIO_BYTES >> 10
            )));
        }
        let text = String::from_utf8(bytes).map_err(|_| failed("not UTF-8 text".to_owned()))?;
        Self::parse(&text, path)
    }

    /// Parses and checks scenario text; `path` only names it in errors.
    ///
    /// # Errors
    /// [`BenchError::Scenario`] listing what is wrong.
    pub fn parse(text: &str, path: &Path) -> Result<Self, BenchError> {
        let scenario: Scenario = toml::from_str(text).map_err(|error| BenchError::Scenario {
            path: path.to_path_buf(),
            message: error.to_string(),
        })?;
        let problems = scenario.problems();
        if problems.is_empty() {
            Ok(scenario)
        } else {
            Err(BenchError::Scenario {
                path: path.to_path_buf(),
                message: problems.join("; "),
            })
        }
    }

    pub(crate) fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        // The name becomes the result files' names, so it must be one plain file name.
        if !plain_name(&self.name) || self.name.len() > 64 || self.name.starts_with('.') {
            problems.push(format!(
                "name {:?}: use 1–64 letters, digits, '-', '_' or '.', not starting with '.' \
                 (it names the result files)",
                self.name
            ));
        }
        if !(positive(self.time_scale) && self.time_scale <= MAX_TIME_SCALE) {
            problems.push(format!(
                "time_scale must be a positive number of at most {MAX_TIME_SCALE}"
            ));
        }
        let instant = |at: f64| at.is_finite() && (0.0..=MAX_SIMULATED_S).contains(&at);
        for burst in &self.load.bursts {
            if !instant(burst.at_s) {
                problems.push(format!(
                    "burst at_s = {}: give a simulated second in 0..={MAX_SIMULATED_S}",
                    burst.at_s
                ));
            }
        }
        for fault in &self.faults {
            let restart_ok = fault
                .restart_at_s
                .is_none_or(|at| instant(at) && at > fault.kill_at_s);
            if !instant(fault.kill_at_s) || !restart_ok {
                problems.push(format!(
                    "fault on {}: kill_at_s must be a simulated second in 0..={MAX_SIMULATED_S}, \
                     and restart_at_s, if given, one after it",
                    fault.node
                ));
            }
        }
        let total_jobs = self
            .load
            .bursts
            .iter()
            .fold(self.load.jobs, |sum, burst| sum.saturating_add(burst.jobs));
        if total_jobs > MAX_JOBS {
            problems.push(format!(
                "{total_jobs} jobs: a scenario may hold at most {MAX_JOBS}"
            ));
        }
        if self.coordinator.deadline_s == 0 {
            problems.push("coordinator.deadline_s must be at least 1".to_owned());
        }
        if self.nodes.is_empty() {
            problems.push("the fleet has no nodes".to_owned());
        }
        for group in &self.nodes {
            if group.count == 0 || !positive(group.seconds_per_step) || !positive(group.vram_gib) {
                problems.push(format!(
                    "node {}: count, seconds_per_step and vram_gib must be positive",
                    group.name
                ));
            }
        }
        if self.load.mix.is_empty() {
            problems.push("load.mix is empty".to_owned());
        }
        if self
            .load
            .mix
            .iter()
            .any(|kind| !positive(kind.weight) || !(1..=10_000).contains(&kind.steps))
        {
            problems
                .push("every load.mix entry needs weight > 0 and steps in 1..=10000".to_owned());
        }
        for kind in &self.load.mix {
            // What ComfyUI's EmptyLatentImage accepts.
            let side = |v: u32| (16..=16_384).contains(&v) && v.is_multiple_of(8);
            if !side(kind.width) || !side(kind.height) {
                problems.push(format!(
                    "load.mix {}: width and height must be multiples of 8 in 16..=16384",
                    kind.class
                ));
            }
            let held = self
                .nodes
                .iter()
                .any(|group| group.checkpoints.contains(&kind.checkpoint));
            if !held {
                problems.push(format!(
                    "load.mix {}: checkpoint {} is on no node",
                    kind.class, kind.checkpoint
                ));
            }
        }
        if self.load.jobs > 0 && !positive(self.load.rate) {
            problems.push("load.rate must be positive when load.jobs > 0".to_owned());
        }
        if self
            .load
            .alternate_every_s
            .is_some_and(|every| !positive(every))
            || !(0.0..=1.0).contains(&self.load.alternate_share)
        {
            problems.push("alternate_every_s must be > 0 and alternate_share in 0..=1".to_owned());
        }
        if self.total_jobs() == 0 {
            problems.push("the load has no jobs".to_owned());
        }
        let overrides = &self.coordinator.expected_finish;
        if overrides
            .thrash_penalty_loads
            .is_some_and(|x| !(x.is_finite() && x >= 0.0))
        {
            problems
                .push("coordinator.expected_finish.thrash_penalty_loads must be >= 0".to_owned());
        }
        if overrides
            .hold_ratio
            .is_some_and(|x| !(0.0..=1.0).contains(&x))
        {
            problems.push("coordinator.expected_finish.hold_ratio must be in 0..=1".to_owned());
        }
        let names: Vec<String> = if total_jobs <= MAX_JOBS
            && self
                .nodes
                .iter()
                .fold(0_usize, |sum, g| sum.saturating_add(g.count))
                <= MAX_NODES
        {
            self.node_configs().into_iter().map(|n| n.name).collect()
        } else {
            problems.push(format!("a scenario may have at most {MAX_NODES} nodes"));
            Vec::new()
        };
        let mut seen = std::collections::BTreeSet::new();
        for name in &names {
            if !plain_name(name) {
                problems.push(format!(
                    "node {name:?}: use ASCII letters, digits, '-', '_' or '.'"
                ));
            }
            if !seen.insert(name) {
                problems.push(format!("node {name}: name used more than once"));
            }
        }
        if self.coordinator.probe_interval_ms == 0 || self.coordinator.slots_per_node == Some(0) {
            problems.push(
                "coordinator.probe_interval_ms and slots_per_node must be at least 1".to_owned(),
            );
        }
        for fault in &self.faults {
            if !names.contains(&fault.node) {
                problems.push(format!("fault: node {} is not in the fleet", fault.node));
            }
        }
        // A run ends at its deadline, but the jobs are submitted at their arrivals: a deadline
        // before the last arrival would leave the run waiting with nothing to measure.
        if problems.is_empty()
            && let Some(last) = self.trace().last()
        {
            let last_wall = self.wall(last.at_s).as_secs_f64();
            if last_wall >= self.coordinator.deadline_s as f64 {
                problems.push(format!(
                    "coordinator.deadline_s = {} ends before the last job arrives, {last_wall:.0} s \
                     of wall time into the run; raise it, or the rate, or lower time_scale",
                    self.coordinator.deadline_s
                ));
            }
        }
        problems
    }
}
