//! The embedded default fleet of `comfyfleet up`: simulated GPUs of different sizes and speeds
//! that hold the models real workflows name, so a laptop with nothing installed gets a working
//! fleet.

use comfy_sim::{GpuConfig, ModelFile, ModelFolder, NodeConfig};

const GIB: u64 = 1 << 30;

/// One simulated GPU profile.
struct Profile {
    name: &'static str,
    gpu: &'static str,
    vram: u64,
    seconds_per_step: f64,
    /// Whether it holds the big models (Flux, HunyuanVideo) that need 24 GiB.
    big_models: bool,
    /// Whether it holds the mid-size models (SD3.5, Wan, LTX, Z-Image) that need 16 GiB.
    mid_models: bool,
}

const PROFILES: [Profile; 3] = [
    Profile {
        name: "gpu-4090",
        gpu: "NVIDIA GeForce RTX 4090",
        vram: 24 * GIB,
        seconds_per_step: 0.03,
        big_models: true,
        mid_models: true,
    },
    Profile {
        name: "gpu-a4000",
        gpu: "NVIDIA RTX A4000",
        vram: 16 * GIB,
        seconds_per_step: 0.06,
        big_models: false,
        mid_models: true,
    },
    Profile {
        name: "gpu-3060",
        gpu: "NVIDIA GeForce RTX 3060",
        vram: 8 * GIB,
        seconds_per_step: 0.12,
        big_models: false,
        mid_models: false,
    },
];

/// The configurations of `count` simulated nodes: the three profiles, repeated as needed.
pub fn fleet(count: usize, time_scale: f64) -> Vec<NodeConfig> {
    (0..count)
        .map(|index| {
            let profile = &PROFILES[index % PROFILES.len()];
            let round = index / PROFILES.len();
            let name = if round == 0 {
                profile.name.to_owned()
            } else {
                format!("{}-{}", profile.name, round + 1)
            };
            NodeConfig {
                name,
                gpu: GpuConfig::cuda(profile.gpu, profile.vram),
                seconds_per_step: profile.seconds_per_step,
                time_scale,
                models: models(profile),
                ..NodeConfig::default()
            }
        })
        .collect()
}

fn models(profile: &Profile) -> Vec<ModelFolder> {
    let mut checkpoints = vec![
        "v1-5-pruned-emaonly.safetensors",
        "v1-5-pruned-emaonly.ckpt",
        "dreamshaper_8.safetensors",
        "dreamshaperPixelart_v10.safetensors",
        "landscapePhotoreal_v1.safetensors",
        "sd_xl_base_1.0.safetensors",
        "sd_xl_refiner_1.0.safetensors",
    ];
    let mut text_encoders = vec!["clip_l.safetensors"];
    let mut vae = vec!["sdxl_vae.safetensors", "vae-ft-mse-840000-ema-pruned.ckpt"];
    let mut diffusion = vec![];
    let loras = vec!["epiNoiseoffset_v2.safetensors", "example_lora.safetensors"];
    if profile.mid_models {
        checkpoints.extend([
            "sd3.5_medium.safetensors",
            "ltx-video-2b-v0.9.1.safetensors",
        ]);
        text_encoders.extend([
            "clip_g.safetensors",
            "t5xxl_fp8_e4m3fn.safetensors",
            "t5xxl_fp16.safetensors",
            "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
            "qwen_3_4b.safetensors",
        ]);
        vae.extend(["wan_2.1_vae.safetensors", "ae.safetensors"]);
        diffusion.extend([
            "wan2.1_t2v_1.3B_bf16.safetensors",
            "z_image_turbo_bf16.safetensors",
        ]);
    }
    if profile.big_models {
        checkpoints.push("flux1-dev-fp8.safetensors");
        diffusion.extend([
            "flux1-dev.safetensors",
            "hunyuan_video_t2v_720p_bf16.safetensors",
        ]);
        text_encoders.push("llava_llama3_fp8_scaled.safetensors");
        vae.push("hunyuan_video_vae_bf16.safetensors");
    }
    let folder = |name: &str, files: &[&str]| ModelFolder {
        folder: name.to_owned(),
        files: files.iter().map(|file| ModelFile::named(file)).collect(),
    };
    vec![
        folder("checkpoints", &checkpoints),
        folder("text_encoders", &text_encoders),
        folder("vae", &vae),
        folder("diffusion_models", &diffusion),
        folder("loras", &loras),
        folder("upscale_models", &["RealESRGAN_x4plus.pth"]),
        folder("controlnet", &["control_v11p_sd15_canny.safetensors"]),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_fleet_has_three_different_gpus() {
        let nodes = fleet(3, 1.0);
        let vram: Vec<u64> = nodes.iter().map(|node| node.gpu.vram_total).collect();
        assert_eq!(vram, vec![24 * GIB, 16 * GIB, 8 * GIB]);
    }

    #[test]
    fn only_the_big_gpu_holds_flux() {
        let nodes = fleet(3, 1.0);
        let holds_flux: Vec<bool> = nodes
            .iter()
            .map(|node| {
                node.models
                    .iter()
                    .flat_map(|f| &f.files)
                    .any(|file| file.name.contains("flux1-dev-fp8"))
            })
            .collect();
        assert_eq!(holds_flux, vec![true, false, false]);
    }

    #[test]
    fn extra_nodes_get_unique_names() {
        let names: Vec<String> = fleet(5, 1.0).into_iter().map(|node| node.name).collect();
        assert_eq!(
            names,
            vec![
                "gpu-4090",
                "gpu-a4000",
                "gpu-3060",
                "gpu-4090-2",
                "gpu-a4000-2"
            ]
        );
    }
}
