//! What a workflow needs from a node: classes, model files, input files, and a rough cost.
//!
//! Without the node's `/object_info`, inputs are recognised by the well-known names core
//! loaders use (`ckpt_name`, `lora_name`, ...); only literal string values count (a linked
//! value is unknowable before execution). The cost is a placement heuristic, not a prediction:
//! for each sampler, steps × latent pixels (× frames for video latents).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::{Workflow, WorkflowNode};

/// Steps assumed when a sampler's `steps` is linked or missing.
const DEFAULT_STEPS: u64 = 20;
/// Latent size assumed when it cannot be read from the graph.
const DEFAULT_SIDE: u64 = 512;

/// Classes that sample without naming it in an input called `steps` + `latent_image`.
const SAMPLER_CLASSES: [&str; 4] = [
    "KSampler",
    "KSamplerAdvanced",
    "SamplerCustom",
    "SamplerCustomAdvanced",
];

/// A model file a workflow loads.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ModelRef {
    /// Model folder as `/models` names it (`checkpoints`, `loras`, `diffusion_models`, ...).
    pub folder: &'static str,
    /// File name as written (may include subdirectories).
    pub name: String,
    /// The loading node.
    pub node_id: String,
}

/// A file a workflow reads from the node's input (or output/temp) directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputFile {
    /// The loading node.
    pub node_id: String,
    /// File name relative to the directory (annotation removed).
    pub name: String,
    /// `input`, `output` or `temp` (from a ` [output]`-style annotation; default `input`).
    pub directory: &'static str,
}

/// Estimated cost of one sampler node.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerCost {
    /// The sampler node.
    pub node_id: String,
    /// Steps used (the default when unknown).
    pub steps: u64,
    /// Whether `steps` was read from the graph.
    pub steps_known: bool,
    /// Latent width × height × batch × frames in pixels (the default 512×512×1 when unknown).
    pub latent_pixels: u64,
    /// Whether the latent size was read from the graph.
    pub latent_known: bool,
}

/// Estimated cost of a workflow.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Cost {
    /// Per sampler.
    pub samplers: Vec<SamplerCost>,
}

impl Cost {
    /// Sum of steps × latent pixels over all samplers (0 for a workflow without sampler).
    pub fn pixel_steps(&self) -> u128 {
        self.samplers
            .iter()
            .map(|s| u128::from(s.steps) * u128::from(s.latent_pixels))
            .sum()
    }
}

/// Maps a loader input to its model folder.
fn model_folder(class: &str, input: &str) -> Option<&'static str> {
    Some(match input {
        "ckpt_name" => "checkpoints",
        "lora_name" => "loras",
        "vae_name" => "vae",
        "unet_name" => "diffusion_models",
        "clip_name" if class.contains("CLIPVision") => "clip_vision",
        "clip_name" | "clip_name1" | "clip_name2" | "clip_name3" | "clip_name4" => "text_encoders",
        "control_net_name" => "controlnet",
        "style_model_name" => "style_models",
        "gligen_name" => "gligen",
        "hypernetwork_name" => "hypernetworks",
        "photomaker_model_name" => "photomaker",
        "ipadapter_file" => "ipadapter",
        "model_name" if class == "UpscaleModelLoader" => "upscale_models",
        "model_name" if class.starts_with("IPAdapterModelLoader") => "ipadapter",
        _ => return None,
    })
}

impl Workflow {
    /// The distinct node classes used.
    pub fn class_types(&self) -> BTreeSet<&str> {
        self.nodes().map(|(_, n)| n.class_type.as_str()).collect()
    }

    /// Model files named by literal loader inputs, in node order.
    pub fn models(&self) -> Vec<ModelRef> {
        let mut out = Vec::new();
        for (id, node) in self.nodes() {
            for (input, value) in &node.inputs {
                if let (Some(folder), Some(name)) =
                    (model_folder(&node.class_type, input), value.as_str())
                    && !name.is_empty()
                {
                    out.push(ModelRef {
                        folder,
                        name: name.to_owned(),
                        node_id: id.to_owned(),
                    });
                }
            }
        }
        out
    }

