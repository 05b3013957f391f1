//! The soak's job mix and the configuration of its simulated nodes.
//!
//! Jobs are txt2img workflows of a few checkpoints and sizes, chosen so one takes between about
//! 0.2 and 2 seconds on a simulated RTX 4090; the mean of the mix sets the fleet's estimated
//! capacity and so the offered rate.

use bench::workflow::{self, Txt2Img};
use comfy_sim::{GpuConfig, ModelFile, ModelFolder};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The job mix: (share, workflow maker). Sizes keep jobs between about 0.2 and 2 seconds at
/// 0.05 s per 512×512 step.
pub(super) fn job(rng: &mut StdRng, seed: u64) -> (Vec<u8>, f64) {
    let pick: f64 = rng.random();
    if pick < 0.1 {
        return (workflow::tiny(seed), 0.05);
    }
    let (checkpoint, side, steps) = if pick < 0.7 {
        (
            "v1-5-pruned-emaonly.safetensors",
            512,
            rng.random_range(4..=30),
        )
    } else if pick < 0.85 {
        ("dreamshaper_8.safetensors", 512, rng.random_range(4..=30))
    } else {
        ("sd_xl_base_1.0.safetensors", 768, rng.random_range(4..=16))
    };
    let secs = 0.05 * f64::from(steps) * f64::from(side * side) / (512.0 * 512.0);
    let bytes = workflow::txt2img(&Txt2Img {
        checkpoint: checkpoint.into(),
        steps,
        width: side,
        height: side,
        seed,
    });
    (bytes, secs)
}

/// Estimated mean seconds of work per job of the mix (sampled, so it follows [`job`]).
pub(super) fn mean_job_seconds() -> f64 {
    let mut rng = StdRng::seed_from_u64(7);
    let samples = 4000;
    (0..samples).map(|i| job(&mut rng, i).1).sum::<f64>() / samples as f64
}

/// The emulator configuration of one soak node: an RTX 4090 holding every checkpoint of the mix.
pub(super) fn node_config(name: String) -> comfy_sim::NodeConfig {
    let folder = |folder: &str, files: &[&str]| ModelFolder {
        folder: folder.into(),
        files: files.iter().map(|file| ModelFile::named(file)).collect(),
    };
    comfy_sim::NodeConfig {
        name,
        gpu: GpuConfig::cuda("NVIDIA GeForce RTX 4090", 24 << 30),
        time_scale: 1.0,
        models: vec![folder(
            "checkpoints",
            &[
                "v1-5-pruned-emaonly.safetensors",
                "dreamshaper_8.safetensors",
                "sd_xl_base_1.0.safetensors",
            ],
        )],
        ..comfy_sim::NodeConfig::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_job_mix_takes_between_a_fifth_and_two_seconds() {
        let mut rng = StdRng::seed_from_u64(3);
        for seed in 0..500 {
            let (bytes, secs) = job(&mut rng, seed);
            assert!(serde_json::from_slice::<serde_json::Value>(&bytes).is_ok());
            assert!(secs <= 2.0, "{secs}");
        }
        let mean = mean_job_seconds();
        assert!((0.2..=2.0).contains(&mean), "{mean}");
    }
}
