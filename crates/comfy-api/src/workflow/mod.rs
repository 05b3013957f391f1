//! API-format workflows: checked, analysed, and forwarded byte for byte.
//!
//! Problem: a workflow must reach the node exactly as the user wrote it (a seed of
//! `18446744073709551615` or a float like `0.7000000000000001` must not be rounded by a
//! re-serialisation), yet the coordinator needs to look inside it: reject malformed graphs
//! early with messages naming node ids, recognise what users submit by mistake (editor exports,
//! envelopes, Python dicts), and extract models, input files and a cost for placement.
//!
//! Approach: [`Workflow`] keeps the original text as a `RawValue` (what is forwarded) next to a
//! parsed view used only for analysis. Parsing runs format detection ([`detect`]), structural
//! checks (nodes, links, cycles) and never judges node semantics (missing required inputs are
//! the node's call: an unreachable node may lack them legitimately).

mod analysis;
mod detect;

use std::collections::{BTreeMap, HashMap};

use serde_json::value::RawValue;
use serde_json::{Map, Value};

pub use analysis::{Cost, InputFile, ModelRef, SamplerCost};
pub use detect::Envelope;

/// Why a workflow was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WorkflowError {
    /// The text is not valid JSON.
    #[error("invalid json at line {line} column {column}: {message}{}", if *.python_dict {
        "; this looks like a python dict (trailing commas / single quotes / True, False, None): \
         convert it with json.dumps or export the workflow with \"Save (API Format)\""
    } else { "" })]
    InvalidJson {
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// The parser's message.
        message: String,
        /// Whether the text looks like a Python dict literal.
        python_dict: bool,
    },
    /// The top level is not a JSON object.
    #[error("workflow must be a json object of nodes keyed by id, found {0}")]
    NotAnObject(&'static str),
    /// The object has no node.
    #[error("workflow has no nodes")]
    Empty,
    /// An editor (litegraph) export.
    #[error(
        "this is an editor-format workflow (`nodes`, `links`, `last_node_id`), not the api format: in ComfyUI use \"Export (API)\" / \"Save (API Format)\" and submit that file"
    )]
    EditorFormat,
    /// A subgraph blueprint.
    #[error(
        "this is a subgraph blueprint (`definitions.subgraphs`), an editor building block that cannot run: place it in a workflow, then export that workflow with \"Export (API)\""
    )]
    SubgraphBlueprint,
    /// A `/prompt` body that also carries a graph under `workflow`: which one to run is a
    /// guess, so neither is.
    #[error(
        "both `prompt` and `workflow` hold a graph: send one of them (a `/prompt` body runs `prompt`)"
    )]
    AmbiguousEnvelope,
    /// A known envelope around the workflow (only from the strict parse).
    #[error("the workflow is wrapped in {0}: submit the inner graph, or use the unwrapping parse")]
    Wrapped(Envelope),
    /// A top-level entry is not a node object.
    #[error("node {node_id}: must be an object with `class_type` and `inputs`, found {found}")]
    NodeNotObject {
        /// Node id.
        node_id: String,
        /// JSON type found.
        found: &'static str,
    },
    /// A node has no string `class_type`.
    #[error("node {node_id}: missing or non-string `class_type`")]
    MissingClassType {
        /// Node id.
        node_id: String,
    },
    /// A node's `class_type` is empty or only white space: it names no class.
    #[error("node {node_id}: `class_type` is empty")]
    EmptyClassType {
        /// Node id.
        node_id: String,
    },
    /// A node has no `inputs` object.
    #[error("node {node_id}: missing or non-object `inputs`")]
    MissingInputs {
        /// Node id.
        node_id: String,
    },
    /// A link names a node that does not exist.
    #[error("node {node_id}: input `{input}` links to node {target}, which does not exist")]
    DanglingLink {
        /// Node holding the link.
        node_id: String,
        /// Input name.
        input: String,
        /// Missing node id.
        target: String,
    },
    /// A link's output index is not a non-negative integer.
    #[error(
        "node {node_id}: input `{input}` links to node {target} with output index {index}, which is not a non-negative integer"
    )]
    BadOutputIndex {
        /// Node holding the link.
        node_id: String,
        /// Input name.
        input: String,
        /// Linked node id.
        target: String,
        /// The index as written.
        index: String,
    },
    /// The links form a cycle.
    #[error("the links form a cycle through nodes {}", .0.join(" -> "))]
    Cycle(Vec<String>),
}

