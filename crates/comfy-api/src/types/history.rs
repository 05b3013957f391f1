//! `GET /history` and `GET /history/{id}`: finished prompts, their outputs and outcome.
//!
//! Outputs are node-defined UI dicts. Well-known keys holding file references (`images`,
//! `gifs`, `video`, `audio`, `latents`, ...) are decoded into [`FileRef`]s when they have that
//! shape; everything else (and a well-known key with an unexpected shape) is kept raw in
//! [`NodeOutput::other`], so a custom node can never make an entry undecodable. The outcome is
//! derived with the robust rule of the protocol notes (§6.2), which also catches the
//! dependency-cycle quirk where `status_str` says success but an `execution_error` was recorded.

use std::collections::BTreeMap;

use serde::de::Deserializer;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::lenient;
use crate::types::queue::QueueItem;
use crate::ws::{ExecutionError, ExecutionInterrupted};

/// Output keys whose values are lists of file references in core ComfyUI and common packs.
const FILE_KEYS: [&str; 7] = [
    "images", "gifs", "video", "videos", "audio", "latents", "files",
];

/// Answer of `GET /history[?max_items&offset]`: entries in completion order, oldest first.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct History {
    /// `(prompt_id, entry)` pairs in the node's order (completion order).
    pub entries: Vec<(String, HistoryEntry)>,
}

impl<'de> Deserialize<'de> for History {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(History {
            entries: lenient::ordered_map(d)?,
        })
    }
}

impl History {
    /// Returns the entry of `prompt_id`, if present.
    pub fn get(&self, prompt_id: &str) -> Option<&HistoryEntry> {
        self.entries
            .iter()
            .find(|(id, _)| id == prompt_id)
            .map(|(_, e)| e)
    }

    /// Takes the entry of `prompt_id` out of a `/history/{id}` answer (`{}` when unknown).
    pub fn into_entry(self, prompt_id: &str) -> Option<HistoryEntry> {
        self.entries
            .into_iter()
            .find(|(id, _)| id == prompt_id)
            .map(|(_, e)| e)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Says whether there is no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// One finished prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The queue item as it was run (auth keys stripped by the node).
    pub prompt: QueueItem,
    /// UI outputs per node id (includes outputs served from cache; empty on failure).
    #[serde(default)]
    pub outputs: BTreeMap<String, NodeOutput>,
    /// Outcome; absent on nodes older than early 2024.
    #[serde(default)]
    pub status: Option<HistoryStatus>,
    /// Per-node display metadata (`node_id`, `display_node`, `parent_node`, `real_node_id`).
    #[serde(default)]
    pub meta: Map<String, Value>,
}

impl HistoryEntry {
    /// Derives the outcome; [`Outcome::Unknown`] when the node recorded no status.
    pub fn outcome(&self) -> Outcome {
        self.status
            .as_ref()
            .map_or(Outcome::Unknown, HistoryStatus::outcome)
    }

    /// Iterates over every file reference of every output node: `(node_id, key, file)`.
    pub fn files(&self) -> impl Iterator<Item = (&str, &str, &FileRef)> {
        self.outputs
            .iter()
            .flat_map(|(id, out)| out.files().map(move |(k, f)| (id.as_str(), k, f)))
    }

    /// Every node's UI values other than files ([`NodeOutput::ui_values`]), for the nodes
    /// that reported any.
    pub fn ui_values(&self) -> BTreeMap<String, Map<String, Value>> {
        self.outputs
            .iter()
            .map(|(id, out)| (id.clone(), out.ui_values()))
            .filter(|(_, values)| !values.is_empty())
            .collect()
    }
}

/// `status` of a history entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryStatus {
    /// `success` or `error`.
    #[serde(default)]
    pub status_str: String,
    /// True exactly for success (but see [`HistoryStatus::outcome`]).
    #[serde(default, deserialize_with = "lenient::bool_any")]
    pub completed: bool,
    /// The `execution_*` events of the run as `(type, data)`.
    #[serde(default, deserialize_with = "messages")]
    pub messages: Vec<(String, Value)>,
}

fn messages<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, Value)>, D::Error> {
    // Each message is `[type, data]`; anything else is kept with an empty type rather than
    // failing the whole entry.
    let raw: Option<Vec<Value>> = Deserialize::deserialize(d)?;
    Ok(raw
        .unwrap_or_default()
        .into_iter()
        .map(|m| match m {
            Value::Array(mut pair) if pair.len() == 2 => {
                let data = pair.pop().unwrap_or(Value::Null);
                let kind = pair.pop().and_then(|k| k.as_str().map(str::to_owned));
                (kind.unwrap_or_default(), data)
            }
            other => (String::new(), other),
        })
        .collect())
}

