//! Decoding of ComfyUI WebSocket frames into [`WsEvent`].
//!
//! Text frames are `{"type": str, "data": ...}`; binary frames start with a big-endian u32
//! event type (1 preview image, 3 progress text, 4 preview with metadata). Known types decode
//! into typed payloads; unknown text types and binary event numbers are kept raw (custom nodes
//! send their own), and a frame that breaks the documented layout gives a [`FrameError`] value:
//! decoding never panics, whatever the bytes.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::lenient;
use crate::types::prompt::ExecInfo;
use crate::types::{Features, NodeOutput};

/// A frame that could not be decoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FrameError {
    /// A text frame that is not JSON, or not an object with a string `type`.
    #[error("text frame is not a {{type, data}} json object: {0}")]
    NotAnEnvelope(String),
    /// A known text type whose data has the wrong shape.
    #[error("`{kind}` message: cannot decode data at `{path}`: {message}")]
    BadData {
        /// The message type.
        kind: String,
        /// JSON path of the failing value.
        path: String,
        /// Cause.
        message: String,
    },
    /// A binary frame shorter than its layout requires.
    #[error("binary event {event}: frame of {len} bytes is too short for its header")]
    TooShort {
        /// Event type (0 if the frame was too short to carry one).
        event: u32,
        /// Frame length.
        len: usize,
    },
    /// A binary frame whose inner length field exceeds the frame.
    #[error("binary event {event}: length field {declared} exceeds the {available} bytes left")]
    BadLength {
        /// Event type.
        event: u32,
        /// Declared length.
        declared: u32,
        /// Bytes actually left.
        available: usize,
    },
    /// A binary frame with text or JSON that does not decode.
    #[error("binary event {event}: {message}")]
    BadPayload {
        /// Event type.
        event: u32,
        /// Cause.
        message: String,
    },
}

/// One message from a node's WebSocket.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum WsEvent {
    /// Queue length changed (and, on the first frame of a connection, the session id).
    Status(Status),
    /// A prompt started.
    ExecutionStart(PromptEvent),
    /// Nodes whose cached outputs are reused.
    ExecutionCached(ExecutionCached),
    /// A node starts; `node: None` with a prompt id means the prompt finished and its history
    /// is readable; no prompt id is the replay after a reconnect.
    Executing(Executing),
    /// Step progress of a node.
    Progress(Progress),
    /// Cumulative snapshot of node states of a prompt.
    ProgressState(ProgressState),
    /// A node produced UI output.
    Executed(Executed),
    /// A prompt succeeded.
    ExecutionSuccess(PromptEvent),
    /// A node raised (or blocked its branch: see [`ExecutionError::is_blocked`]).
    ExecutionError(Box<ExecutionError>),
    /// A prompt was interrupted.
    ExecutionInterrupted(ExecutionInterrupted),
    /// The server's feature flags (reply to the client's handshake).
    FeatureFlags(Features),
    /// Log lines (only for sessions subscribed via `/internal/logs/subscribe`).
    Logs(Value),
    /// A UI component some API nodes display.
    DisplayComponent(Value),
    /// Binary event 1: an encoded preview image.
    PreviewImage {
        /// 1 = JPEG, 2 = PNG (other values kept as sent).
        format: u32,
        /// The encoded image.
        image: Bytes,
    },
    /// Binary event 3: progress text from a node.
    ProgressText {
        /// The node id.
        node_id: String,
        /// The text.
        text: String,
    },
    /// Binary event 4: an encoded preview image with its metadata.
    PreviewImageWithMetadata {
        /// Which node/prompt the preview belongs to.
        metadata: PreviewMetadata,
        /// The encoded image.
        image: Bytes,
    },
    /// A text message of a type this crate does not know (custom nodes).
    UnknownText {
        /// The `type` field.
        kind: String,
        /// The `data` field.
        data: Value,
    },
    /// A binary frame with an unknown event number.
    UnknownBinary {
        /// The event number.
        event: u32,
        /// The bytes after the event number.
        payload: Bytes,
    },
}

/// `status` data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// `{exec_info: {queue_remaining}}`.
    pub status: StatusInner,
    /// The session id; only in the first frame of a connection.
    #[serde(default)]
    pub sid: Option<String>,
}

