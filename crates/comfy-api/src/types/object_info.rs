//! `GET /object_info[/{class}]`: the node classes a ComfyUI node has installed.
//!
//! Two schema generations coexist: legacy ("V1") nodes describe a combo input as
//! `[[opt, ...], {options}]`, newer ("V3") nodes as `["COMBO", {"options": [...]}]`, and V3
//! nodes always carry `output_tooltips`, `deprecated`, `experimental`, `api_node` (with a
//! possibly null `display_name`). Input specs are decoded by hand so that any odd shape from a
//! custom node becomes [`InputKind::Other`] instead of an error, and one undecodable class never
//! hides the other few hundred (it lands in [`ObjectInfo::undecodable`]).

use std::collections::BTreeMap;

use serde::de::Deserializer;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::lenient;

/// Answer of `GET /object_info` (every class) or `/object_info/{class}` (one, or none).
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ObjectInfo {
    /// Decoded classes by class name.
    pub nodes: BTreeMap<String, NodeInfo>,
    /// Classes whose description could not be decoded, with the reason.
    pub undecodable: BTreeMap<String, String>,
}

impl<'de> Deserialize<'de> for ObjectInfo {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw: Map<String, Value> = Deserialize::deserialize(d)?;
        let mut info = ObjectInfo::default();
        for (class, value) in raw {
            match serde_json::from_value::<NodeInfo>(value) {
                Ok(node) => {
                    info.nodes.insert(class, node);
                }
                Err(e) => {
                    info.undecodable.insert(class, e.to_string());
                }
            }
        }
        Ok(info)
    }
}

impl ObjectInfo {
    /// Says whether the node has class `class` installed (even if undecodable).
    pub fn has_class(&self, class: &str) -> bool {
        self.nodes.contains_key(class) || self.undecodable.contains_key(class)
    }

    /// Says whether `class` is an output node (only output nodes, and what they depend on, run).
    pub fn is_output_node(&self, class: &str) -> bool {
        self.nodes.get(class).is_some_and(|n| n.output_node)
    }
}

/// Description of one node class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Inputs by section.
    #[serde(default)]
    pub input: NodeInputs,
    /// Input names per section in display order.
    #[serde(default)]
    pub input_order: BTreeMap<String, Vec<String>>,
    /// Output types (a string, or a list of options for combo outputs).
    #[serde(default)]
    pub output: Vec<Value>,
    /// Whether each output is a list.
    #[serde(default)]
    pub output_is_list: Vec<Value>,
    /// Output names.
    #[serde(default)]
    pub output_name: Vec<Value>,
    /// Class name.
    #[serde(default)]
    pub name: String,
    /// Display name (null on some V3 nodes).
    #[serde(default)]
    pub display_name: Option<String>,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// Python module that defines it (`nodes`, `comfy_extras.*`, `custom_nodes.*`).
    #[serde(default)]
    pub python_module: Option<String>,
    /// Menu category.
    #[serde(default)]
    pub category: Option<String>,
    /// Whether this class is an output node.
    #[serde(default, deserialize_with = "lenient::bool_any")]
    pub output_node: bool,
    /// `deprecated` flag; always sent by V3 nodes, by V1 nodes only when true.
    #[serde(default, deserialize_with = "lenient::opt_bool_any")]
    pub deprecated: Option<bool>,
    /// `experimental` flag; always sent by V3 nodes, by V1 nodes only when true.
    #[serde(default, deserialize_with = "lenient::opt_bool_any")]
    pub experimental: Option<bool>,
    /// `api_node` flag (the class calls a paid remote API); always sent by V3 nodes.
    #[serde(default, deserialize_with = "lenient::opt_bool_any")]
    pub api_node: Option<bool>,
    /// Present on V3 nodes (and V1 nodes that define tooltips).
    #[serde(default)]
    pub output_tooltips: Option<Vec<Value>>,
    /// Every other key (`is_input_list`, `search_aliases`, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl NodeInfo {
    /// Says whether this description uses the V3 key set (`output_tooltips`, `deprecated`,
    /// `experimental` and `api_node` all present).
    pub fn is_v3_schema(&self) -> bool {
        self.output_tooltips.is_some()
            && self.deprecated.is_some()
            && self.experimental.is_some()
            && self.api_node.is_some()
    }

    /// Says whether the class is deprecated.
    pub fn is_deprecated(&self) -> bool {
        self.deprecated == Some(true)
    }

    /// Finds an input spec by name in the required, then optional, then hidden section.
    pub fn input(&self, name: &str) -> Option<&InputSpec> {
        [
            &self.input.required,
            &self.input.optional,
            &self.input.hidden,
        ]
        .into_iter()
        .flat_map(|s| s.iter())
        .find(|(n, _)| n == name)
        .map(|(_, spec)| spec)
    }
}