/// How a finished prompt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Every scheduled output ran.
    Success,
    /// A node raised (or the graph had a dependency cycle). Holds the recorded error when it
    /// could be decoded.
    Failed(Option<Box<ExecutionError>>),
    /// Cancelled by `/interrupt`.
    Interrupted(Option<ExecutionInterrupted>),
    /// The entry has no status (very old node).
    Unknown,
}

impl Outcome {
    /// Says whether the prompt succeeded.
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Success)
    }
}

impl HistoryStatus {
    /// Derives the outcome: failed if `status_str != "success"` **or** any message is an
    /// `execution_error` / `execution_interrupted` (the dependency-cycle quirk leaves
    /// `status_str: "success"` next to an error message).
    pub fn outcome(&self) -> Outcome {
        let find = |kind: &str| {
            self.messages
                .iter()
                .find(|(k, _)| k == kind)
                .map(|(_, d)| d)
        };
        if let Some(data) = find("execution_interrupted") {
            return Outcome::Interrupted(serde_json::from_value(data.clone()).ok());
        }
        if let Some(data) = find("execution_error") {
            return Outcome::Failed(serde_json::from_value(data.clone()).ok().map(Box::new));
        }
        if self.status_str == "success" {
            Outcome::Success
        } else {
            Outcome::Failed(None)
        }
    }
}

/// A file written or referenced by a node: what `/view` needs to fetch it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    /// File name (no directory).
    pub filename: String,
    /// Subfolder below the type's base directory (`""` for none).
    #[serde(default)]
    pub subfolder: String,
    /// `output`, `temp` or `input`.
    #[serde(rename = "type", default = "default_file_type")]
    pub file_type: String,
    /// Other keys some nodes add (`format`, `frame_rate`, `fullpath`, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn default_file_type() -> String {
    "output".to_owned()
}

/// The UI output of one node.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct NodeOutput {
    /// File lists under well-known keys (`images`, `gifs`, `video`, `audio`, `latents`, ...).
    pub files: BTreeMap<String, Vec<FileRef>>,
    /// `text` values (ShowText-like nodes), rendered as strings.
    pub text: Vec<String>,
    /// `animated` flags (one per image of an animated save).
    pub animated: Vec<bool>,
    /// Every other key, or a well-known key whose value had an unexpected shape.
    pub other: Map<String, Value>,
}

impl NodeOutput {
    /// Iterates over every file reference: `(key, file)`.
    pub fn files(&self) -> impl Iterator<Item = (&str, &FileRef)> {
        self.files
            .iter()
            .flat_map(|(k, v)| v.iter().map(move |f| (k.as_str(), f)))
    }

    /// The UI values other than files, in the shape the node reported them: `text` as a list
    /// of strings, `animated` as a list of flags, and every other key as it came.
    pub fn ui_values(&self) -> Map<String, Value> {
        let mut values = self.other.clone();
        if !self.text.is_empty() {
            values.insert("text".to_owned(), Value::from(self.text.clone()));
        }
        if !self.animated.is_empty() {
            values.insert("animated".to_owned(), Value::from(self.animated.clone()));
        }
        values
    }

    /// Returns the files under `images`.
    pub fn images(&self) -> &[FileRef] {
        self.files.get("images").map_or(&[], Vec::as_slice)
    }
}

impl<'de> Deserialize<'de> for NodeOutput {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map: Option<Map<String, Value>> = Deserialize::deserialize(d)?;
        Ok(NodeOutput::from_map(map.unwrap_or_default()))
    }
}

impl NodeOutput {
    /// Sorts a raw UI dict into typed parts, never failing.
    pub fn from_map(map: Map<String, Value>) -> Self {
        let mut out = NodeOutput::default();
        for (key, value) in map {
            if FILE_KEYS.contains(&key.as_str()) {
                if let Ok(files) = serde_json::from_value::<Vec<FileRef>>(value.clone()) {
                    out.files.insert(key, files);
                    continue;
                }
            } else if key == "text" {
                if let Value::Array(items) = &value {
                    out.text = items
                        .iter()
                        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                        .collect();
                    continue;
                }
            } else if key == "animated"
                && let Ok(flags) = serde_json::from_value::<Vec<bool>>(value.clone())
            {
                out.animated = flags;
                continue;
            }
            out.other.insert(key, value);
        }
        out
    }
}
