//! `GET /queue` and `GET /prompt`: what a node is running and has pending.
//!
//! A queue item is a 5-element JSON array `[number, prompt_id, prompt, extra_data,
//! outputs_to_execute]`; it is decoded positionally into [`QueueItem`] (extra trailing elements
//! from other versions are ignored). ComfyUI returns the pending list in raw heap order, so
//! decoding sorts it by `(number, prompt_id)`, the order the node will run it in.

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::lenient;

/// One queued, running or finished prompt as the node stores it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueItem {
    /// Priority key: smaller runs first. Int or float on the wire.
    pub number: f64,
    /// The prompt id.
    pub prompt_id: String,
    /// The (validated, type-coerced) API-format graph.
    pub prompt: Value,
    /// `extra_data` of the POST (incl. `client_id` when one was given).
    pub extra_data: Map<String, Value>,
    /// Output node ids the node will execute (unordered).
    pub outputs_to_execute: Vec<String>,
}

impl QueueItem {
    /// Returns `extra_data.client_id`, the WebSocket session that receives this prompt's events.
    pub fn client_id(&self) -> Option<&str> {
        self.extra_data.get("client_id").and_then(Value::as_str)
    }
}

impl<'de> Deserialize<'de> for QueueItem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ItemVisitor;
        impl<'de> Visitor<'de> for ItemVisitor {
            type Value = QueueItem;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a queue item [number, prompt_id, prompt, extra_data, outputs]")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<QueueItem, A::Error> {
                let number: Value = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let number = lenient::f64_any(number).map_err(de::Error::custom)?;
                let prompt_id: Value = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(1, &self))?;
                let prompt_id = lenient::id_string(prompt_id).map_err(de::Error::custom)?;
                let prompt: Value = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(2, &self))?;
                let extra: Option<Value> = seq.next_element()?;
                let extra_data = match extra {
                    Some(Value::Object(m)) => m,
                    Some(Value::Null) | None => Map::new(),
                    Some(other) => {
                        return Err(de::Error::custom(format!(
                            "extra_data must be an object, got {other}"
                        )));
                    }
                };
                let outputs: Option<Value> = seq.next_element()?;
                let outputs_to_execute = match outputs {
                    None | Some(Value::Null) => Vec::new(),
                    Some(v) => lenient::id_list(v).map_err(de::Error::custom)?,
                };
                // Newer servers may carry hidden trailing elements; they are not ours to read.
                while seq.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(QueueItem {
                    number,
                    prompt_id,
                    prompt,
                    extra_data,
                    outputs_to_execute,
                })
            }
        }
        d.deserialize_seq(ItemVisitor)
    }
}

/// Answer of `GET /queue`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueState {
    /// The running prompt (0 or 1 items).
    pub running: Vec<QueueItem>,
    /// Pending prompts in execution order (sorted by `(number, prompt_id)` on decode).
    pub pending: Vec<QueueItem>,
}

impl<'de> Deserialize<'de> for QueueState {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Wire {
            #[serde(default)]
            queue_running: Vec<QueueItem>,
            #[serde(default)]
            queue_pending: Vec<QueueItem>,
        }
        let wire = Wire::deserialize(d)?;
        let mut pending = wire.queue_pending;
        sort_by_execution_order(&mut pending);
        Ok(QueueState {
            running: wire.queue_running,
            pending,
        })
    }
}

/// Sorts items the way ComfyUI's heap pops them: by number, then prompt id.
pub(crate) fn sort_by_execution_order(items: &mut [QueueItem]) {
    items.sort_by(|a, b| {
        a.number
            .total_cmp(&b.number)
            .then_with(|| a.prompt_id.cmp(&b.prompt_id))
    });
}

impl QueueState {
    /// Number of prompts running plus pending (what `queue_remaining` counts).
    pub fn len(&self) -> usize {
        self.running.len() + self.pending.len()
    }

    /// Says whether nothing runs and nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Says whether `prompt_id` is running on the node.
    pub fn is_running(&self, prompt_id: &str) -> bool {
        self.running.iter().any(|i| i.prompt_id == prompt_id)
    }

    /// Returns the 0-based position of `prompt_id` among the pending prompts.
    pub fn pending_position(&self, prompt_id: &str) -> Option<usize> {
        self.pending.iter().position(|i| i.prompt_id == prompt_id)
    }

    /// Says whether `prompt_id` is running or pending.
    pub fn contains(&self, prompt_id: &str) -> bool {
        self.is_running(prompt_id) || self.pending_position(prompt_id).is_some()
    }
}
