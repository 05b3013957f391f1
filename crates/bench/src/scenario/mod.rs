//! Scenario files: a fleet, a load and faults, and the seeded job trace they produce.
//!
//! Comparing placement policies is only fair when each one sees exactly the same jobs at the
//! same instants. A scenario therefore describes the load statistically (Poisson arrivals at
//! a rate, bursts, a weighted job mix, optionally alternating demand) and [`Scenario::trace`]
//! draws one concrete trace from a seeded RNG; every policy replays that trace.
//!
//! Times in a scenario are *simulated* seconds: the emulated GPUs take `steps ×
//! seconds_per_step × pixels / 512²` of them per job. `time_scale` multiplies every simulated
//! duration (node work, model loads, arrival times, fault times) into wall time, so a
//! five-minute workload replays in seconds. Coordinator timings (probe interval, down grace)
//! are real wall time and are not scaled.
//!
//! ```toml
//! name = "equal-gpus"
//! time_scale = 0.02
//! seed = 7
//! [[nodes]]
//! name = "gpu"
//! count = 4
//! gpu = "NVIDIA GeForce RTX 4090"
//! vram_gib = 24
//! seconds_per_step = 0.03
//! checkpoints = ["sd_xl_base_1.0.safetensors"]
//! [load]
//! jobs = 200
//! rate = 4.0
//! [[load.mix]]
//! class = "sdxl"
//! checkpoint = "sd_xl_base_1.0.safetensors"
//! steps = 20
//! ```

//!
//! The file format is in `spec`, reading and checking it in `check`, the fleet, the trace and
//! the submissions drawn from a scenario in `trace`, and the reference figures results are
//! compared with (lower bound on the makespan, fewest model loads) in `bounds`, and the same
//! scenario at another arrival rate (for a load sweep) in `scaled`.

mod bounds;
mod check;
mod scaled;
mod spec;
mod trace;

pub use scaled::{MAX_RATE_SCALE, MIN_RATE_SCALE, factor_label};
pub use spec::{
    Burst, CoordinatorSettings, ExpectedFinishOverrides, Fault, Forbid, JobKind, Load, NodeGroup,
    Scenario, TraceJob,
};

#[cfg(test)]
mod tests;
