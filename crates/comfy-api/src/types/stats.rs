//! `GET /system_stats`: the node's software versions, RAM and compute device(s).
//!
//! ComfyUI 0.3.64 lists exactly one device (the compute device); newer versions list every
//! visible torch device, compute device first. On `--cpu` nodes the device is
//! `{type: "cpu", index: null}` and its "VRAM" numbers are system RAM, so [`SystemStats::has_gpu`]
//! exists to stop a scheduler from mistaking RAM for VRAM.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::lenient;

/// Answer of `GET /system_stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SystemStats {
    /// Host and software information.
    pub system: SystemInfo,
    /// Compute devices; the first one is the device ComfyUI computes on.
    #[serde(default)]
    pub devices: Vec<Device>,
}

/// The `system` object of `/system_stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SystemInfo {
    /// `os.name` (`posix`, `nt`) in 0.3.64, `sys.platform` in newer versions.
    #[serde(default)]
    pub os: String,
    /// Total system RAM in bytes.
    #[serde(default, deserialize_with = "lenient::u64_any")]
    pub ram_total: u64,
    /// Available system RAM in bytes.
    #[serde(default, deserialize_with = "lenient::u64_any")]
    pub ram_free: u64,
    /// ComfyUI version, e.g. `0.3.64`.
    #[serde(default)]
    pub comfyui_version: Option<String>,
    /// Frontend version the server wants (may be null).
    #[serde(default)]
    pub required_frontend_version: Option<String>,
    /// Python version string.
    #[serde(default)]
    pub python_version: Option<String>,
    /// PyTorch version string.
    #[serde(default)]
    pub pytorch_version: Option<String>,
    /// Whether the server runs the Windows embedded Python.
    #[serde(default, deserialize_with = "lenient::bool_any")]
    pub embedded_python: bool,
    /// The server's command line.
    #[serde(default)]
    pub argv: Vec<String>,
    /// Every other key (template versions, package versions, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One device of `/system_stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Device {
    /// E.g. `cuda:0 NVIDIA H200 : cudaMallocAsync`, or `cpu`.
    #[serde(default)]
    pub name: String,
    /// Torch device type: `cuda`, `cpu`, `mps`, `xpu`, ...
    #[serde(rename = "type", default)]
    pub device_type: String,
    /// Device index; `None` on CPU.
    #[serde(default, deserialize_with = "lenient::opt_u64_any")]
    pub index: Option<u64>,
    /// Total device memory in bytes (system RAM on CPU).
    #[serde(default, deserialize_with = "lenient::u64_any")]
    pub vram_total: u64,
    /// Memory ComfyUI could allocate now without evicting anything (see protocol notes).
    #[serde(default, deserialize_with = "lenient::u64_any")]
    pub vram_free: u64,
    /// Bytes reserved by this process's PyTorch allocator.
    #[serde(default, deserialize_with = "lenient::u64_any")]
    pub torch_vram_total: u64,
    /// Reserved but unused bytes of this process's PyTorch allocator.
    #[serde(default, deserialize_with = "lenient::u64_any")]
    pub torch_vram_free: u64,
    /// Every other key.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Device {
    /// Says whether this is a CPU pseudo-device (its memory numbers are system RAM).
    pub fn is_cpu(&self) -> bool {
        self.device_type.eq_ignore_ascii_case("cpu")
    }
}

impl SystemStats {
    /// Returns the device ComfyUI computes on (the first listed), if any.
    pub fn compute_device(&self) -> Option<&Device> {
        self.devices.first()
    }

    /// Says whether the node computes on a GPU. `false` for `--cpu` nodes, whose "VRAM"
    /// figures are system RAM and must not be used for placement.
    pub fn has_gpu(&self) -> bool {
        self.compute_device().is_some_and(|d| !d.is_cpu())
    }

    /// Total memory of the compute device in bytes, or `None` when the node has no GPU.
    pub fn gpu_vram_total(&self) -> Option<u64> {
        self.compute_device()
            .filter(|d| !d.is_cpu())
            .map(|d| d.vram_total)
    }
}
