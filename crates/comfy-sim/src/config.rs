//! Configuration of one simulated node and of a fleet.
//!
//! Everything a scheduler can observe about a GPU server is a knob here: the device name and
//! VRAM, how fast it samples, which model files it holds (with their size and load time), which
//! node classes it knows, which protocol generation it speaks and which faults it shows. All
//! durations go through one `time_scale` so tests run a "20 s" job in milliseconds.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::error::SimError;

/// Protocol generation the node reproduces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// ComfyUI 0.3.64, as recorded in the captures.
    #[default]
    V0_3_64,
    /// A newer server: jobs API, UUID-only prompt ids, `missing_node_type`, several devices.
    Newer,
}

/// Kind of compute device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DeviceType {
    /// An NVIDIA GPU.
    #[default]
    Cuda,
    /// CPU mode (`--cpu`): "VRAM" numbers are system RAM.
    Cpu,
}

/// The simulated compute device.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct GpuConfig {
    /// Device name as `/system_stats` prints it.
    pub name: String,
    /// cuda or cpu.
    pub device_type: DeviceType,
    /// Total device memory in bytes.
    pub vram_total: u64,
    /// Memory the driver and CUDA context use before any model loads, in bytes.
    pub vram_baseline: u64,
    /// System RAM reported in `/system_stats`.
    pub ram_total: u64,
    /// Free system RAM reported in `/system_stats`.
    pub ram_free: u64,
}

impl Default for GpuConfig {
    fn default() -> Self {
        GpuConfig {
            name: "cuda:0 NVIDIA GeForce RTX 4090 : cudaMallocAsync".into(),
            device_type: DeviceType::Cuda,
            vram_total: 25_386_352_640,
            vram_baseline: 400 * 1024 * 1024,
            ram_total: 67_317_772_288,
            ram_free: 60_000_000_000,
        }
    }
}

impl GpuConfig {
    /// The CPU device of the captures (`--cpu`, 25.3 GB of RAM).
    pub fn cpu() -> Self {
        GpuConfig {
            name: "cpu".into(),
            device_type: DeviceType::Cpu,
            vram_total: 25_276_194_816,
            vram_baseline: 25_276_194_816 - 24_198_918_144,
            ram_total: 25_276_194_816,
            ram_free: 24_198_918_144,
        }
    }

    /// A CUDA device with the given model name and memory.
    pub fn cuda(model: &str, vram_total: u64) -> Self {
        GpuConfig {
            name: format!("cuda:0 {model} : cudaMallocAsync"),
            vram_total,
            ..GpuConfig::default()
        }
    }
}

/// One model file the node holds.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelFile {
    /// File name relative to its folder, as it appears in combos.
    pub name: String,
    /// Size in bytes (VRAM it takes when loaded). Default: guessed from the name.
    #[serde(default)]
    pub size: Option<u64>,
    /// Seconds to load it into VRAM. Default: guessed from the name.
    #[serde(default)]
    pub load_seconds: Option<f64>,
}

impl ModelFile {
    /// A model file whose size and load time are guessed from its name.
    pub fn named(name: &str) -> Self {
        ModelFile {
            name: name.into(),
            size: None,
            load_seconds: None,
        }
    }

    /// Size in bytes, from the config or the model family of the name.
    pub fn size_bytes(&self) -> u64 {
        self.size.unwrap_or_else(|| family_of(&self.name).0)
    }

    /// Load time in (unscaled) seconds, from the config or the model family of the name.
    pub fn load_secs(&self) -> f64 {
        self.load_seconds.unwrap_or_else(|| family_of(&self.name).1)
    }
}

/// Guesses (size bytes, load seconds) from a model file name.
///
/// Components are told apart first, since their names often carry the family they belong to
/// (`wan_2.1_vae`, `hunyuan_video_vae_bf16`). A name that states a parameter count (`1.3B`,
/// `_14b_`, `qwen_3_4b`) is sized from it and its precision, as the file on disk would be;
/// other names fall back to the usual size of their family.
fn family_of(name: &str) -> (u64, f64) {
    const GB: f64 = 1_073_741_824.0;
    let n = name.to_ascii_lowercase();
    let (gb, secs) = if n.contains("vae") || n.contains("taesd") || n.contains("lora") {
        (0.3, 0.5)
    } else if n.contains("t5") {
        // T5-XXL and UMT5-XXL encoders: about 4.7 billion parameters.
        if n.contains("fp8") {
            (5.0, 5.0)
        } else {
            (9.0, 8.0)
        }
    } else if let Some(billions) = parameter_count(&n) {
        let gb = billions * bytes_per_parameter(&n) * 1e9 / GB;
        (gb, (gb * 1.2).max(1.0))
    } else if n.contains("flux") {
        if n.contains("fp8") {
            (12.0, 12.0)
        } else {
            (17.0, 15.0)
        }
    } else if n.contains("wan") || n.contains("hunyuan") || n.contains("ltx") || n.contains("video")
    {
        (14.0, 18.0)
    } else if n.contains("sd3") || n.contains("sd35") {
        (5.0, 5.0)
    } else if n.contains("xl") {
        (6.5, 6.0)
    } else if n.contains("clip") {
        (0.5, 1.0)
    } else if n.contains("control") || n.contains("upscale") || n.contains("esrgan") {
        (1.4, 1.5)
    } else {
        (2.0, 3.0)
    };
    ((gb * GB) as u64, secs)
}