/// The inner `status` object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusInner {
    /// Queue length.
    pub exec_info: ExecInfo,
}

impl Status {
    /// Pending plus running prompts on the node.
    pub fn queue_remaining(&self) -> u64 {
        self.status.exec_info.queue_remaining
    }
}

/// Data of `execution_start` and `execution_success`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptEvent {
    /// The prompt.
    #[serde(deserialize_with = "lenient::id_string")]
    pub prompt_id: String,
    /// Server time in ms since the epoch (absent on old servers).
    #[serde(default, deserialize_with = "lenient::opt_u64_any")]
    pub timestamp: Option<u64>,
}

/// Data of `execution_cached`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionCached {
    /// Node ids whose outputs come from the cache (empty on a cold run).
    #[serde(default, deserialize_with = "lenient::id_list")]
    pub nodes: Vec<String>,
    /// The prompt.
    #[serde(deserialize_with = "lenient::id_string")]
    pub prompt_id: String,
    /// Server time in ms.
    #[serde(default, deserialize_with = "lenient::opt_u64_any")]
    pub timestamp: Option<u64>,
}

/// Data of `executing`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Executing {
    /// The node starting, or `None` at the end of the prompt.
    #[serde(default, deserialize_with = "lenient::opt_id_string")]
    pub node: Option<String>,
    /// The node id the user's graph knows (differs for subgraph-expanded nodes).
    #[serde(default, deserialize_with = "lenient::opt_id_string")]
    pub display_node: Option<String>,
    /// The prompt; absent in the replay a node sends right after a reconnect.
    #[serde(default, deserialize_with = "lenient::opt_id_string")]
    pub prompt_id: Option<String>,
}

impl Executing {
    /// Returns the prompt id when this is the end-of-prompt barrier (`node: null`): the
    /// outcome is known and `/history/{id}` is readable.
    pub fn finished_prompt(&self) -> Option<&str> {
        if self.node.is_none() {
            self.prompt_id.as_deref()
        } else {
            None
        }
    }
}

/// Data of `progress`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Current step (int or float).
    #[serde(deserialize_with = "lenient::f64_any")]
    pub value: f64,
    /// Total steps.
    #[serde(deserialize_with = "lenient::f64_any")]
    pub max: f64,
    /// The prompt.
    #[serde(default, deserialize_with = "lenient::opt_id_string")]
    pub prompt_id: Option<String>,
    /// The node.
    #[serde(default, deserialize_with = "lenient::opt_id_string")]
    pub node: Option<String>,
}

/// Data of `progress_state`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgressState {
    /// The prompt.
    #[serde(deserialize_with = "lenient::id_string")]
    pub prompt_id: String,
    /// State of every non-pending node, by node id.
    #[serde(default)]
    pub nodes: std::collections::BTreeMap<String, NodeProgress>,
}

/// One node inside `progress_state`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeProgress {
    /// Progress value.
    #[serde(default, deserialize_with = "lenient::f64_any")]
    pub value: f64,
    /// Progress maximum.
    #[serde(default, deserialize_with = "lenient::f64_any")]
    pub max: f64,
    /// `running` or `finished`.
    #[serde(default)]
    pub state: String,
    /// Internal node id.
    #[serde(default, deserialize_with = "lenient::opt_id_string")]
    pub node_id: Option<String>,
    /// Display node id.
    #[serde(default, deserialize_with = "lenient::opt_id_string")]
    pub display_node_id: Option<String>,
    /// Parent node id for subgraph-expanded nodes.
    #[serde(default, deserialize_with = "lenient::opt_id_string")]
    pub parent_node_id: Option<String>,
    /// Outermost original ancestor.
    #[serde(default, deserialize_with = "lenient::opt_id_string")]
    pub real_node_id: Option<String>,
}

/// Data of `executed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Executed {
    /// The node.
    #[serde(deserialize_with = "lenient::id_string")]
    pub node: String,
    /// Display node id.
    #[serde(default, deserialize_with = "lenient::opt_id_string")]
    pub display_node: Option<String>,
    /// The UI output (may be null for an output served from cache).
    #[serde(default)]
    pub output: Option<NodeOutput>,
    /// The prompt.
    #[serde(deserialize_with = "lenient::id_string")]
    pub prompt_id: String,
}

