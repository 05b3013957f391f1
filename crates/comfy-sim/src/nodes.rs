//! What each node class does to the data flowing through a simulated prompt.
//!
//! Nothing is computed for real: values carry only what a scheduler or client can observe
//! (image and latent sizes, colours, integers, which model files a branch needs). Each class
//! maps to a `Plan` (outputs, files to save, model loads, steps and time), with a generic rule
//! for the hundreds of classes not listed: IMAGE and LATENT outputs follow the first image or
//! latent input. A few real run-time failures are reproduced, like ImageBlur's reflect-pad error.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::catalogue;
use crate::config::NodeConfig;
use crate::pyconv::as_num;

/// A simulated value on a node output.
#[derive(Debug, Clone, PartialEq)]
pub enum Out {
    /// An image batch.
    Image {
        /// Width in pixels.
        w: u32,
        /// Height in pixels.
        h: u32,
        /// Batch size.
        b: u32,
        /// 0xRRGGBB colour used for the files.
        color: u32,
    },
    /// A latent batch (sizes in pixel space).
    Latent {
        /// Width in pixels.
        w: u32,
        /// Height in pixels.
        h: u32,
        /// Batch size (times the frames of a video).
        b: u32,
        /// Whether the frames are a video's, sampled by a video model that compresses time
        /// and needs far less memory per pixel-frame than an image model per image pixel.
        video: bool,
    },
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Text(String),
    /// Model-like object: the model files it needs resident.
    Model(Vec<String>),
    /// Anything else.
    Other,
}

/// Files an output node writes.
#[derive(Debug, Clone)]
pub enum Save {
    /// PNG images into output (`temp == false`) or temp.
    Images {
        /// Filename prefix (may contain a subfolder).
        prefix: String,
        /// PreviewImage-style temp output.
        temp: bool,
        /// Images (w, h, colour).
        images: Vec<(u32, u32, u32)>,
    },
    /// A `.latent` file.
    Latent {
        /// Filename prefix.
        prefix: String,
        /// Latent size (pixel space) and batch.
        w: u32,
        /// Height.
        h: u32,
        /// Batch.
        b: u32,
    },
    /// One animated file (webp) from all frames.
    Animated {
        /// Filename prefix.
        prefix: String,
        /// First frame size and colour.
        frame: (u32, u32, u32),
    },
}

/// What running one node involves.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Values on the outputs.
    pub outputs: Vec<Out>,
    /// Model files (folder, name) this node loads.
    pub loads: Vec<(String, String)>,
    /// Model files that must be resident while it runs (samplers).
    pub needs: Vec<String>,
    /// Sampler steps (0 = no progress events).
    pub steps: u32,
    /// Seconds per step (unscaled).
    pub step_seconds: f64,
    /// Seconds of work without progress (unscaled).
    pub work_seconds: f64,
    /// Activation bytes while running.
    pub activation_bytes: u64,
    /// Progress text (binary event 3).
    pub text: Option<String>,
    /// Images sent over the socket (SaveImageWebsocket): (w, h, colour).
    pub ws_images: Vec<(u32, u32, u32)>,
    /// Files to write.
    pub save: Option<Save>,
    /// A run-time failure: (exception type, message).
    pub fail: Option<(String, String)>,
    /// A UI dict without files (`PreviewAny`'s text), reported like a save's.
    pub ui: Option<Value>,
}

