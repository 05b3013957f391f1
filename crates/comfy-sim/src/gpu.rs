//! The simulated GPU: which model files are resident, VRAM in use, load cost and OOM.
//!
//! A model costs its load time only when it is not resident; loading evicts least recently used
//! models that the running prompt does not need until it fits. A prompt whose models plus
//! activations exceed the device fails the way PyTorch does, with `torch.OutOfMemoryError`.

use crate::config::{DeviceType, GpuConfig};

/// Bytes of activation memory per image pixel (x batch) during sampling (rough SD-family figure).
pub const ACTIVATION_BYTES_PER_PIXEL: u64 = 2_500;

/// Bytes of activation memory per pixel and frame when a video model samples.
///
/// Video models compress time as well as space (Wan 2.1 and HunyuanVideo: 4 frames and 8×8
/// pixels per latent, 2×2 latents per token), and their attention runs in tiles, so a 480p
/// clip of 81 frames samples in a few GiB: Wan 2.1 1.3B is published as needing about 8 GiB
/// in all for it, weights included.
pub const VIDEO_ACTIVATION_BYTES_PER_PIXEL: u64 = 100;

/// Residency of model files on the device.
#[derive(Debug, Clone)]
pub struct GpuState {
    /// Resident models, least recently used first: (name, bytes).
    resident: Vec<(String, u64)>,
    total: u64,
    baseline: u64,
    device_type: DeviceType,
}

/// Result of asking for a model.
#[derive(Debug, Clone, PartialEq)]
pub enum Load {
    /// Already resident; no cost.
    Resident,
    /// Loaded now; pay the load time. Lists models evicted to make room.
    Loaded {
        /// Names evicted.
        evicted: Vec<String>,
    },
    /// Cannot fit even after evicting everything not pinned.
    OutOfMemory {
        /// Bytes requested.
        requested: u64,
        /// Bytes free after eviction.
        free: u64,
    },
}

impl GpuState {
    /// An empty device.
    pub fn new(gpu: &GpuConfig) -> Self {
        GpuState {
            resident: Vec::new(),
            total: gpu.vram_total,
            baseline: gpu.vram_baseline,
            device_type: gpu.device_type,
        }
    }

    /// Bytes taken by resident models.
    pub fn used_by_models(&self) -> u64 {
        self.resident.iter().map(|(_, b)| b).sum()
    }

    /// Free bytes as `/system_stats` reports them.
    pub fn free(&self) -> u64 {
        self.total
            .saturating_sub(self.baseline)
            .saturating_sub(self.used_by_models())
    }

    /// Total bytes.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Resident model names, least recently used first.
    pub fn resident(&self) -> Vec<String> {
        self.resident.iter().map(|(n, _)| n.clone()).collect()
    }

    /// Whether this is a CPU device.
    pub fn is_cpu(&self) -> bool {
        self.device_type == DeviceType::Cpu
    }

    /// Makes `name` resident, evicting unpinned models in LRU order if needed.
    pub fn ensure(&mut self, name: &str, bytes: u64, pinned: &[String]) -> Load {
        if let Some(pos) = self.resident.iter().position(|(n, _)| n == name) {
            let entry = self.resident.remove(pos);
            self.resident.push(entry);
            return Load::Resident;
        }
        let mut evicted = Vec::new();
        while self.free() < bytes {
            let Some(pos) = self.resident.iter().position(|(n, _)| !pinned.contains(n)) else {
                return Load::OutOfMemory {
                    requested: bytes,
                    free: self.free(),
                };
            };
            evicted.push(self.resident.remove(pos).0);
        }
        self.resident.push((name.to_string(), bytes));
        Load::Loaded { evicted }
    }

    /// Checks that `bytes` of activations fit next to the resident models, evicting unpinned ones.
    pub fn reserve_activations(&mut self, bytes: u64, pinned: &[String]) -> Result<(), (u64, u64)> {
        while self.free() < bytes {
            let Some(pos) = self.resident.iter().position(|(n, _)| !pinned.contains(n)) else {
                return Err((bytes, self.free()));
            };
            self.resident.remove(pos);
        }
        Ok(())
    }

    /// Unloads every model (`/free`).
    pub fn unload_all(&mut self) {
        self.resident.clear();
    }
}

/// A PyTorch-style out-of-memory message (with ComfyUI's hint appended).
pub fn oom_message(requested: u64, free: u64, total: u64, in_use: u64) -> String {
    let gib = |b: u64| b as f64 / 1_073_741_824.0;
    format!(
        "Allocation on device 0 would exceed allowed memory. (out of memory)\nCurrently allocated     : {:.2} GiB\nRequested               : {:.2} GiB\nDevice limit            : {:.2} GiB\nFree (according to CUDA): {:.2} GiB\nPyTorch limit (set by user-supplied memory fraction)\n                        : {:.2} GiB\nThis error means you ran out of memory on your GPU.\n\nTIPS: If the workflow worked before you might have accidentally set the batch_size to a large number.\n",
        gib(in_use),
        gib(requested),
        gib(total),
        gib(free),
        17179869184.0_f64
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(total: u64) -> GpuState {
        GpuState::new(&GpuConfig {
            vram_total: total,
            vram_baseline: 0,
            ..GpuConfig::default()
        })
    }

    #[test]
    fn loading_evicts_least_recently_used() {
        let mut g = gpu(10);
        assert_eq!(g.ensure("a", 4, &[]), Load::Loaded { evicted: vec![] });
        assert_eq!(g.ensure("b", 4, &[]), Load::Loaded { evicted: vec![] });
        assert_eq!(g.ensure("a", 4, &[]), Load::Resident);
        assert_eq!(
            g.ensure("c", 4, &[]),
            Load::Loaded {
                evicted: vec!["b".into()]
            }
        );
        assert_eq!(g.resident(), vec!["a".to_string(), "c".to_string()]);
        assert_eq!(g.free(), 2);
    }

    #[test]
    fn pinned_models_cause_oom() {
        let mut g = gpu(10);
        g.ensure("a", 8, &[]);
        assert!(matches!(
            g.ensure("b", 4, &["a".into()]),
            Load::OutOfMemory { .. }
        ));
        g.unload_all();
        assert_eq!(g.free(), 10);
    }
}