/// Data of `execution_error` (also stored in history `status.messages`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionError {
    /// The prompt.
    #[serde(deserialize_with = "lenient::id_string")]
    pub prompt_id: String,
    /// The failing node.
    #[serde(default, deserialize_with = "lenient::id_string_or_empty")]
    pub node_id: String,
    /// Its class.
    #[serde(default)]
    pub node_type: String,
    /// Nodes that had run (unordered).
    #[serde(default, deserialize_with = "lenient::id_list")]
    pub executed: Vec<String>,
    /// The exception text (ends with a newline).
    #[serde(default)]
    pub exception_message: String,
    /// The Python exception type, e.g. `RuntimeError`, `graph.DependencyCycleError`,
    /// `ExecutionBlocked`.
    #[serde(default)]
    pub exception_type: String,
    /// Pre-formatted traceback frames.
    #[serde(default)]
    pub traceback: Vec<String>,
    /// Stringified inputs of the failing node (an empty list on some errors).
    #[serde(default)]
    pub current_inputs: Value,
    /// Node ids with outputs at the time of failure.
    #[serde(default)]
    pub current_outputs: Value,
    /// Server time in ms; absent for `ExecutionBlocked`.
    #[serde(default, deserialize_with = "lenient::opt_u64_any")]
    pub timestamp: Option<u64>,
}

impl ExecutionError {
    /// Says whether this is the `ExecutionBlocked` variant: a node blocked one branch, the
    /// prompt continues and may still succeed.
    pub fn is_blocked(&self) -> bool {
        self.exception_type == "ExecutionBlocked"
    }

    /// Says whether this is the dependency-cycle error found while scheduling.
    pub fn is_dependency_cycle(&self) -> bool {
        self.exception_type.ends_with("DependencyCycleError")
    }
}

/// Data of `execution_interrupted`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionInterrupted {
    /// The prompt.
    #[serde(deserialize_with = "lenient::id_string")]
    pub prompt_id: String,
    /// The node that was about to run or running.
    #[serde(default, deserialize_with = "lenient::id_string_or_empty")]
    pub node_id: String,
    /// Its class.
    #[serde(default)]
    pub node_type: String,
    /// Nodes that had run.
    #[serde(default, deserialize_with = "lenient::id_list")]
    pub executed: Vec<String>,
    /// Server time in ms.
    #[serde(default, deserialize_with = "lenient::opt_u64_any")]
    pub timestamp: Option<u64>,
}