/// What ComfyUI's `PreviewAny` shows for its input: a string as it is, a number or flag as
/// Python's `str()` writes it, anything else as `json.dumps` does.
///
/// NOTE: a tensor or model on the real node is shown by `str()` of the object (its values);
/// the emulator has no values, so it names the kind and shape instead.
fn preview_text(inputs: &Inputs<'_>, name: &str) -> String {
    match inputs.links.get(name) {
        Some(Out::Text(text)) => text.clone(),
        Some(Out::Int(value)) => value.to_string(),
        Some(Out::Float(value)) => crate::pyjson::float_repr(*value),
        Some(Out::Image { w, h, b, .. }) => format!("tensor of shape [{b}, {h}, {w}, 3]"),
        Some(Out::Latent { w, h, b, .. }) => {
            format!(
                "{{'samples': tensor of shape [{b}, 4, {}, {}]}}",
                h / 8,
                w / 8
            )
        }
        Some(_) => "source exists, but could not be serialized.".to_owned(),
        None => match inputs.constants.get(name) {
            None | Some(Value::Null) => "None".to_owned(),
            Some(value @ (Value::String(_) | Value::Number(_) | Value::Bool(_))) => {
                crate::pyjson::py_str(value)
            }
            Some(value) => crate::pyjson::to_string(value),
        },
    }
}

fn int_of(v: Option<&Value>, default: i64) -> i64 {
    v.and_then(as_num).map(|f| f as i64).unwrap_or(default)
}

fn float_of(v: Option<&Value>, default: f64) -> f64 {
    v.and_then(as_num).unwrap_or(default)
}

fn dim(v: i64) -> u32 {
    v.clamp(1, 1 << 20) as u32
}

/// Inputs of a node: constants and resolved links.
pub struct Inputs<'a> {
    /// Constant inputs.
    pub constants: &'a Map<String, Value>,
    /// Values of linked inputs.
    pub links: HashMap<String, Out>,
}

impl Inputs<'_> {
    fn get_int(&self, name: &str, default: i64) -> i64 {
        match self.links.get(name) {
            Some(Out::Int(i)) => *i,
            Some(Out::Float(f)) => *f as i64,
            _ => int_of(self.constants.get(name), default),
        }
    }

    fn get_float(&self, name: &str, default: f64) -> f64 {
        match self.links.get(name) {
            Some(Out::Float(f)) => *f,
            Some(Out::Int(i)) => *i as f64,
            _ => float_of(self.constants.get(name), default),
        }
    }

    fn get_str(&self, name: &str, default: &str) -> String {
        match self.links.get(name) {
            Some(Out::Text(s)) => s.clone(),
            _ => self
                .constants
                .get(name)
                .map(crate::pyjson::py_str)
                .unwrap_or_else(|| default.to_string()),
        }
    }

    fn first_image(&self) -> Option<(u32, u32, u32, u32)> {
        self.links.values().find_map(|v| match v {
            Out::Image { w, h, b, color } => Some((*w, *h, *b, *color)),
            _ => None,
        })
    }

    fn first_latent(&self) -> Option<(u32, u32, u32, bool)> {
        self.links.values().find_map(|v| match v {
            Out::Latent { w, h, b, video } => Some((*w, *h, *b, *video)),
            _ => None,
        })
    }

    fn models(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for v in self.links.values() {
            if let Out::Model(m) = v {
                for name in m {
                    if !out.contains(name) {
                        out.push(name.clone());
                    }
                }
            }
        }
        out
    }
}

fn image_or_latent_size(inputs: &Inputs<'_>) -> (u32, u32, u32, u32) {
    inputs
        .first_image()
        .or_else(|| {
            inputs
                .first_latent()
                .map(|(w, h, b, _)| (w, h, b, 0x808080))
        })
        .unwrap_or((512, 512, 1, 0x808080))
}

