//! Recognising what users submit instead of an API-format graph.
//!
//! Users paste editor exports, subgraph blueprints, request bodies of other services and
//! Python dict literals. Each is recognised from its shape (never from formatting) so the
//! refusal can say what it is and what to do. Envelopes are unwrapped by borrowing the inner
//! value as a `RawValue`, which is a sub-slice of the original text: byte-exact by construction.

use std::collections::HashMap;
use std::fmt;

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::WorkflowError;

/// A wrapper around a workflow that a known API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Envelope {
    /// RunPod serverless input: `{"input": {"workflow": {...}}}`.
    RunPodInput,
    /// A ComfyUI `/prompt` body: `{"prompt": {...}, "client_id": ...}`.
    PromptBody,
    /// A bare `{"workflow": {...}}` wrapper.
    Workflow,
}

impl fmt::Display for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Envelope::RunPodInput => "a runpod envelope {\"input\": {\"workflow\": ...}}",
            Envelope::PromptBody => "a /prompt request body {\"prompt\": ...}",
            Envelope::Workflow => "a {\"workflow\": ...} envelope",
        })
    }
}

/// Checks the bytes are UTF-8 (JSON text must be), reporting the position otherwise.
pub(super) fn as_text(bytes: &[u8]) -> Result<&str, WorkflowError> {
    // JSON text has no byte order mark, and the parser's own message ("expected value" at
    // 1:1) does not say that one is what it found; some Windows editors add it on save.
    if bytes.starts_with(b"\xEF\xBB\xBF") {
        return Err(WorkflowError::InvalidJson {
            line: 1,
            column: 1,
            message: "the text starts with a utf-8 byte order mark (bom); save it without one"
                .into(),
            python_dict: false,
        });
    }
    std::str::from_utf8(bytes).map_err(|e| {
        let before = &bytes[..e.valid_up_to()];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let column = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
        WorkflowError::InvalidJson {
            line,
            column,
            message: "text is not valid utf-8".into(),
            python_dict: false,
        }
    })
}

/// Finds a known envelope; returns it with the inner graph text (a sub-slice of `text`).
pub(super) fn envelope(text: &str) -> Result<Option<(Envelope, &str)>, WorkflowError> {
    let top: HashMap<&str, &RawValue> = match serde_json::from_str(text) {
        Ok(m) => m,
        // Not an object of values: let the main parse produce the precise error.
        Err(_) => return Ok(None),
    };
    if top.len() == 1
        && let Some(input) = top.get("input")
        && let Ok(fields) = serde_json::from_str::<HashMap<&str, &RawValue>>(input.get())
        && let Some(graph) = fields.get("workflow").and_then(|w| wrapped_graph(w))
    {
        return Ok(Some((Envelope::RunPodInput, graph)));
    }
    if let Some(graph) = top.get("prompt").and_then(|w| wrapped_graph(w)) {
        if top.get("workflow").and_then(|w| wrapped_graph(w)).is_some() {
            return Err(WorkflowError::AmbiguousEnvelope);
        }
        return Ok(Some((Envelope::PromptBody, graph)));
    }
    if top.len() == 1
        && let Some(graph) = top.get("workflow").and_then(|w| wrapped_graph(w))
    {
        return Ok(Some((Envelope::Workflow, graph)));
    }
    Ok(None)
}

/// Returns the text of a wrapped value when it is an object that is not itself a node (a
/// graph node has `class_type`; a wrapped graph is an object of nodes).
fn wrapped_graph(v: &RawValue) -> Option<&str> {
    let s = v.get();
    let parsed: Map<String, Value> = serde_json::from_str(s).ok()?;
    (!parsed.contains_key("class_type")).then_some(s)
}

/// Refuses editor exports and blueprints, recognised by their keys.
pub(super) fn refuse_editor_formats(top: &Map<String, Value>) -> Result<(), WorkflowError> {
    let has_subgraphs = top
        .get("definitions")
        .and_then(|d| d.get("subgraphs"))
        .is_some();
    if has_subgraphs {
        return Err(WorkflowError::SubgraphBlueprint);
    }
    let nodes_list = top.get("nodes").is_some_and(Value::is_array);
    if nodes_list && (top.contains_key("links") || top.contains_key("last_node_id")) {
        return Err(WorkflowError::EditorFormat);
    }
    Ok(())
}

/// Turns a serde_json syntax error into [`WorkflowError::InvalidJson`].
pub(super) fn json_error(text: &str, e: &serde_json::Error) -> WorkflowError {
    WorkflowError::InvalidJson {
        line: e.line(),
        column: e.column(),
        message: strip_position(&e.to_string()),
        python_dict: looks_like_python_dict(text),
    }
}

fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

/// Heuristic: trailing commas, single-quoted strings or `True`/`False`/`None` outside strings.
pub(super) fn looks_like_python_dict(text: &str) -> bool {
    let bytes = text.as_bytes();
    let (mut in_string, mut escaped) = (false, false);
    let mut last_significant = b' ';
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
                last_significant = b'"';
            }
            i += 1;
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'\'' => return true,
            b'}' | b']' if last_significant == b',' => return true,
            b'T' | b'F' | b'N' => {
                let rest = &bytes[i..];
                let word_start = i == 0 || !bytes[i - 1].is_ascii_alphanumeric();
                if word_start
                    && (rest.starts_with(b"True")
                        || rest.starts_with(b"False")
                        || rest.starts_with(b"None"))
                {
                    return true;
                }
            }
            _ => {}
        }
        if !b.is_ascii_whitespace() {
            last_significant = b;
        }
        i += 1;
    }
    false
}

/// JSON type name for messages.
pub(super) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_dict_heuristic_flags_python_literals_only() {
        assert!(looks_like_python_dict("{\"a\": 1,}"));
        assert!(looks_like_python_dict("{'a': 1}"));
        assert!(looks_like_python_dict("{\"a\": True}"));
        assert!(!looks_like_python_dict("{\"a\": \"True, }'\"}"));
        assert!(!looks_like_python_dict("{\"a\": [1, 2], \"b\": true}"));
    }
}
