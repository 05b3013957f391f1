//! Prompt validation, reproducing ComfyUI 0.3.64 `validate_prompt` / `validate_inputs`.
//!
//! The walk starts at every output node (in prompt order), follows links depth first, and
//! records one result per visited node, so only nodes reachable from outputs are checked and a
//! bad node is reported once with the outputs it blocked. Constants are coerced in place
//! (`"64"` becomes `64` for an INT), which is why `/queue` and `/history` show the coerced graph.
//! Error objects keep ComfyUI's key order and texts; Python exceptions raised while following a
//! broken link become `exception_during_validation` entries with a recorded-style traceback.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use crate::catalogue::{self, Catalogue, InputSpec};
use crate::config::Profile;
use crate::pyconv::{as_num, py_bool, py_eq, py_float, py_int, py_string};
use crate::pyjson::{py_repr, py_str, truthy};

/// What validation needs to know about the node it runs on.
pub struct Env<'a> {
    /// The node's class catalogue.
    pub catalogue: &'a Catalogue,
    /// Model files of a folder on this node.
    pub model_files: &'a dyn Fn(&str) -> Vec<String>,
    /// Whether an (optionally annotated) input file exists on this node.
    pub image_exists: &'a dyn Fn(&str) -> bool,
    /// Protocol generation.
    pub profile: Profile,
}

/// Outcome of validating a POST /prompt body's `prompt`.
#[derive(Debug)]
pub enum Outcome {
    /// Queue these outputs; `node_errors` may still list failed outputs.
    Accepted {
        /// Output node ids to execute.
        outputs: Vec<String>,
        /// Errors of outputs that were dropped.
        node_errors: Map<String, Value>,
    },
    /// 400 with this error and node errors.
    Rejected {
        /// Top-level error object.
        error: Value,
        /// Per-node errors.
        node_errors: Map<String, Value>,
    },
    /// The server would raise (aiohttp answers 500).
    Crash,
}

/// A Python exception raised inside `validate_inputs`.
struct PyExc {
    kind: &'static str,
    message: String,
    frame: &'static str,
}

type NodeResult = (bool, Vec<Value>);

fn err(kind: &str, message: &str, details: String, extra: Value) -> Value {
    json!({"type": kind, "message": message, "details": details, "extra_info": extra})
}

const FRAME_TOP: &str = "  File \"<COMFYUI_ROOT>/execution.py\", line 1010, in validate_prompt\n    m = await validate_inputs(prompt_id, prompt, o, validated)\n        ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n";
const FRAME_INNER: &str = "  File \"<COMFYUI_ROOT>/execution.py\", line 842, in validate_inputs\n    r = await validate_inputs(prompt_id, prompt, o_id, validated)\n        ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n";
const FRAME_KEY: &str = "  File \"<COMFYUI_ROOT>/execution.py\", line 788, in validate_inputs\n    o_class_type = prompt[o_id]['class_type']\n                   ~~~~~~^^^^^^\n";
const FRAME_INDEX: &str = "  File \"<COMFYUI_ROOT>/execution.py\", line 790, in validate_inputs\n    received_type = r[val[1]]\n                    ~^^^^^^^^\n";
const FRAME_INPUTS: &str = "  File \"<COMFYUI_ROOT>/execution.py\", line 756, in validate_inputs\n    inputs = prompt[unique_id]['inputs']\n             ~~~~~~~~~~~~~~~~~^^^^^^^^^^\n";
const MAX_DEPTH: usize = 900;