/// The parameter count a model name states, in billions: `1.3b` in `wan2.1_t2v_1.3b_bf16`.
/// The number must stand alone between separators, so `laion2b` or `s32b` do not count.
fn parameter_count(lower: &str) -> Option<f64> {
    let stem = MODEL_EXTENSIONS
        .iter()
        .find_map(|extension| lower.strip_suffix(extension))
        .unwrap_or(lower);
    stem.split(|c: char| !(c.is_ascii_alphanumeric() || c == '.'))
        .filter_map(|word| word.strip_suffix('b'))
        .filter(|number| number.starts_with(|c: char| c.is_ascii_digit()))
        .find_map(|number| number.parse::<f64>().ok())
        .filter(|billions| (0.1..=1000.0).contains(billions))
}

/// File name endings of model weights, dropped before reading a parameter count.
const MODEL_EXTENSIONS: &[&str] = &[
    ".safetensors",
    ".ckpt",
    ".pth",
    ".pt",
    ".bin",
    ".gguf",
    ".sft",
];

/// Bytes per weight by the precision a model name states; 16-bit when it states none.
fn bytes_per_parameter(lower: &str) -> f64 {
    if lower.contains("fp8") || lower.contains("int8") || lower.contains("q8") {
        1.0
    } else if lower.contains("fp32") {
        4.0
    } else {
        2.0
    }
}

/// Model files per folder (`checkpoints`, `loras`, ...).
#[derive(Debug, Clone, Deserialize, Default)]
pub struct ModelFolder {
    /// Folder key as in `/models`.
    pub folder: String,
    /// Files in it.
    pub files: Vec<ModelFile>,
}

/// Faults a node shows from start; the same can be changed at run time through `/__sim/faults`.
#[derive(Debug, Clone, Deserialize, Default, serde::Serialize, PartialEq)]
#[serde(default)]
pub struct FaultConfig {
    /// Node class at which prompts fail at run time (with `fail_count`).
    pub fail_class: Option<String>,
    /// How many upcoming prompts fail at `fail_class`.
    pub fail_count: u32,
    /// Close every WebSocket when the next node of a prompt starts executing (one shot).
    pub drop_ws_mid_run: bool,
    /// Keep sockets open but send no more frames.
    pub silence_ws: bool,
    /// Delay of every `/system_stats` answer, in milliseconds (not scaled).
    pub system_stats_delay_ms: u64,
    /// `/system_stats` answers 500.
    pub system_stats_fail: bool,
    /// Routes (paths without the `/api` prefix, e.g. `/queue`) that answer 500.
    pub http_500_routes: Vec<String>,
    /// Accept connections and requests but never answer (admin routes excepted).
    pub hang: bool,
}

