//! The node-class catalogue (`/object_info`) and how a node's own files appear in it.
//!
//! The default catalogue is the real 0.3.64 `/object_info` (496 classes), embedded gzipped and
//! decoded once per process; every simulated node shares it through an `Arc` and keeps only its
//! differences (a class subset, custom classes, its model and input files). Model-file combos are
//! recognised by an empty option list in the recorded catalogue (the capture server had no model
//! files) and filled from this node's folders, so `/object_info` and validation agree.

use std::collections::{BTreeSet, HashSet};
use std::io::Read;
use std::sync::{Arc, OnceLock};

use serde_json::{Map, Value};

use crate::error::SimError;

static EMBEDDED: &[u8] = include_bytes!("../data/object_info_full.json.gz");
static BASE: OnceLock<Result<Arc<Map<String, Value>>, String>> = OnceLock::new();

/// The decoded embedded catalogue, shared by every node of the process.
pub fn base_catalogue() -> Result<Arc<Map<String, Value>>, SimError> {
    BASE.get_or_init(|| {
        let mut text = String::new();
        flate2::read::GzDecoder::new(EMBEDDED)
            .read_to_string(&mut text)
            .map_err(|e| format!("cannot gunzip embedded object_info: {e}"))?;
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| format!("cannot parse embedded object_info: {e}"))?;
        match value {
            Value::Object(map) => Ok(Arc::new(map)),
            _ => Err("embedded object_info is not an object".to_string()),
        }
    })
    .clone()
    .map_err(SimError::Catalogue)
}

/// Which model folder feeds a combo input, by class and input name.
pub fn model_folder_for(class: &str, input: &str) -> Option<&'static str> {
    Some(match input {
        "ckpt_name" => "checkpoints",
        "lora_name" => "loras",
        "vae_name" => "vae",
        "unet_name" => "diffusion_models",
        "clip_name" if class.starts_with("CLIPVision") => "clip_vision",
        "clip_name" | "clip_name1" | "clip_name2" | "clip_name3" | "clip_name4" => "text_encoders",
        "control_net_name" => "controlnet",
        "model_name" if class.contains("Upscale") => "upscale_models",
        "style_model_name" => "style_models",
        "gligen_name" => "gligen",
        "hypernetwork_name" => "hypernetworks",
        "config_name" => "configs",
        "audio_encoder_name" => "audio_encoders",
        "photomaker_model_name" => "photomaker",
        "name" if class.contains("ModelPatch") => "model_patches",
        _ => return None,
    })
}

/// Fills a model-file combo with this node's files, in place. Three shapes exist in the
/// recorded catalogue (the capture server had no model files): a V1 combo `[[], {...}]`, a V3
/// `["COMBO", {"options": []}]`, and VAELoader's list, which ComfyUI always ends with
/// `pixel_space`. Returns false when the input is not a model-file combo.
pub fn fill_model_combo(
    class: &str,
    name: &str,
    kind: &mut Value,
    extra: &mut Map<String, Value>,
    files_for: &dyn Fn(&str) -> Vec<String>,
) -> bool {
    let Some(folder) = model_folder_for(class, name) else {
        return false;
    };
    let files = || files_for(folder).into_iter().map(Value::String);
    match kind {
        Value::Array(options) if options.is_empty() => {
            options.extend(files());
            true
        }
        Value::Array(options)
            if class == "VAELoader" && options.len() == 1 && options[0] == "pixel_space" =>
        {
            let mut filled: Vec<Value> = files().collect();
            filled.push(Value::String("pixel_space".into()));
            *options = filled;
            true
        }
        Value::String(s) if s == "COMBO" => match extra.get_mut("options") {
            Some(Value::Array(options)) if options.is_empty() => {
                options.extend(files());
                true
            }
            _ => false,
        },
        _ => false,
    }
}

/// Input classes whose `image` input is checked against uploaded files (LoadImage-like).
pub fn is_image_loader(class: &str) -> bool {
    matches!(class, "LoadImage" | "LoadImageMask" | "LoadImageOutput")
}

/// One input's declaration: category, type (a string or a combo list) and options.
#[derive(Debug, Clone)]
pub struct InputSpec {
    /// `required` or `optional`.
    pub category: &'static str,
    /// The type: `"INT"`, `"IMAGE"`, `"COMBO"` or a list of allowed values.
    pub kind: Value,
    /// The options object (`{}` when the declaration has none).
    pub extra: Map<String, Value>,
}

impl InputSpec {
    /// `[type, options]` as ComfyUI echoes it in `input_config`.
    pub fn input_config(&self) -> Value {
        Value::Array(vec![self.kind.clone(), Value::Object(self.extra.clone())])
    }
}

/// A node's view of the catalogue.
#[derive(Debug, Clone)]
pub struct Catalogue {
    base: Arc<Map<String, Value>>,
    allowed: Option<HashSet<String>>,
    custom: Map<String, Value>,
}

impl Catalogue {
    /// Builds a node's catalogue from the shared base, a class subset and custom classes.
    pub fn new(classes: &[String], custom_json: Option<&str>) -> Result<Self, SimError> {
        let base = base_catalogue()?;
        let allowed = if classes.is_empty() {
            None
        } else {
            Some(classes.iter().cloned().collect())
        };
        let custom = match custom_json {
            None => Map::new(),
            Some(text) => match serde_json::from_str::<Value>(text) {
                Ok(Value::Object(map)) => map,
                Ok(_) => {
                    return Err(SimError::Catalogue(
                        "custom classes must be a JSON object".into(),
                    ));
                }
                Err(e) => return Err(SimError::Catalogue(format!("custom classes: {e}"))),
            },
        };
        Ok(Catalogue {
            base,
            allowed,
            custom,
        })
    }