// NOTE: V3-schema custom validation and `VALIDATE_INPUTS` of classes other than the image
// loaders are not modelled; their generic min/max/combo checks still run.
/// Validates `prompt` (mutating constants) with ComfyUI's rules.
pub fn validate_prompt(env: &Env<'_>, prompt: &mut Value, partial: Option<&Value>) -> Outcome {
    let nodes = match prompt {
        Value::Object(map) => map,
        Value::Array(a) if a.is_empty() => return no_outputs(),
        Value::String(s) if s.is_empty() => return no_outputs(),
        _ => return Outcome::Crash,
    };

    // Pass 1: every node needs a known class_type; collect output nodes.
    let mut outputs = Vec::new();
    for (id, node) in nodes.iter() {
        let class_type = match node {
            Value::Object(obj) => match obj.get("class_type") {
                Some(c) => c,
                None => return missing_class(env, id),
            },
            Value::Array(a) if !a.iter().any(|v| v == "class_type") => {
                return missing_class(env, id);
            }
            Value::String(s) if !s.contains("class_type") => return missing_class(env, id),
            _ => return Outcome::Crash,
        };
        if matches!(class_type, Value::Array(_) | Value::Object(_)) {
            return Outcome::Crash;
        }
        let class_name = py_str(class_type);
        let Some(info) = class_type.as_str().and_then(|c| env.catalogue.get(c)) else {
            return unknown_class(env, id, &class_name);
        };
        if catalogue::is_output(info) {
            let selected = match partial {
                None | Some(Value::Null) => true,
                Some(Value::Array(list)) => list.iter().any(|v| v.as_str() == Some(id.as_str())),
                Some(Value::String(s)) => s.contains(id.as_str()),
                Some(Value::Object(m)) => m.contains_key(id),
                Some(_) => return Outcome::Crash,
            };
            if selected {
                outputs.push(id.clone());
            }
        }
    }
    if outputs.is_empty() {
        return no_outputs();
    }

    // Pass 2: validate each output's subgraph, sharing results between outputs.
    let mut validated: HashMap<String, NodeResult> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut good = Vec::new();
    let mut errors: Vec<Vec<Value>> = Vec::new();
    let mut node_errors = Map::new();
    for o in &outputs {
        let (valid, reasons) = match validate_inputs(env, nodes, o, &mut validated, &mut order, 0) {
            Ok(r) => r,
            Err(exc) => {
                let reasons = vec![err(
                    "exception_during_validation",
                    "Exception when validating node",
                    exc.message.clone(),
                    json!({"exception_type": exc.kind, "traceback": [FRAME_TOP, exc.frame]}),
                )];
                record(&mut validated, &mut order, o, (false, reasons.clone()));
                (false, reasons)
            }
        };
        if valid {
            good.push(o.clone());
            continue;
        }
        if !reasons.is_empty() {
            errors.push(reasons);
        }
        // Like ComfyUI, every node with its own errors validated so far gets this output
        // appended, even one this output does not depend on.
        for node_id in &order {
            let (ok, reasons) = &validated[node_id];
            if *ok || reasons.is_empty() {
                continue;
            }
            let entry = node_errors.entry(node_id.clone()).or_insert_with(|| {
                let class = nodes
                    .get(node_id)
                    .and_then(|n| n.get("class_type"))
                    .cloned()
                    .unwrap_or(Value::Null);
                json!({"errors": reasons, "dependent_outputs": [], "class_type": class})
            });
            if let Some(Value::Array(deps)) = entry.get_mut("dependent_outputs") {
                deps.push(Value::String(o.clone()));
            }
        }
    }
    if good.is_empty() {
        let details: Vec<String> = errors
            .iter()
            .flatten()
            .map(|e| format!("{}: {}", py_str(&e["message"]), py_str(&e["details"])))
            .collect();
        let error = err(
            "prompt_outputs_failed_validation",
            "Prompt outputs failed validation",
            details.join("\n"),
            json!({}),
        );
        return Outcome::Rejected { error, node_errors };
    }
    Outcome::Accepted {
        outputs: good,
        node_errors,
    }
}

fn no_outputs() -> Outcome {
    Outcome::Rejected {
        error: err(
            "prompt_no_outputs",
            "Prompt has no outputs",
            String::new(),
            json!({}),
        ),
        node_errors: Map::new(),
    }
}

fn missing_class(env: &Env<'_>, id: &str) -> Outcome {
    if env.profile == Profile::Newer {
        return Outcome::Rejected {
            error: err(
                "missing_node_type",
                "Node type not found",
                format!("Node ID '#{id}'"),
                json!({"node_id": id, "class_type": null, "node_title": null}),
            ),
            node_errors: Map::new(),
        };
    }
    Outcome::Rejected {
        error: err(
            "invalid_prompt",
            "Cannot execute because a node is missing the class_type property.",
            format!("Node ID '#{id}'"),
            json!({}),
        ),
        node_errors: Map::new(),
    }
}

fn unknown_class(env: &Env<'_>, id: &str, class: &str) -> Outcome {
    if env.profile == Profile::Newer {
        return Outcome::Rejected {
            error: err(
                "missing_node_type",
                &format!("Node '{class}' not found. The custom node may not be installed."),
                format!("Node ID '#{id}'"),
                json!({"node_id": id, "class_type": class, "node_title": class}),
            ),
            node_errors: Map::new(),
        };
    }
    Outcome::Rejected {
        error: err(
            "invalid_prompt",
            &format!("Cannot execute because node {class} does not exist."),
            format!("Node ID '#{id}'"),
            json!({}),
        ),
        node_errors: Map::new(),
    }
}

fn record(
    validated: &mut HashMap<String, NodeResult>,
    order: &mut Vec<String>,
    id: &str,
    result: NodeResult,
) {
    if validated.insert(id.to_string(), result).is_none() {
        order.push(id.to_string());
    }
}

