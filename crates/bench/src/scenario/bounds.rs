//! Reference figures of a scenario that results are compared against: the expected-finish
//! settings for its fleet, the fewest model loads and a lower bound on the makespan.

use super::{JobKind, Scenario, TraceJob};

impl Scenario {
    /// Expected-finish settings for this fleet: the emulator's model-load time of the slowest
    /// checkpoint in the mix, in wall seconds (an operator sets the same from their GPUs).
    /// Other settings keep their defaults.
    pub fn expected_finish_config(&self) -> scheduler::ExpectedFinishConfig {
        let load_s = self
            .load
            .mix
            .iter()
            .map(|kind| comfy_sim::ModelFile::named(&kind.checkpoint).load_secs())
            .fold(0.0, f64::max)
            * self.time_scale;
        scheduler::ExpectedFinishConfig {
            model_load_secs: load_s,
            thrash_penalty_secs: load_s,
            ..scheduler::ExpectedFinishConfig::default()
        }
    }

    /// The fewest model loads any schedule of `trace` needs: every distinct checkpoint once,
    /// and at least one load on each node that has to run something to keep up. Counting every
    /// node is what a schedule that uses the whole fleet pays; the bench compares against it.
    pub fn min_model_loads(&self, trace: &[TraceJob]) -> usize {
        let mut distinct: Vec<&str> = trace
            .iter()
            .map(|job| self.load.mix[job.kind].checkpoint.as_str())
            .collect();
        distinct.sort_unstable();
        distinct.dedup();
        distinct
            .len()
            .max(self.node_configs().len().min(trace.len()))
    }

    /// A lower bound on the makespan in wall seconds.
    ///
    /// Work bound: total sampler work times `service_factor` divided by the fleet's total speed
    /// (every node busy all the time, jobs divisible), plus every distinct checkpoint loaded
    /// once, spread over all nodes. Arrival bound: the last arrival plus the fastest run of the
    /// smallest job (also times `service_factor`). The bound is the larger of the two.
    ///
    /// `service_factor` is how much longer than its sampler time a prompt takes on the
    /// emulated nodes at the least (1.0 counts the sampler alone); the placement benchmark
    /// measures it from node-side stamps, since the emulator's other nodes and its image
    /// encoding take real time that no policy can avoid.
    ///
    /// NOTE: it ignores the emulator's small per-node costs outside the sampler (text encode,
    /// VAE decode, save) and which nodes can run which jobs, so real schedules cannot reach it
    /// exactly; it is a floor to compare policies against, not an achievable target.
    pub fn lower_bound_s(&self, trace: &[TraceJob], service_factor: f64) -> f64 {
        let nodes = self.node_configs();
        let capacity: f64 = nodes.iter().map(|node| 1.0 / node.seconds_per_step).sum();
        let work: f64 = trace
            .iter()
            .map(|job| self.load.mix[job.kind].cost_units())
            .sum();
        let mut distinct: Vec<&str> = trace
            .iter()
            .map(|job| self.load.mix[job.kind].checkpoint.as_str())
            .collect();
        distinct.sort_unstable();
        distinct.dedup();
        let loads: f64 = distinct
            .iter()
            .map(|name| comfy_sim::ModelFile::named(name).load_secs())
            .sum();
        let work_bound = work * service_factor / capacity + loads / nodes.len() as f64;
        let fastest = nodes
            .iter()
            .map(|node| node.seconds_per_step)
            .fold(f64::INFINITY, f64::min);
        let smallest = self
            .load
            .mix
            .iter()
            .map(JobKind::cost_units)
            .fold(f64::INFINITY, f64::min);
        let last_arrival = trace.iter().map(|job| job.at_s).fold(0.0, f64::max);
        let arrival_bound = last_arrival + smallest * fastest * service_factor;
        work_bound.max(arrival_bound) * self.time_scale
    }
}