    /// The class declaration, if this node has the class.
    pub fn get(&self, class: &str) -> Option<&Map<String, Value>> {
        if let Some(Value::Object(info)) = self.custom.get(class) {
            return Some(info);
        }
        if let Some(allowed) = &self.allowed
            && !allowed.contains(class)
        {
            return None;
        }
        match self.base.get(class) {
            Some(Value::Object(info)) => Some(info),
            _ => None,
        }
    }

    /// Class names in catalogue order.
    pub fn class_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .base
            .keys()
            .filter(|k| {
                self.allowed.as_ref().is_none_or(|a| a.contains(*k))
                    && !self.custom.contains_key(*k)
            })
            .cloned()
            .collect();
        names.extend(self.custom.keys().cloned());
        names
    }

    /// Number of classes.
    pub fn len(&self) -> usize {
        self.class_names().len()
    }

    /// Whether the catalogue is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether the class is an output node.
pub fn is_output(info: &Map<String, Value>) -> bool {
    info.get("output_node")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// The class's return types.
pub fn return_types(info: &Map<String, Value>) -> Vec<Value> {
    info.get("output")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// Declared inputs in `required` then `optional` order.
pub fn input_specs(info: &Map<String, Value>) -> Vec<(String, InputSpec)> {
    let mut out = Vec::new();
    for category in ["required", "optional"] {
        let Some(Value::Object(section)) = info.get("input").and_then(|i| i.get(category)) else {
            continue;
        };
        let order: Vec<String> = info
            .get("input_order")
            .and_then(|o| o.get(category))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_else(|| section.keys().cloned().collect());
        for name in order {
            let Some(decl) = section.get(&name) else {
                continue;
            };
            let (kind, extra) = match decl {
                Value::Array(parts) => (
                    parts.first().cloned().unwrap_or(Value::Null),
                    parts
                        .get(1)
                        .and_then(Value::as_object)
                        .cloned()
                        .unwrap_or_default(),
                ),
                other => (other.clone(), Map::new()),
            };
            out.push((
                name,
                InputSpec {
                    category: if category == "required" {
                        "required"
                    } else {
                        "optional"
                    },
                    kind,
                    extra,
                },
            ));
        }
    }
    out
}

/// Renders one class for `/object_info`, with model-file and input-file combos filled in.
pub fn render_class(
    class: &str,
    info: &Map<String, Value>,
    files_for: &dyn Fn(&str) -> Vec<String>,
    input_files: &BTreeSet<String>,
) -> Value {
    let mut info = info.clone();
    if let Some(Value::Object(input)) = info.get_mut("input") {
        for category in ["required", "optional"] {
            let Some(Value::Object(section)) = input.get_mut(category) else {
                continue;
            };
            for (name, decl) in section.iter_mut() {
                let Value::Array(parts) = decl else { continue };
                if is_image_loader(class) && name == "image" {
                    if let Some(Value::Array(options)) = parts.first_mut() {
                        *options = input_files.iter().cloned().map(Value::String).collect();
                    }
                    continue;
                }
                let mut kind = parts.first().cloned().unwrap_or(Value::Null);
                let mut extra = parts
                    .get(1)
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                if fill_model_combo(class, name, &mut kind, &mut extra, files_for) {
                    parts[0] = kind;
                    if parts.len() > 1 {
                        parts[1] = Value::Object(extra);
                    }
                }
            }
        }
    }
    Value::Object(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_catalogue_has_all_captured_classes() {
        let cat = Catalogue::new(&[], None).expect("catalogue decodes");
        assert_eq!(cat.len(), 496, "the capture server listed 496 classes");
        assert!(is_output(cat.get("SaveImage").expect("SaveImage present")));
        assert!(!is_output(
            cat.get("EmptyImage").expect("EmptyImage present")
        ));
    }

    #[test]
    fn model_combos_of_every_recorded_shape_list_the_node_files() {
        let cat = Catalogue::new(&[], None).expect("catalogue");
        let files = |folder: &str| vec![format!("{folder}-a.safetensors")];
        let render = |class: &str| {
            render_class(
                class,
                cat.get(class).expect(class),
                &files,
                &BTreeSet::new(),
            )
        };
        let ckpt = render("CheckpointLoaderSimple");
        assert_eq!(
            ckpt["input"]["required"]["ckpt_name"][0],
            serde_json::json!(["checkpoints-a.safetensors"])
        );
        let vae = render("VAELoader");
        assert_eq!(
            vae["input"]["required"]["vae_name"][0],
            serde_json::json!(["vae-a.safetensors", "pixel_space"])
        );
        let triple = render("TripleCLIPLoader");
        assert_eq!(
            triple["input"]["required"]["clip_name3"][1]["options"],
            serde_json::json!(["text_encoders-a.safetensors"])
        );
    }

    #[test]
    fn subset_and_custom_classes_shape_the_catalogue() {
        let custom =
            r#"{"MyNode": {"input": {"required": {}}, "output": [], "output_node": true}}"#;
        let cat = Catalogue::new(&["SaveImage".into()], Some(custom)).expect("catalogue");
        assert!(cat.get("EmptyImage").is_none());
        assert!(cat.get("MyNode").is_some());
        assert_eq!(
            cat.class_names(),
            vec!["SaveImage".to_string(), "MyNode".to_string()]
        );
    }
}