/// The `input` object: sections of `name -> spec`, in the node's order.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NodeInputs {
    /// Inputs the node needs.
    #[serde(default, deserialize_with = "specs")]
    pub required: Vec<(String, InputSpec)>,
    /// Optional inputs.
    #[serde(default, deserialize_with = "specs")]
    pub optional: Vec<(String, InputSpec)>,
    /// Inputs the server fills (`PROMPT`, `UNIQUE_ID`, ...); never send these.
    #[serde(default, deserialize_with = "specs")]
    pub hidden: Vec<(String, InputSpec)>,
}

fn specs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, InputSpec)>, D::Error> {
    let raw: Option<Vec<(String, Value)>> = lenient::ordered_map(d).map(Some)?;
    Ok(raw
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, InputSpec::from_value(v)))
        .collect())
}

/// One input description `[type, options?]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InputSpec {
    /// The type.
    pub kind: InputKind,
    /// The options object (`default`, `min`, `max`, `options`, `tooltip`, ...).
    pub options: Map<String, Value>,
}

/// The type part of an [`InputSpec`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum InputKind {
    /// A named type: `INT`, `FLOAT`, `STRING`, `IMAGE`, `MODEL`, `COMBO` (V3), `*`, ...
    Type(String),
    /// A legacy combo: the list of allowed values.
    LegacyCombo(Vec<Value>),
    /// Anything else, kept as sent.
    Other(Value),
}

impl InputSpec {
    /// Decodes a spec from any JSON value, never failing.
    pub fn from_value(v: Value) -> Self {
        let Value::Array(mut parts) = v else {
            return InputSpec {
                kind: InputKind::Other(v),
                options: Map::new(),
            };
        };
        let options = match parts.get(1) {
            Some(Value::Object(m)) => m.clone(),
            _ => Map::new(),
        };
        let kind = match parts.first_mut().map(Value::take) {
            Some(Value::String(s)) => InputKind::Type(s),
            Some(Value::Array(opts)) => InputKind::LegacyCombo(opts),
            Some(other) => InputKind::Other(other),
            None => InputKind::Other(Value::Array(Vec::new())),
        };
        InputSpec { kind, options }
    }

    /// Returns the allowed values of a combo input in either schema generation.
    pub fn combo_options(&self) -> Option<&[Value]> {
        match &self.kind {
            InputKind::LegacyCombo(opts) => Some(opts),
            InputKind::Type(t) if t == "COMBO" => self
                .options
                .get("options")
                .and_then(Value::as_array)
                .map(Vec::as_slice),
            _ => None,
        }
    }

    /// Returns the type name, `COMBO` for a legacy combo.
    pub fn type_name(&self) -> &str {
        match &self.kind {
            InputKind::Type(t) => t,
            InputKind::LegacyCombo(_) => "COMBO",
            InputKind::Other(_) => "",
        }
    }
}

impl<'de> Deserialize<'de> for InputSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(InputSpec::from_value(Value::deserialize(d)?))
    }
}