    /// Model files grouped by folder.
    pub fn models_by_folder(&self) -> BTreeMap<&'static str, BTreeSet<String>> {
        let mut out: BTreeMap<&'static str, BTreeSet<String>> = BTreeMap::new();
        for m in self.models() {
            out.entry(m.folder).or_default().insert(m.name);
        }
        out
    }

    /// Files that `LoadImage` / `LoadImageMask` read: what must be uploaded (directory
    /// `input`) before the prompt can run. URLs (a convention of some hosted services, not
    /// valid on stock ComfyUI) are skipped.
    pub fn input_files(&self) -> Vec<InputFile> {
        let mut out = Vec::new();
        for (id, node) in self.nodes() {
            if !matches!(node.class_type.as_str(), "LoadImage" | "LoadImageMask") {
                continue;
            }
            let Some(value) = node.inputs.get("image").and_then(Value::as_str) else {
                continue;
            };
            let lower = value.to_ascii_lowercase();
            if lower.starts_with("http://") || lower.starts_with("https://") || value.is_empty() {
                continue;
            }
            let (name, directory) = split_annotation(value);
            out.push(InputFile {
                node_id: id.to_owned(),
                name: name.to_owned(),
                directory,
            });
        }
        out
    }

    /// Ids of the nodes whose class satisfies `is_output_class` (e.g. from `/object_info`'s
    /// `output_node`); which classes are outputs cannot be known from the workflow alone.
    pub fn output_nodes(&self, is_output_class: impl Fn(&str) -> bool) -> Vec<&str> {
        self.nodes()
            .filter(|(_, n)| is_output_class(&n.class_type))
            .map(|(id, _)| id)
            .collect()
    }

    /// Rough cost for placement: per sampler-like node, steps × latent pixels.
    ///
    /// Sampler-like: the core sampler classes, and any class with both `steps` and
    /// `latent_image` inputs (schedulers have `steps` but no latent, and are counted through
    /// the sampler that uses their `sigmas`).
    pub fn cost(&self) -> Cost {
        let mut cost = Cost::default();
        for (id, node) in self.nodes() {
            let sampler_like = SAMPLER_CLASSES.contains(&node.class_type.as_str())
                || (node.inputs.contains_key("steps") && node.inputs.contains_key("latent_image"));
            if !sampler_like {
                continue;
            }
            let steps = literal_u64(node, "steps").or_else(|| {
                // SamplerCustom*: steps live on the scheduler feeding `sigmas`.
                let (src, _) = node.link("sigmas")?;
                literal_u64(self.node(src)?, "steps")
            });
            let latent = node
                .link("latent_image")
                .and_then(|(src, _)| self.node(src))
                .and_then(latent_pixels);
            cost.samplers.push(SamplerCost {
                node_id: id.to_owned(),
                steps: steps.unwrap_or(DEFAULT_STEPS),
                steps_known: steps.is_some(),
                latent_pixels: latent.unwrap_or(DEFAULT_SIDE * DEFAULT_SIDE),
                latent_known: latent.is_some(),
            });
        }
        cost
    }
}

/// Splits ComfyUI's ` [input]` / ` [output]` / ` [temp]` annotation off a file name, the way
/// its `get_annotated_filepath` does (the suffix plus the one character before it).
fn split_annotation(value: &str) -> (&str, &'static str) {
    for (suffix, dir) in [
        ("[output]", "output"),
        ("[input]", "input"),
        ("[temp]", "temp"),
    ] {
        if let Some(rest) = value.strip_suffix(suffix) {
            let mut chars = rest.chars();
            chars.next_back();
            return (chars.as_str(), dir);
        }
    }
    (value, "input")
}

fn literal_u64(node: &WorkflowNode, input: &str) -> Option<u64> {
    let n = node.inputs.get(input)?;
    n.as_u64().or_else(|| {
        n.as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f as u64)
    })
}

/// Pixels of an empty-latent node: width × height × batch × frames, when all present ones
/// are literal (width and height are required).
fn latent_pixels(node: &WorkflowNode) -> Option<u64> {
    let width = literal_u64(node, "width")?;
    let height = literal_u64(node, "height")?;
    let factor = |name: &str| match node.inputs.get(name) {
        None => Some(1),
        Some(_) => literal_u64(node, name).map(|v| v.max(1)),
    };
    let batch = factor("batch_size")?;
    let frames = factor("length")?;
    width
        .checked_mul(height)?
        .checked_mul(batch)?
        .checked_mul(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotation_is_split_like_comfyui() {
        assert_eq!(split_annotation("a/b.png [input]"), ("a/b.png", "input"));
        assert_eq!(split_annotation("x.png [output]"), ("x.png", "output"));
        assert_eq!(split_annotation("x.png"), ("x.png", "input"));
        // Multibyte character before the suffix must not split a code point.
        assert_eq!(split_annotation("图[temp]"), ("", "temp"));
    }
}