/// One node of the parsed view.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowNode {
    /// The node class.
    pub class_type: String,
    /// Inputs: literals or links `[node_id, output_index]`.
    pub inputs: Map<String, Value>,
    /// `_meta.title`, when present.
    pub title: Option<String>,
}

impl WorkflowNode {
    /// Returns the link `(node_id, output_index)` of input `name`, if it is one.
    pub fn link(&self, name: &str) -> Option<(&str, u64)> {
        as_link(self.inputs.get(name)?).and_then(|(id, idx)| Some((id, idx.as_u64()?)))
    }

    /// Iterates over every link: `(input_name, node_id)`.
    pub fn links(&self) -> impl Iterator<Item = (&str, &str)> {
        self.inputs
            .iter()
            .filter_map(|(k, v)| as_link(v).map(|(id, _)| (k.as_str(), id)))
    }
}

/// A checked API-format workflow with its original text.
#[derive(Debug, Clone)]
pub struct Workflow {
    /// The graph exactly as submitted (what is forwarded to nodes).
    raw: Box<RawValue>,
    /// Parsed view, in the order of the text.
    nodes: Vec<(String, WorkflowNode)>,
    /// Node id -> index in `nodes`.
    index: HashMap<String, usize>,
}

impl Workflow {
    /// Parses and checks a bare API-format graph. Envelopes are refused with
    /// [`WorkflowError::Wrapped`] naming them.
    pub fn parse(bytes: &[u8]) -> Result<Workflow, WorkflowError> {
        let text = detect::as_text(bytes)?;
        if let Some(env) = detect::envelope(text)? {
            return Err(WorkflowError::Wrapped(env.0));
        }
        Self::from_graph_text(text)
    }

    /// Parses a graph, unwrapping a known envelope (`{"input":{"workflow":…}}`,
    /// `{"prompt":…}`, `{"workflow":…}`) byte for byte; says which one was unwrapped.
    pub fn parse_unwrapping(bytes: &[u8]) -> Result<(Workflow, Option<Envelope>), WorkflowError> {
        let text = detect::as_text(bytes)?;
        match detect::envelope(text)? {
            Some((env, inner)) => Ok((Self::from_graph_text(inner)?, Some(env))),
            None => Ok((Self::from_graph_text(text)?, None)),
        }
    }

    // NOTE: numbers beyond the f64 range (e.g. `1e400`) are refused as "number out of range"
    // although Python reads them as infinity; the parsed view has no way to hold them and no
    // real workflow was found using one.
    fn from_graph_text(text: &str) -> Result<Workflow, WorkflowError> {
        let value: Value = serde_json::from_str(text).map_err(|e| detect::json_error(text, &e))?;
        let Value::Object(top) = value else {
            return Err(WorkflowError::NotAnObject(detect::type_name(&value)));
        };
        detect::refuse_editor_formats(&top)?;
        if top.is_empty() {
            return Err(WorkflowError::Empty);
        }
        let mut nodes = Vec::with_capacity(top.len());
        for (node_id, node) in top {
            nodes.push((node_id.clone(), check_node(node_id, node)?));
        }
        let index = nodes
            .iter()
            .enumerate()
            .map(|(i, (id, _))| (id.clone(), i))
            .collect();
        let raw = RawValue::from_string(text.trim().to_owned())
            .map_err(|e| detect::json_error(text, &e))?;
        let wf = Workflow { raw, nodes, index };
        wf.check_links()?;
        wf.check_acyclic()?;
        Ok(wf)
    }

    /// The graph text exactly as submitted.
    pub fn as_str(&self) -> &str {
        self.raw.get()
    }

    /// The graph as a raw JSON value (for embedding in a request body without re-encoding).
    pub fn raw(&self) -> &RawValue {
        &self.raw
    }

    /// A copy of the raw graph.
    pub fn to_raw(&self) -> Box<RawValue> {
        self.raw.clone()
    }

