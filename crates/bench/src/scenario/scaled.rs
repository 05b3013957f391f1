//! The same scenario at another offered load, for a sweep.
//!
//! Whether a policy beats least-loaded by a margin depends on how busy the fleet is: nearly
//! idle, every policy finds a free fast GPU; overloaded, every policy keeps every GPU busy
//! and queueing sets the tail. A sweep replays one scenario at several arrival rates so the
//! results show the whole range instead of one point of it.

use super::Scenario;
use crate::BenchError;

/// The most a sweep may multiply a scenario's arrival rate by: beyond it the fleet is far
/// past saturation and a run only measures how long the queue takes to drain.
pub const MAX_RATE_SCALE: f64 = 10.0;
/// The least: below it a run mostly waits for arrivals (and factor names would need more than
/// the two decimals they keep).
pub const MIN_RATE_SCALE: f64 = 0.01;

impl Scenario {
    /// Sampler work offered per second over what the fleet can do per second, from the
    /// Poisson rate and the mix's weights; 1.0 is saturation. Bursts are not counted (they
    /// are instants, not a rate), and only the sampler is (the emulator's VAE decode and image
    /// encoding add roughly another 10–25% on top; the placement report measures that as its
    /// service factor).
    ///
    /// Under alternating demand every entry is favoured in turn, so over whole cycles each
    /// gets the same share; the mean then weighs the entries equally.
    pub fn offered_load(&self) -> f64 {
        let capacity: f64 = self
            .node_configs()
            .iter()
            .map(|node| 1.0 / node.seconds_per_step)
            .sum();
        let mix = &self.load.mix;
        let mean_units = if self.load.alternate_every_s.is_some() {
            #[allow(clippy::cast_precision_loss)]
            let len = mix.len().max(1) as f64;
            mix.iter().map(super::JobKind::cost_units).sum::<f64>() / len
        } else {
            let weights: f64 = mix.iter().map(|kind| kind.weight).sum();
            mix.iter()
                .map(|kind| kind.cost_units() * kind.weight)
                .sum::<f64>()
                / weights
        };
        if capacity > 0.0 {
            self.load.rate * mean_units / capacity
        } else {
            0.0
        }
    }

    /// This scenario with its Poisson rate multiplied by `factor`, named `NAME-xFACTOR` so
    /// its result files stand beside the original's. The trace keeps its seed and job count,
    /// so the jobs are the same ones, arriving closer together or further apart.
    ///
    /// # Errors
    /// `factor` is not a number in (0, [`MAX_RATE_SCALE`]], or the scenario has no Poisson
    /// load to scale (only bursts).
    pub fn with_rate_scale(&self, factor: f64) -> Result<Scenario, BenchError> {
        if !(factor.is_finite() && (MIN_RATE_SCALE..=MAX_RATE_SCALE).contains(&factor)) {
            return Err(BenchError::Invalid(format!(
                "--rate-scale {factor}: give a factor from {MIN_RATE_SCALE} to {MAX_RATE_SCALE}"
            )));
        }
        if self.load.jobs == 0 || self.load.rate <= 0.0 {
            return Err(BenchError::Invalid(format!(
                "scenario {}: --rate-scale needs a Poisson load (load.jobs and load.rate); \
                 this one has only bursts",
                self.name
            )));
        }
        let mut scaled = self.clone();
        scaled.load.rate *= factor;
        scaled.name = format!("{}-x{}", self.name, factor_label(factor));
        scaled.description = format!(
            "{} Arrival rate ×{} ({:.2} jobs per simulated second, sampler load {:.0}% of the fleet).",
            self.description,
            factor_label(factor),
            scaled.load.rate,
            scaled.offered_load() * 100.0
        );
        // The scaled trace must still make sense (a deadline after its last arrival, say).
        let problems = scaled.problems();
        if !problems.is_empty() {
            return Err(BenchError::Invalid(format!(
                "scenario {} at --rate-scale {}: {}",
                self.name,
                factor_label(factor),
                problems.join("; ")
            )));
        }
        Ok(scaled)
    }
}

/// A factor as it appears in a name: `0.5`, `1`, `1.25`; at most two decimals.
pub fn factor_label(factor: f64) -> String {
    let text = format!("{factor:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}