/// Configuration of one simulated node.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct NodeConfig {
    /// Name used in logs and by the fleet.
    pub name: String,
    /// The compute device.
    pub gpu: GpuConfig,
    /// Seconds per sampler step at 512x512 (scaled linearly by pixels x batch).
    pub seconds_per_step: f64,
    /// Seconds per megapixel for ordinary image nodes (blur and sharpen cost 50 times more).
    pub seconds_per_megapixel: f64,
    /// Multiplies every simulated duration; 0 runs as fast as possible.
    pub time_scale: f64,
    /// Model files per folder.
    pub models: Vec<ModelFolder>,
    /// Node classes to offer (empty: the whole embedded catalogue of 496 classes).
    pub node_classes: Vec<String>,
    /// Extra class definitions, as a JSON object `{class: NodeInfo}` in `/object_info` format.
    pub custom_classes_json: Option<String>,
    /// Protocol generation.
    pub profile: Profile,
    /// Request body limit in bytes (`--max-upload-size`, default 100 MiB).
    pub max_upload_size: u64,
    /// Whether `max_upload_size` was given explicitly (ComfyUI then reports it as a float).
    pub max_upload_size_explicit: bool,
    /// History entries kept (ComfyUI: 10000).
    pub history_cap: usize,
    /// Bytes of frames one WebSocket may have queued but unsent before the node closes it
    /// (a client that stops reading would otherwise grow the node's memory without bound).
    pub ws_backlog_bytes: usize,
    /// Sampler preview method (`none` = no previews, like the default server).
    pub preview_method: String,
    /// Faults from the start.
    pub faults: FaultConfig,
    /// Command line echoed in `/system_stats`.
    pub argv: Vec<String>,
    /// `comfyui_version` in `/system_stats`.
    pub comfyui_version: String,
    /// `python_version` in `/system_stats`.
    pub python_version: String,
    /// `pytorch_version` in `/system_stats`.
    pub pytorch_version: String,
    /// Folder for input/output/temp files; default: a fresh folder under the system temp dir,
    /// removed on shutdown.
    pub data_dir: Option<PathBuf>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            name: "sim".into(),
            gpu: GpuConfig::default(),
            seconds_per_step: 0.05,
            seconds_per_megapixel: 0.02,
            time_scale: 1.0,
            models: default_models(),
            node_classes: Vec::new(),
            custom_classes_json: None,
            profile: Profile::V0_3_64,
            max_upload_size: 100 * 1024 * 1024,
            max_upload_size_explicit: false,
            history_cap: 10_000,
            ws_backlog_bytes: 64 * 1024 * 1024,
            preview_method: "none".into(),
            faults: FaultConfig::default(),
            argv: vec![
                "main.py".into(),
                "--listen".into(),
                "127.0.0.1".into(),
                "--port".into(),
                "8188".into(),
                "--disable-auto-launch".into(),
            ],
            comfyui_version: "0.3.64".into(),
            python_version: "3.11.7 (main, May  9 2026, 07:35:25) [GCC 12.2.0]".into(),
            pytorch_version: "2.8.0+cu128".into(),
            data_dir: None,
        }
    }
}

fn default_models() -> Vec<ModelFolder> {
    let folder = |name: &str, files: &[&str]| ModelFolder {
        folder: name.into(),
        files: files.iter().map(|f| ModelFile::named(f)).collect(),
    };
    vec![
        folder(
            "checkpoints",
            &[
                "v1-5-pruned-emaonly.safetensors",
                "sd_xl_base_1.0.safetensors",
                "flux1-dev-fp8.safetensors",
            ],
        ),
        folder("loras", &["example_lora.safetensors"]),
        folder("vae", &["sdxl_vae.safetensors", "ae.safetensors"]),
        folder(
            "text_encoders",
            &["clip_l.safetensors", "t5xxl_fp8_e4m3fn.safetensors"],
        ),
        folder("diffusion_models", &["flux1-dev.safetensors"]),
        folder("upscale_models", &["RealESRGAN_x4plus.pth"]),
        folder("controlnet", &["control_v11p_sd15_canny.safetensors"]),
    ]
}

impl NodeConfig {
    /// A node with the given name and default GPU.
    pub fn named(name: &str) -> Self {
        NodeConfig {
            name: name.into(),
            ..NodeConfig::default()
        }
    }

    /// Reproduces the capture server: CPU device, its argv, no model files.
    pub fn capture_cpu() -> Self {
        NodeConfig {
            name: "capture-cpu".into(),
            gpu: GpuConfig::cpu(),
            models: Vec::new(),
            argv: vec![
                "main.py".into(),
                "--cpu".into(),
                "--listen".into(),
                "127.0.0.1".into(),
                "--port".into(),
                "8188".into(),
                "--disable-auto-launch".into(),
            ],
            ..NodeConfig::default()
        }
    }

    /// Sets the time scale.
    pub fn with_time_scale(mut self, scale: f64) -> Self {
        self.time_scale = scale;
        self
    }

    /// Sets the GPU.
    pub fn with_gpu(mut self, gpu: GpuConfig) -> Self {
        self.gpu = gpu;
        self
    }

    /// Adds a model file to a folder.
    pub fn with_model(mut self, folder: &str, file: ModelFile) -> Self {
        match self.models.iter_mut().find(|f| f.folder == folder) {
            Some(f) => f.files.push(file),
            None => self.models.push(ModelFolder {
                folder: folder.into(),
                files: vec![file],
            }),
        }
        self
    }

    /// Sets the faults present from the start.
    pub fn with_faults(mut self, faults: FaultConfig) -> Self {
        self.faults = faults;
        self
    }