fn validate_inputs(
    env: &Env<'_>,
    nodes: &mut Map<String, Value>,
    id: &str,
    validated: &mut HashMap<String, NodeResult>,
    order: &mut Vec<String>,
    depth: usize,
) -> Result<NodeResult, PyExc> {
    if let Some(r) = validated.get(id) {
        return Ok(r.clone());
    }
    if depth > MAX_DEPTH {
        return Err(PyExc {
            kind: "RecursionError",
            message: "maximum recursion depth exceeded".into(),
            frame: FRAME_INNER,
        });
    }
    let class = nodes
        .get(id)
        .and_then(|n| n.get("class_type"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let info = env.catalogue.get(&class).cloned().unwrap_or_default();
    if !matches!(
        nodes.get(id).and_then(|n| n.get("inputs")),
        Some(Value::Object(_))
    ) {
        return Err(PyExc {
            kind: "KeyError",
            message: "'inputs'".into(),
            frame: FRAME_INPUTS,
        });
    }

    let mut errors = Vec::new();
    let mut valid = true;
    for (name, spec) in catalogue::input_specs(&info) {
        let current = nodes
            .get(id)
            .and_then(|n| n.get("inputs"))
            .and_then(|i| i.get(&name))
            .cloned();
        let Some(val) = current else {
            if spec.category == "required" {
                errors.push(err(
                    "required_input_missing",
                    "Required input is missing",
                    name.clone(),
                    json!({"input_name": name}),
                ));
            }
            continue;
        };
        let spec = effective_spec(env, &class, &name, spec);
        if let Value::Array(link) = &val {
            if link.len() != 2 {
                errors.push(err(
                    "bad_linked_input",
                    "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                    name.clone(),
                    json!({"input_name": name, "input_config": spec.input_config(), "received_value": val}),
                ));
                continue;
            }
            let received = linked_type(env, nodes, &link[0], &link[1])?;
            if !types_compatible(&received, &spec.kind) {
                errors.push(err(
                    "return_type_mismatch",
                    "Return type mismatch between linked nodes",
                    format!("{name}, received_type({}) mismatch input_type({})", py_str(&received), py_str(&spec.kind)),
                    json!({"input_name": name, "input_config": spec.input_config(), "received_type": received, "linked_node": val}),
                ));
                continue;
            }
            let src = link[0].as_str().unwrap_or_default().to_string();
            match validate_inputs(env, nodes, &src, validated, order, depth + 1) {
                Ok((false, _)) => valid = false,
                Ok(_) => {}
                Err(exc) => {
                    valid = false;
                    let reasons = vec![err(
                        "exception_during_inner_validation",
                        "Exception when validating inner node",
                        exc.message.clone(),
                        json!({"input_name": name, "input_config": spec.input_config(), "exception_message": exc.message,
                               "exception_type": exc.kind, "traceback": [FRAME_INNER, exc.frame], "linked_node": val}),
                    )];
                    record(validated, order, &src, (false, reasons));
                }
            }
            continue;
        }
        match check_constant(env, &class, &name, &spec, val) {
            Ok(coerced) => {
                if let Some(Value::Object(inputs)) =
                    nodes.get_mut(id).and_then(|n| n.get_mut("inputs"))
                {
                    inputs.insert(name.clone(), coerced);
                }
            }
            Err(e) => errors.push(e),
        }
    }
    let result = (errors.is_empty() && valid, errors);
    record(validated, order, id, result.clone());
    Ok(result)
}

// Replaces the recorded (empty) model-file combos with this node's files.
fn effective_spec(env: &Env<'_>, class: &str, name: &str, mut spec: InputSpec) -> InputSpec {
    catalogue::fill_model_combo(
        class,
        name,
        &mut spec.kind,
        &mut spec.extra,
        env.model_files,
    );
    spec
}

fn linked_type(
    env: &Env<'_>,
    nodes: &Map<String, Value>,
    src: &Value,
    slot: &Value,
) -> Result<Value, PyExc> {
    let key_error = |m: String| PyExc {
        kind: "KeyError",
        message: m,
        frame: FRAME_KEY,
    };
    let Some(src_id) = src.as_str() else {
        return Err(key_error(py_repr(src)));
    };
    let Some(node) = nodes.get(src_id) else {
        return Err(key_error(py_repr(src)));
    };
    let class = node
        .get("class_type")
        .and_then(Value::as_str)
        .ok_or_else(|| key_error("'class_type'".into()))?;
    let returns = env
        .catalogue
        .get(class)
        .map(catalogue::return_types)
        .unwrap_or_default();
    let index = match slot {
        Value::Bool(b) => *b as i64,
        Value::Number(n) if !n.is_f64() => n.as_i64().unwrap_or(i64::MAX),
        other => {
            let kind = if matches!(other, Value::Number(_)) {
                "float"
            } else {
                type_name_of(other)
            };
            return Err(PyExc {
                kind: "TypeError",
                message: format!("tuple indices must be integers or slices, not {kind}"),
                frame: FRAME_INDEX,
            });
        }
    };
    let len = returns.len() as i64;
    let idx = if index < 0 { index + len } else { index };
    if idx < 0 || idx >= len {
        return Err(PyExc {
            kind: "IndexError",
            message: "tuple index out of range".into(),
            frame: FRAME_INDEX,
        });
    }
    Ok(returns[idx as usize].clone())
}

fn type_name_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "NoneType",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
        _ => "int",
    }
}

