//! Reading a scenario file and checking that it is consistent.
//!
//! A scenario that parses can still be meaningless (no nodes, a zero rate, a fault on a node
//! that does not exist); every such problem is collected and reported at once, so one edit can
//! fix them all.

use std::path::Path;

use super::Scenario;
use crate::error::BenchError;

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
        let text = std::fs::read_to_string(path).map_err(|error| BenchError::Scenario {
            path: path.to_path_buf(),
            message: format!("cannot read: {error}"),
        })?;
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

    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        // The name becomes the result files' names, so it must be one plain file name.
        let file_safe = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
        if self.name.is_empty()
            || self.name.len() > 64
            || self.name.starts_with('.')
            || !self.name.chars().all(file_safe)
        {
            problems.push(format!(
                "name {:?}: use 1–64 letters, digits, '-', '_' or '.', not starting with '.' \
                 (it names the result files)",
                self.name
            ));
        }
        if !(self.time_scale.is_finite() && self.time_scale > 0.0) {
            problems.push("time_scale must be a positive number".to_owned());
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
            .any(|kind| !positive(kind.weight) || kind.steps == 0)
        {
            problems.push("every load.mix entry needs weight > 0 and steps > 0".to_owned());
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
        let names: Vec<String> = self.node_configs().into_iter().map(|n| n.name).collect();
        for fault in &self.faults {
            if !names.contains(&fault.node) {
                problems.push(format!("fault: node {} is not in the fleet", fault.node));
            }
        }
        problems
    }
}