    /// Checks values that would make the node misbehave.
    pub fn validate(&self) -> Result<(), SimError> {
        let bad = |reason: &str| {
            Err(SimError::Config {
                name: self.name.clone(),
                reason: reason.into(),
            })
        };
        if !(self.time_scale >= 0.0 && self.time_scale.is_finite()) {
            return bad("time_scale must be a finite number >= 0");
        }
        if !(self.seconds_per_step >= 0.0 && self.seconds_per_megapixel >= 0.0) {
            return bad("speeds must be >= 0");
        }
        if self.history_cap == 0 {
            return bad("history_cap must be at least 1");
        }
        if self.ws_backlog_bytes == 0 {
            return bad("ws_backlog_bytes must be at least 1");
        }
        Ok(())
    }
}

/// One node of a fleet file: a listen address plus the node settings.
#[derive(Debug, Clone, Deserialize)]
pub struct FleetNode {
    /// Address to listen on (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Node settings.
    #[serde(flatten)]
    pub node: NodeConfig,
}

/// A whole fleet, as in `fleet.toml` (`[[nodes]]` tables).
#[derive(Debug, Clone, Deserialize, Default)]
pub struct FleetConfig {
    /// The nodes.
    pub nodes: Vec<FleetNode>,
}

impl FleetConfig {
    /// Parses a fleet TOML text.
    pub fn from_toml(text: &str) -> Result<Self, SimError> {
        toml::from_str(text).map_err(|e| SimError::ConfigFile {
            path: "<text>".into(),
            reason: e.to_string(),
        })
    }

    /// `count` default nodes on loopback ports picked by the OS, named `{prefix}-{i}`.
    pub fn uniform(prefix: &str, count: usize, template: &NodeConfig) -> Self {
        let nodes = (0..count)
            .map(|i| FleetNode {
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                node: NodeConfig {
                    name: format!("{prefix}-{i}"),
                    ..template.clone()
                },
            })
            .collect();
        FleetConfig { nodes }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fleet_toml_parses_nodes_with_models() {
        let text = r#"
            [[nodes]]
            listen = "127.0.0.1:0"
            name = "gpu-1"
            time_scale = 0.01
            [nodes.gpu]
            name = "cuda:0 NVIDIA H100 : cudaMallocAsync"
            vram_total = 85000000000
            [[nodes.models]]
            folder = "checkpoints"
            files = [{ name = "sd_xl_base_1.0.safetensors" }]
        "#;
        let fleet = FleetConfig::from_toml(text).expect("fleet parses");
        assert_eq!(fleet.nodes.len(), 1);
        let n = &fleet.nodes[0].node;
        assert_eq!(n.name, "gpu-1");
        assert_eq!(n.gpu.vram_total, 85_000_000_000);
        assert_eq!(
            n.models[0].files[0].size_bytes(),
            (6.5 * 1_073_741_824.0) as u64
        );
    }

    #[test]
    fn family_guesses_sizes() {
        assert!(ModelFile::named("flux1-dev.safetensors").size_bytes() > 16_000_000_000);
        assert!(ModelFile::named("v1-5-pruned.safetensors").size_bytes() < 3_000_000_000);
    }

    #[test]
    fn stated_parameter_counts_and_components_size_video_models_like_their_files() {
        let gb = |name: &str| ModelFile::named(name).size_bytes() as f64 / 1e9;
        // Wan 2.1 1.3B in bf16 is a 2.8 GB file; its VAE is a quarter of a gigabyte.
        let wan = gb("wan2.1_t2v_1.3B_bf16.safetensors");
        assert!((2.4..3.0).contains(&wan), "{wan}");
        assert!(gb("wan_2.1_vae.safetensors") < 1.0);
        assert!(gb("hunyuan_video_vae_bf16.safetensors") < 1.0);
        let umt5 = gb("umt5_xxl_fp8_e4m3fn_scaled.safetensors");
        assert!((5.0..7.0).contains(&umt5), "{umt5}");
        // The whole Wan 1.3B workflow fits a 24 GiB card with room to sample.
        assert!(wan + umt5 + gb("wan_2.1_vae.safetensors") < 12.0);
        // 14 billion parameters in 8 bits, and a 4B text encoder in bf16.
        let big = gb("wan2.1_t2v_14B_fp8_e4m3fn.safetensors");
        assert!((13.5..14.5).contains(&big), "{big}");
        let qwen = gb("qwen_3_4b.safetensors");
        assert!((7.5..8.5).contains(&qwen), "{qwen}");
        // Counts glued to other letters are not parameter counts.
        assert_eq!(
            parameter_count("clip-vit-h-14-laion2b-s32b-b79k.safetensors"),
            None
        );
        assert_eq!(parameter_count("sd_xl_base_1.0.safetensors"), None);
    }
}