/// ComfyUI's `validate_node_input` (non-strict).
fn types_compatible(received: &Value, expected: &Value) -> bool {
    if received == expected {
        return true;
    }
    let (Some(r), Some(e)) = (received.as_str(), expected.as_str()) else {
        return false;
    };
    let rs: Vec<&str> = r.split(',').map(str::trim).collect();
    let es: Vec<&str> = e.split(',').map(str::trim).collect();
    if rs.contains(&"*") || es.contains(&"*") {
        return true;
    }
    rs.iter().any(|t| es.contains(t))
}

fn check_constant(
    env: &Env<'_>,
    class: &str,
    name: &str,
    spec: &InputSpec,
    val: Value,
) -> Result<Value, Value> {
    let mut val = val;
    if let Value::Object(obj) = &val
        && let Some(inner) = obj.get("__value__")
    {
        val = inner.clone();
    }
    let kind = spec.kind.as_str().unwrap_or("");
    let converted = match kind {
        "INT" => py_int(&val),
        "FLOAT" => py_float(&val),
        "STRING" => Ok(py_string(&val)),
        "BOOLEAN" => Ok(py_bool(&val)),
        _ => Ok(val.clone()),
    };
    let val = match converted {
        Ok(v) => v,
        Err(msg) => {
            return Err(err(
                "invalid_input_type",
                &format!("Failed to convert an input value to a {kind} value"),
                format!("{name}, {}, {msg}", py_str(&val)),
                json!({"input_name": name, "input_config": spec.input_config(), "received_value": val, "exception_message": msg}),
            ));
        }
    };

    // Image loaders validate their file themselves (VALIDATE_INPUTS), which skips the generic checks.
    if catalogue::is_image_loader(class) && name == "image" {
        let file = py_str(&val);
        if !(env.image_exists)(&file) {
            return Err(err(
                "custom_validation_failed",
                "Custom validation failed for node",
                format!("{name} - Invalid image file: {file}"),
                json!({"input_name": name}),
            ));
        }
        return Ok(val);
    }

    let extra = &spec.extra;
    if let (Some(min), Some(v)) = (extra.get("min"), as_num(&val))
        && as_num(min).is_some_and(|m| v < m)
    {
        return Err(err(
            "value_smaller_than_min",
            &format!("Value {} smaller than min of {}", py_str(&val), py_str(min)),
            name.to_string(),
            json!({"input_name": name, "input_config": spec.input_config(), "received_value": val}),
        ));
    }
    if let (Some(max), Some(v)) = (extra.get("max"), as_num(&val))
        && as_num(max).is_some_and(|m| v > m)
    {
        return Err(err(
            "value_bigger_than_max",
            &format!("Value {} bigger than max of {}", py_str(&val), py_str(max)),
            name.to_string(),
            json!({"input_name": name, "input_config": spec.input_config(), "received_value": val}),
        ));
    }
    let options = match &spec.kind {
        Value::Array(options) => Some(options.clone()),
        Value::String(s) if s == "COMBO" => Some(
            extra
                .get("options")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
        ),
        _ => None,
    };
    if let Some(options) = options {
        let multiselect = extra.get("multiselect").is_some_and(truthy);
        let invalid = match (&val, multiselect) {
            (Value::Array(vals), true) => vals.iter().any(|v| !options.iter().any(|o| py_eq(o, v))),
            _ => !options.iter().any(|o| py_eq(o, &val)),
        };
        if invalid {
            let (list_info, config) = if options.len() > 20 {
                (format!("(list of length {})", options.len()), Value::Null)
            } else {
                (py_repr(&Value::Array(options.clone())), spec.input_config())
            };
            return Err(err(
                "value_not_in_list",
                "Value not in list",
                format!("{name}: '{}' not in {list_info}", py_str(&val)),
                json!({"input_name": name, "input_config": config, "received_value": val}),
            ));
        }
    }
    Ok(val)
}