/// JSON header of binary event 4.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreviewMetadata {
    /// Internal node id.
    #[serde(default, deserialize_with = "lenient::opt_id_string")]
    pub node_id: Option<String>,
    /// The prompt.
    #[serde(default, deserialize_with = "lenient::opt_id_string")]
    pub prompt_id: Option<String>,
    /// Display node id.
    #[serde(default, deserialize_with = "lenient::opt_id_string")]
    pub display_node_id: Option<String>,
    /// Parent node id.
    #[serde(default, deserialize_with = "lenient::opt_id_string")]
    pub parent_node_id: Option<String>,
    /// Outermost ancestor.
    #[serde(default, deserialize_with = "lenient::opt_id_string")]
    pub real_node_id: Option<String>,
    /// `image/jpeg` or `image/png`.
    #[serde(default)]
    pub image_type: Option<String>,
    /// Every other key.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl WsEvent {
    /// Decodes a text frame.
    pub fn from_text(text: &str) -> Result<WsEvent, FrameError> {
        // A node sends several of these per prompt, and building a JSON tree of each only to
        // convert it into the typed event was a visible share of the coordinator's CPU. The
        // usual frame is decoded straight into its type; anything that path refuses (Python's
        // NaN, a duplicated key, data that does not fit) goes through the tree-based decoder,
        // which stays the reference for what is accepted and how a refusal reads.
        if let Some(event) = Self::from_text_direct(text) {
            return Ok(event);
        }
        Self::from_text_via_tree(text)
    }

    /// The direct decoding of [`WsEvent::from_text`]; `None` whenever it cannot be sure.
    fn from_text_direct(text: &str) -> Option<WsEvent> {
        #[derive(Deserialize)]
        struct Envelope<'a> {
            #[serde(rename = "type", borrow)]
            kind: std::borrow::Cow<'a, str>,
            #[serde(borrow, default)]
            data: Option<&'a serde_json::value::RawValue>,
        }
        fn direct<T: DeserializeOwned>(data: Option<&serde_json::value::RawValue>) -> Option<T> {
            serde_json::from_str(data.map_or("null", |raw| raw.get())).ok()
        }
        let envelope: Envelope<'_> = serde_json::from_str(text).ok()?;
        let data = envelope.data;
        Some(match envelope.kind.as_ref() {
            "status" => WsEvent::Status(direct(data)?),
            "execution_start" => WsEvent::ExecutionStart(direct(data)?),
            "execution_cached" => WsEvent::ExecutionCached(direct(data)?),
            "executing" => WsEvent::Executing(direct(data)?),
            "progress" => WsEvent::Progress(direct(data)?),
            "progress_state" => WsEvent::ProgressState(direct(data)?),
            "executed" => WsEvent::Executed(direct(data)?),
            "execution_success" => WsEvent::ExecutionSuccess(direct(data)?),
            // The rest are rare or kept as plain JSON: the tree-based decoder handles them.
            _ => return None,
        })
    }

    /// The tree-based decoding of [`WsEvent::from_text`]: parse to JSON, then to the type.
    /// Public only so that tests can hold the direct decoding to it.
    #[doc(hidden)]
    pub fn from_text_via_tree(text: &str) -> Result<WsEvent, FrameError> {
        let envelope: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(first) => match lenient::replace_python_non_finite(text.as_bytes()) {
                Some(clean) => serde_json::from_slice(&clean)
                    .map_err(|_| FrameError::NotAnEnvelope(first.to_string()))?,
                None => return Err(FrameError::NotAnEnvelope(first.to_string())),
            },
        };
        let Value::Object(mut map) = envelope else {
            return Err(FrameError::NotAnEnvelope("not an object".into()));
        };
        let Some(Value::String(kind)) = map.remove("type") else {
            return Err(FrameError::NotAnEnvelope("no string `type` field".into()));
        };
        let data = map.remove("data").unwrap_or(Value::Null);
        Self::from_parts(kind, data)
    }

    /// Decodes a `(type, data)` pair, as found in text frames and history messages.
    pub fn from_parts(kind: String, data: Value) -> Result<WsEvent, FrameError> {
        Ok(match kind.as_str() {
            "status" => WsEvent::Status(typed(&kind, data)?),
            "execution_start" => WsEvent::ExecutionStart(typed(&kind, data)?),
            "execution_cached" => WsEvent::ExecutionCached(typed(&kind, data)?),
            "executing" => WsEvent::Executing(typed(&kind, data)?),
            "progress" => WsEvent::Progress(typed(&kind, data)?),
            "progress_state" => WsEvent::ProgressState(typed(&kind, data)?),
            "executed" => WsEvent::Executed(typed(&kind, data)?),
            "execution_success" => WsEvent::ExecutionSuccess(typed(&kind, data)?),
            "execution_error" => WsEvent::ExecutionError(Box::new(typed(&kind, data)?)),
            "execution_interrupted" => WsEvent::ExecutionInterrupted(typed(&kind, data)?),
            "feature_flags" => WsEvent::FeatureFlags(typed(&kind, data)?),
            "logs" => WsEvent::Logs(data),
            "display_component" => WsEvent::DisplayComponent(data),
            _ => WsEvent::UnknownText { kind, data },
        })
    }

    /// Decodes a binary frame.
    pub fn from_binary(frame: &[u8]) -> Result<WsEvent, FrameError> {
        let Some((event, rest)) = split_u32(frame) else {
            return Err(FrameError::TooShort {
                event: 0,
                len: frame.len(),
            });
        };
        let too_short = || FrameError::TooShort {
            event,
            len: frame.len(),
        };
        match event {
            1 => {
                let (format, image) = split_u32(rest).ok_or_else(too_short)?;
                Ok(WsEvent::PreviewImage {
                    format,
                    image: Bytes::copy_from_slice(image),
                })
            }
            3 => {
                let (len, rest) = split_u32(rest).ok_or_else(too_short)?;
                let (node, text) = take(event, rest, len)?;
                let utf8 = |b: &[u8], what: &str| {
                    String::from_utf8(b.to_vec()).map_err(|e| FrameError::BadPayload {
                        event,
                        message: format!("{what} is not utf-8: {e}"),
                    })
                };
                Ok(WsEvent::ProgressText {
                    node_id: utf8(node, "node id")?,
                    text: utf8(text, "text")?,
                })
            }
            4 => {
                let (len, rest) = split_u32(rest).ok_or_else(too_short)?;
                let (meta, image) = take(event, rest, len)?;
                let metadata =
                    serde_json::from_slice(meta).map_err(|e| FrameError::BadPayload {
                        event,
                        message: format!("metadata is not the expected json object: {e}"),
                    })?;
                Ok(WsEvent::PreviewImageWithMetadata {
                    metadata,
                    image: Bytes::copy_from_slice(image),
                })
            }
            _ => Ok(WsEvent::UnknownBinary {
                event,
                payload: Bytes::copy_from_slice(rest),
            }),
        }
    }

    /// Returns the prompt id this event belongs to, when it carries one.
    pub fn prompt_id(&self) -> Option<&str> {
        match self {
            WsEvent::ExecutionStart(e) | WsEvent::ExecutionSuccess(e) => Some(&e.prompt_id),
            WsEvent::ExecutionCached(e) => Some(&e.prompt_id),
            WsEvent::Executing(e) => e.prompt_id.as_deref(),
            WsEvent::Progress(e) => e.prompt_id.as_deref(),
            WsEvent::ProgressState(e) => Some(&e.prompt_id),
            WsEvent::Executed(e) => Some(&e.prompt_id),
            WsEvent::ExecutionError(e) => Some(&e.prompt_id),
            WsEvent::ExecutionInterrupted(e) => Some(&e.prompt_id),
            WsEvent::PreviewImageWithMetadata { metadata, .. } => metadata.prompt_id.as_deref(),
            _ => None,
        }
    }

    /// The message type name (`status`, `executing`, ..., `binary:1`), for logs and metrics.
    pub fn kind(&self) -> &str {
        match self {
            WsEvent::Status(_) => "status",
            WsEvent::ExecutionStart(_) => "execution_start",
            WsEvent::ExecutionCached(_) => "execution_cached",
            WsEvent::Executing(_) => "executing",
            WsEvent::Progress(_) => "progress",
            WsEvent::ProgressState(_) => "progress_state",
            WsEvent::Executed(_) => "executed",
            WsEvent::ExecutionSuccess(_) => "execution_success",
            WsEvent::ExecutionError(_) => "execution_error",
            WsEvent::ExecutionInterrupted(_) => "execution_interrupted",
            WsEvent::FeatureFlags(_) => "feature_flags",
            WsEvent::Logs(_) => "logs",
            WsEvent::DisplayComponent(_) => "display_component",
            WsEvent::PreviewImage { .. } => "binary:1",
            WsEvent::ProgressText { .. } => "binary:3",
            WsEvent::PreviewImageWithMetadata { .. } => "binary:4",
            WsEvent::UnknownText { kind, .. } => kind,
            WsEvent::UnknownBinary { .. } => "binary:unknown",
        }
    }
}

fn typed<T: DeserializeOwned>(kind: &str, data: Value) -> Result<T, FrameError> {
    serde_path_to_error::deserialize(data).map_err(|e| FrameError::BadData {
        kind: kind.to_owned(),
        path: e.path().to_string(),
        message: e.inner().to_string(),
    })
}

fn split_u32(b: &[u8]) -> Option<(u32, &[u8])> {
    let (head, rest) = b.split_first_chunk::<4>()?;
    Some((u32::from_be_bytes(*head), rest))
}

fn take(event: u32, b: &[u8], len: u32) -> Result<(&[u8], &[u8]), FrameError> {
    let n = usize::try_from(len).unwrap_or(usize::MAX);
    if n > b.len() {
        return Err(FrameError::BadLength {
            event,
            declared: len,
            available: b.len(),
        });
    }
    Ok(b.split_at(n))
}