    /// The nodes in the order of the text.
    pub fn nodes(&self) -> impl Iterator<Item = (&str, &WorkflowNode)> {
        self.nodes.iter().map(|(id, n)| (id.as_str(), n))
    }

    /// Finds a node by id.
    pub fn node(&self, id: &str) -> Option<&WorkflowNode> {
        self.index.get(id).map(|&i| &self.nodes[i].1)
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always false for a parsed workflow (an empty one is refused); present for symmetry.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    fn check_links(&self) -> Result<(), WorkflowError> {
        for (node_id, node) in &self.nodes {
            for (input, value) in &node.inputs {
                let Some((target, idx)) = as_link(value) else {
                    continue;
                };
                if idx.as_u64().is_none() {
                    return Err(WorkflowError::BadOutputIndex {
                        node_id: node_id.clone(),
                        input: input.clone(),
                        target: target.to_owned(),
                        index: idx.to_string(),
                    });
                }
                if !self.index.contains_key(target) {
                    return Err(WorkflowError::DanglingLink {
                        node_id: node_id.clone(),
                        input: input.clone(),
                        target: target.to_owned(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Iterative three-colour DFS over links (no recursion, so huge graphs cannot overflow).
    fn check_acyclic(&self) -> Result<(), WorkflowError> {
        const WHITE: u8 = 0;
        const GREY: u8 = 1;
        const BLACK: u8 = 2;
        let deps: Vec<Vec<usize>> = self
            .nodes
            .iter()
            .map(|(_, n)| {
                n.links()
                    .filter_map(|(_, id)| self.index.get(id).copied())
                    .collect()
            })
            .collect();
        let mut colour = vec![WHITE; self.nodes.len()];
        for start in 0..self.nodes.len() {
            if colour[start] != WHITE {
                continue;
            }
            // Stack of (node, next dependency to visit); the stack is the current path.
            let mut stack = vec![(start, 0usize)];
            colour[start] = GREY;
            while let Some(&mut (node, ref mut next)) = stack.last_mut() {
                if let Some(&dep) = deps[node].get(*next) {
                    *next += 1;
                    match colour[dep] {
                        WHITE => {
                            colour[dep] = GREY;
                            stack.push((dep, 0));
                        }
                        GREY => {
                            let from = stack.iter().position(|&(n, _)| n == dep).unwrap_or(0);
                            let mut cycle: Vec<String> = stack[from..]
                                .iter()
                                .map(|&(n, _)| self.nodes[n].0.clone())
                                .collect();
                            cycle.push(self.nodes[dep].0.clone());
                            return Err(WorkflowError::Cycle(cycle));
                        }
                        _ => {}
                    }
                } else {
                    colour[node] = BLACK;
                    stack.pop();
                }
            }
        }
        Ok(())
    }

    /// Counts nodes per class (handy for logs and admission checks).
    pub fn class_counts(&self) -> BTreeMap<&str, usize> {
        let mut counts = BTreeMap::new();
        for (_, n) in &self.nodes {
            *counts.entry(n.class_type.as_str()).or_insert(0) += 1;
        }
        counts
    }
}

/// Reads a link `[node_id, index]` the way ComfyUI's executor does: a two-element list whose
/// first element is a string. The index is returned unchecked.
fn as_link(v: &Value) -> Option<(&str, &serde_json::Number)> {
    match v.as_array()?.as_slice() {
        [Value::String(id), Value::Number(idx)] => Some((id, idx)),
        _ => None,
    }
}

fn check_node(node_id: String, node: Value) -> Result<WorkflowNode, WorkflowError> {
    let Value::Object(mut obj) = node else {
        return Err(WorkflowError::NodeNotObject {
            found: detect::type_name(&node),
            node_id,
        });
    };
    let Some(Value::String(class_type)) = obj.remove("class_type") else {
        return Err(WorkflowError::MissingClassType { node_id });
    };
    if class_type.trim().is_empty() {
        return Err(WorkflowError::EmptyClassType { node_id });
    }
    let Some(Value::Object(inputs)) = obj.remove("inputs") else {
        return Err(WorkflowError::MissingInputs { node_id });
    };
    let title = obj
        .get("_meta")
        .and_then(|m| m.get("title"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    Ok(WorkflowNode {
        class_type,
        inputs,
        title,
    })
}
