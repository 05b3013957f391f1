//! What a scenario turns into: the fleet's node configurations, the seeded trace of jobs and
//! the submissions that replay it.
//!
//! The trace is drawn once from the scenario's seed and replayed under every policy, so each
//! policy sees the same jobs at the same instants.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{Scenario, TraceJob};
use crate::driver::Planned;
use crate::workflow::{self, Txt2Img};

impl Scenario {
    /// Jobs in the trace.
    pub fn total_jobs(&self) -> usize {
        self.load.jobs
            + self
                .load
                .bursts
                .iter()
                .map(|burst| burst.jobs)
                .sum::<usize>()
    }

    /// Simulated seconds as wall time.
    pub fn wall(&self, simulated_s: f64) -> Duration {
        Duration::from_secs_f64((simulated_s * self.time_scale).max(0.0))
    }

    /// The emulator configuration of every node, groups expanded.
    pub fn node_configs(&self) -> Vec<comfy_sim::NodeConfig> {
        let mut nodes = Vec::new();
        for group in &self.nodes {
            for index in 0..group.count {
                let name = if group.count == 1 {
                    group.name.clone()
                } else {
                    format!("{}-{index}", group.name)
                };
                let checkpoints = comfy_sim::ModelFolder {
                    folder: "checkpoints".into(),
                    files: group
                        .checkpoints
                        .iter()
                        .map(|file| comfy_sim::ModelFile::named(file))
                        .collect(),
                };
                nodes.push(comfy_sim::NodeConfig {
                    name,
                    gpu: comfy_sim::GpuConfig::cuda(
                        &group.gpu,
                        (group.vram_gib * f64::from(1u32 << 30)) as u64,
                    ),
                    seconds_per_step: group.seconds_per_step,
                    time_scale: self.time_scale,
                    models: vec![checkpoints],
                    ..comfy_sim::NodeConfig::default()
                });
            }
        }
        nodes
    }

    /// Draws the concrete trace: Poisson arrivals plus bursts, sorted by arrival.
    pub fn trace(&self) -> Vec<TraceJob> {
        let mut rng = StdRng::seed_from_u64(self.seed);
        let mut arrivals = Vec::with_capacity(self.total_jobs());
        let mut now = 0.0_f64;
        for _ in 0..self.load.jobs {
            // Exponential gaps; 1 - u is in (0, 1], so the logarithm is finite.
            let u: f64 = rng.random();
            now += -(1.0 - u).ln() / self.load.rate;
            arrivals.push(now);
        }
        for burst in &self.load.bursts {
            arrivals.extend(std::iter::repeat_n(burst.at_s, burst.jobs));
        }
        arrivals.sort_by(f64::total_cmp);
        arrivals
            .into_iter()
            .map(|at_s| TraceJob {
                at_s,
                kind: self.pick_kind(at_s, &mut rng),
                seed: rng.random::<u64>() >> 12,
            })
            .collect()
    }

    fn pick_kind(&self, at_s: f64, rng: &mut StdRng) -> usize {
        let mix = &self.load.mix;
        let weights: Vec<f64> = match self.load.alternate_every_s {
            Some(every) if mix.len() > 1 => {
                let favoured = (at_s / every).floor() as usize % mix.len();
                let rest = (1.0 - self.load.alternate_share) / (mix.len() - 1) as f64;
                (0..mix.len())
                    .map(|index| {
                        if index == favoured {
                            self.load.alternate_share
                        } else {
                            rest
                        }
                    })
                    .collect()
            }
            _ => mix.iter().map(|kind| kind.weight).collect(),
        };
        let total: f64 = weights.iter().sum();
        let mut draw = rng.random::<f64>() * total;
        for (index, weight) in weights.iter().enumerate() {
            if draw < *weight {
                return index;
            }
            draw -= weight;
        }
        mix.len() - 1
    }

    /// The trace as jobs to submit.
    pub fn planned(&self, trace: &[TraceJob]) -> Vec<Planned> {
        trace
            .iter()
            .map(|job| {
                let kind = &self.load.mix[job.kind];
                Planned {
                    at: self.wall(job.at_s),
                    workflow: workflow::txt2img(&Txt2Img {
                        checkpoint: kind.checkpoint.clone(),
                        steps: kind.steps,
                        width: kind.width,
                        height: kind.height,
                        seed: job.seed,
                    }),
                    tenant: kind.tenant.clone(),
                }
            })
            .collect()
    }
}
