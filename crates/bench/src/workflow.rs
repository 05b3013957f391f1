//! The workflows the benchmarks submit, built in ComfyUI's API format.
//!
//! Benchmarks need many distinct jobs of controlled size: the seed (or colour) makes each job
//! unique so no node serves it from its execution cache, and steps, size and checkpoint set the
//! simulated work and the model a node must hold.

use serde_json::json;

/// A zero-work job: `EmptyImage` → `SaveImage`, an 8×8 image whose colour is derived from `seed`.
pub fn tiny(seed: u64) -> Vec<u8> {
    let workflow = json!({
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": seed % 0x0100_0000}
        },
        "2": {
            "class_type": "SaveImage",
            "inputs": {"images": ["1", 0], "filename_prefix": "bench"}
        }
    });
    workflow.to_string().into_bytes()
}

/// Size and model of a text-to-image job.
#[derive(Debug, Clone, PartialEq)]
pub struct Txt2Img {
    /// Checkpoint file name (folder `checkpoints`).
    pub checkpoint: String,
    /// Sampler steps.
    pub steps: u32,
    /// Image width in pixels.
    pub width: u32,
    /// Image height in pixels.
    pub height: u32,
    /// Sampler seed; distinct seeds defeat the node's cache.
    pub seed: u64,
}

/// A classic text-to-image graph: checkpoint, two prompts, empty latent, KSampler, VAE decode,
/// save.
pub fn txt2img(job: &Txt2Img) -> Vec<u8> {
    let workflow = json!({
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": job.seed, "steps": job.steps, "cfg": 7, "sampler_name": "euler",
                "scheduler": "normal", "denoise": 1,
                "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
                "latent_image": ["5", 0]
            }
        },
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": job.checkpoint}},
        "5": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": job.width, "height": job.height, "batch_size": 1}
        },
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse at dusk", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "bench"}}
    });
    workflow.to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workflows_are_api_format_and_distinct_per_seed() {
        let a: serde_json::Value = serde_json::from_slice(&tiny(1)).expect("json");
        let b: serde_json::Value = serde_json::from_slice(&tiny(2)).expect("json");
        assert_eq!(a["2"]["class_type"], "SaveImage");
        assert_ne!(a, b);
        let job = Txt2Img {
            checkpoint: "sd_xl_base_1.0.safetensors".into(),
            steps: 12,
            width: 1024,
            height: 768,
            seed: 9,
        };
        let graph: serde_json::Value = serde_json::from_slice(&txt2img(&job)).expect("json");
        assert_eq!(
            graph["4"]["inputs"]["ckpt_name"],
            "sd_xl_base_1.0.safetensors"
        );
        assert_eq!(graph["3"]["inputs"]["steps"], 12);
        assert_eq!(graph["5"]["inputs"]["width"], 1024);
    }
}