/// Plans one node. `image_size` gives the size of an input file for loaders.
pub fn plan(
    class: &str,
    info: &Map<String, Value>,
    inputs: &Inputs<'_>,
    cfg: &NodeConfig,
    image_size: &dyn Fn(&str) -> Option<(u32, u32)>,
) -> Plan {
    let mut p = Plan::default();
    let (w, h, b, color) = image_or_latent_size(inputs);
    let mp = |w: u32, h: u32, b: u32| (w as f64 * h as f64 * b as f64) / 1_000_000.0;
    p.work_seconds = cfg.seconds_per_megapixel * mp(w, h, b);

    // Model files named by combos are loaded by this node.
    for (name, _) in catalogue::input_specs(info) {
        if let Some(folder) = catalogue::model_folder_for(class, &name)
            && let Some(Value::String(file)) = inputs.constants.get(&name)
        {
            p.loads.push((folder.to_string(), file.clone()));
        }
    }
    let mut models = inputs.models();
    models.extend(p.loads.iter().map(|(_, n)| n.clone()));

    let return_types = catalogue::return_types(info);
    let video = inputs.first_latent().is_some_and(|(.., video)| video);
    let generic = |t: &Value| match t.as_str() {
        Some("IMAGE") | Some("MASK") => Out::Image { w, h, b, color },
        Some("LATENT") => Out::Latent { w, h, b, video },
        Some("INT") => Out::Int(0),
        Some("FLOAT") => Out::Float(0.0),
        Some("STRING") => Out::Text(String::new()),
        Some("MODEL")
        | Some("CLIP")
        | Some("VAE")
        | Some("CONTROL_NET")
        | Some("UPSCALE_MODEL")
        | Some("CLIP_VISION")
        | Some("STYLE_MODEL")
        | Some("CONDITIONING") => Out::Model(models.clone()),
        _ => Out::Other,
    };
    p.outputs = return_types.iter().map(generic).collect();

    match class {
        "EmptyImage" => {
            let (w, h, b) = (
                dim(inputs.get_int("width", 512)),
                dim(inputs.get_int("height", 512)),
                dim(inputs.get_int("batch_size", 1)),
            );
            let color = inputs.get_int("color", 0) as u32 & 0xffffff;
            p.outputs = vec![Out::Image { w, h, b, color }];
            p.work_seconds = cfg.seconds_per_megapixel * mp(w, h, b);
        }
        c if c.starts_with("Empty") && c.contains("Latent") => {
            let frames = dim(inputs.get_int("length", 1));
            let (w, h) = (
                dim(inputs.get_int("width", 512)),
                dim(inputs.get_int("height", 512)),
            );
            let b = dim(inputs.get_int("batch_size", 1)) * frames;
            let video = c.contains("Video");
            p.outputs = return_types
                .iter()
                .map(|_| Out::Latent { w, h, b, video })
                .collect();
        }
        "LoadImage" | "LoadImageMask" | "LoadImageOutput" => {
            let file = inputs.get_str("image", "");
            let (iw, ih) = image_size(&file).unwrap_or((512, 512));
            p.outputs = vec![
                Out::Image {
                    w: iw,
                    h: ih,
                    b: 1,
                    color: 0x808080,
                },
                Out::Image {
                    w: iw,
                    h: ih,
                    b: 1,
                    color: 0,
                },
            ];
        }
        "ImageInvert" => {
            p.outputs = vec![Out::Image {
                w,
                h,
                b,
                color: !color & 0xffffff,
            }];
        }
        "ImageBlur" | "ImageSharpen" => {
            let radius = inputs.get_int(
                if class == "ImageBlur" {
                    "blur_radius"
                } else {
                    "sharpen_radius"
                },
                1,
            );
            p.work_seconds = cfg.seconds_per_megapixel * 50.0 * mp(w, h, b);
            if class == "ImageBlur" && (radius >= w as i64 || radius >= h as i64) {
                // torch's reflect padding needs the pad to be smaller than the image.
                p.fail = Some((
                    "RuntimeError".into(),
                    format!(
                        "Argument #4: Padding size should be less than the corresponding input dimension, but got: padding ({radius}, {radius}) at dimension 3 of input [{b}, 3, {h}, {w}]\n"
                    ),
                ));
            }
        }
        "ImageScale" | "LatentUpscale" => {
            let (mut nw, mut nh) = (
                inputs.get_int("width", w as i64),
                inputs.get_int("height", h as i64),
            );
            if nw == 0 {
                nw = (w as i64 * nh).checked_div(h as i64).unwrap_or(1);
            }
            if nh == 0 {
                nh = (h as i64 * nw).checked_div(w as i64).unwrap_or(1);
            }
            p.outputs = vec![resized(class, dim(nw), dim(nh), b, color)];
        }
        "ImageScaleBy" | "LatentUpscaleBy" => {
            let s = inputs.get_float("scale_by", 1.0);
            let (nw, nh) = (
                dim((w as f64 * s).round() as i64),
                dim((h as f64 * s).round() as i64),
            );
            p.outputs = vec![resized(class, nw, nh, b, color)];
        }
        "VAEDecode" | "VAEDecodeTiled" => {
            let (lw, lh, lb, _) = inputs.first_latent().unwrap_or((w, h, b, false));
            p.outputs = vec![Out::Image {
                w: lw,
                h: lh,
                b: lb,
                color: 0x6a8caf,
            }];
            p.work_seconds = cfg.seconds_per_step * 4.0 * mp(lw, lh, lb) / 0.262144;
        }
        "VAEEncode" => {
            p.outputs = vec![Out::Latent {
                w,
                h,
                b,
                video: false,
            }];
        }
        "PreviewAny" => {
            p.ui = Some(serde_json::json!({"text": [preview_text(inputs, "source")]}));
        }
        "GetImageSize" => {
            p.outputs = vec![Out::Int(w as i64), Out::Int(h as i64), Out::Int(b as i64)];
            p.text = Some(format!("width: {w}, height: {h}\n batch size: {b}"));
        }
        "SaveImage" | "PreviewImage" => {
            let temp = class == "PreviewImage";
            let prefix = if temp {
                String::new()
            } else {
                inputs.get_str("filename_prefix", "ComfyUI")
            };
            p.save = Some(Save::Images {
                prefix,
                temp,
                images: (0..b).map(|_| (w, h, color)).collect(),
            });
            p.work_seconds = cfg.seconds_per_megapixel * 5.0 * mp(w, h, b);
        }
        "SaveLatent" => {
            let (lw, lh, lb, _) = inputs.first_latent().unwrap_or((w, h, b, false));
            p.save = Some(Save::Latent {
                prefix: inputs.get_str("filename_prefix", "latents/ComfyUI"),
                w: lw,
                h: lh,
                b: lb,
            });
        }
        "SaveAnimatedWEBP" | "SaveAnimatedPNG" => {
            p.save = Some(Save::Animated {
                prefix: inputs.get_str("filename_prefix", "ComfyUI"),
                frame: (w, h, color),
            });
        }
        "SaveImageWebsocket" => {
            p.ws_images = (0..b).map(|_| (w, h, color)).collect();
        }
        _ => {}
    }

    // Anything with a `steps` input samples: per-step progress, needs its models resident.
    if catalogue::input_specs(info)
        .iter()
        .any(|(n, _)| n == "steps")
    {
        let (lw, lh, lb, video) = inputs.first_latent().unwrap_or((w, h, b, false));
        p.steps = inputs.get_int("steps", 20).clamp(1, 10_000) as u32;
        p.step_seconds = cfg.seconds_per_step * (lw as f64 * lh as f64 * lb as f64) / 262_144.0;
        p.needs = models;
        p.activation_bytes = (lw as u64 * lh as u64 * lb as u64).saturating_mul(if video {
            crate::gpu::VIDEO_ACTIVATION_BYTES_PER_PIXEL
        } else {
            crate::gpu::ACTIVATION_BYTES_PER_PIXEL
        });
        p.work_seconds = 0.0;
    }
    p
}

fn resized(class: &str, w: u32, h: u32, b: u32, color: u32) -> Out {
    if class.starts_with("Latent") {
        Out::Latent {
            w,
            h,
            b,
            video: false,
        }
    } else {
        Out::Image { w, h, b, color }
    }
}
