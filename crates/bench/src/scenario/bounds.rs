//! Reference figures of a scenario that results are compared against: the expected-finish
//! settings for its fleet, the fewest model loads and a lower bound on the makespan.

use std::collections::BTreeMap;

use super::{JobKind, Scenario, TraceJob};

impl Scenario {
    /// Expected-finish settings for this fleet: the emulator's model-load time of the slowest
    /// checkpoint in the mix, in wall seconds (an operator sets the same from their GPUs), a
    /// thrash penalty of twice that (as the policy's defaults, 20 s and 40 s), and
    /// the scenario's `[coordinator.expected_finish]` overrides. Other settings keep their
    /// defaults.
    pub fn expected_finish_config(&self) -> scheduler::ExpectedFinishConfig {
        let load_s = self
            .load
            .mix
            .iter()
            .map(|kind| comfy_sim::ModelFile::named(&kind.checkpoint).load_secs())
            .fold(0.0, f64::max)
            * self.time_scale;
        let overrides = &self.coordinator.expected_finish;
        let defaults = scheduler::ExpectedFinishConfig::default();
        scheduler::ExpectedFinishConfig {
            model_load_secs: load_s,
            thrash_penalty_secs: load_s * overrides.thrash_penalty_loads.unwrap_or(2.0),
            hold_ratio: overrides.hold_ratio.unwrap_or(defaults.hold_ratio),
            demand_window: overrides.demand_window.unwrap_or(defaults.demand_window),
            ..defaults
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

    /// The fewest model loads of a schedule that keeps up with demand that moves, or `None`
    /// when the scenario's demand does not alternate (then [`Self::min_model_loads`] is the
    /// reference).
    ///
    /// The trace is cut into its demand windows (`alternate_every_s`). In each window, a
    /// checkpoint with jobs wants `ceil(its work / one average node's capacity over the
    /// window)` holders, at least one and at most the fleet; the work counts `service_factor`
    /// like the makespan bound. Nodes keep the holders still wanted and the free ones go to
    /// the largest shortfalls; each node given is a load (every holder of the first window
    /// too). A window whose checkpoints want more holders than there are nodes adds one load
    /// per holder too many (some node must switch within it).
    /// With 80% of the demand moving between three checkpoints on four nodes, that is about
    /// one load per window: one node follows the demand, the others stay.
    ///
    /// NOTE: an estimate, not a proof: a schedule may let a queue grow through a window and
    /// catch up in the next, and need fewer loads. It is reported beside the plain minimum,
    /// which no schedule that keeps up with moving demand can reach.
    pub fn keep_up_model_loads(&self, trace: &[TraceJob], service_factor: f64) -> Option<usize> {
        let window = self.load.alternate_every_s.filter(|w| *w > 0.0)?;
        let nodes = self.node_configs();
        if nodes.is_empty() || trace.is_empty() {
            return None;
        }
        // Sampler units one average node gets through per simulated second.
        #[allow(clippy::cast_precision_loss)]
        let per_node: f64 = nodes
            .iter()
            .map(|node| 1.0 / node.seconds_per_step)
            .sum::<f64>()
            / nodes.len() as f64;
        let mut windows: BTreeMap<u64, BTreeMap<&str, f64>> = BTreeMap::new();
        for job in trace {
            let kind = &self.load.mix[job.kind];
            // Arrival times are finite and non-negative; the window index is small.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let index = (job.at_s / window).floor() as u64;
            *windows
                .entry(index)
                .or_default()
                .entry(kind.checkpoint.as_str())
                .or_default() += kind.cost_units() * service_factor;
        }
        // What each node holds: checkpoint → nodes, never more than the fleet in total.
        let mut held: BTreeMap<&str, usize> = BTreeMap::new();
        let mut loads = 0;
        for work in windows.values() {
            // No checkpoint can have more holders than there are nodes; beyond that it is
            // short of capacity, which costs time, not loads.
            let wanted: BTreeMap<&str, usize> = work
                .iter()
                .map(|(&checkpoint, &units)| {
                    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                    let holders = (units / (per_node * window) - 1e-9).ceil().max(1.0) as usize;
                    (checkpoint, holders.min(nodes.len()))
                })
                .collect();
            let total: usize = wanted.values().sum();
            // More holders wanted than nodes: some node serves two checkpoints in the window.
            loads += total.saturating_sub(nodes.len());
            // Keep every holder still wanted, then give the free nodes to the largest
            // shortfalls; each node given is a load.
            let mut next: BTreeMap<&str, usize> = wanted
                .iter()
                .map(|(&c, &n)| (c, n.min(held.get(c).copied().unwrap_or(0))))
                .collect();
            let mut free = nodes.len() - next.values().sum::<usize>();
            let mut short: Vec<(&str, usize)> = wanted
                .iter()
                .map(|(&c, &n)| (c, n - next[c]))
                .filter(|&(_, n)| n > 0)
                .collect();
            short.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            for (checkpoint, shortfall) in short {
                let given = shortfall.min(free);
                free -= given;
                loads += given;
                *next.entry(checkpoint).or_default() += given;
            }
            // Nodes nobody wanted keep what they held.
            for (&checkpoint, &n) in &held {
                if free == 0 {
                    break;
                }
                let spare = n.saturating_sub(next.get(checkpoint).copied().unwrap_or(0));
                let kept = spare.min(free);
                free -= kept;
                *next.entry(checkpoint).or_default() += kept;
            }
            held = next;
        }
        Some(loads)
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
