//! Payloads of `execution_error` and `execution_interrupted`, shaped like ComfyUI's.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::Run;
use crate::nodes::Out;
use crate::pyjson;
use crate::state::{QueueItem, now_ms};

pub(super) fn interrupted_data(run: &Run, node: &str, class: &str, executed: &[String]) -> Value {
    json!({"prompt_id": run.prompt_id, "node_id": node, "node_type": class, "executed": executed, "timestamp": now_ms()})
}

pub(super) fn current_inputs_of(
    constants: &Map<String, Value>,
    links: &HashMap<String, Out>,
) -> HashMap<String, Value> {
    let mut out: HashMap<String, Value> = constants
        .iter()
        .map(|(k, v)| (k.clone(), json!([v])))
        .collect();
    for (k, v) in links {
        let text = match v {
            Out::Image { w, h, b, .. } => {
                format!("tensor(<simulated image batch of shape [{b}, {h}, {w}, 3]>)")
            }
            Out::Latent { w, h, b, .. } => format!(
                "{{'samples': tensor(<simulated latent of shape [{b}, 4, {}, {}]>)}}",
                h / 8,
                w / 8
            ),
            Out::Int(i) => i.to_string(),
            Out::Float(f) => pyjson::float_repr(*f),
            Out::Text(s) => s.clone(),
            Out::Model(_) | Out::Other => "<object>".into(),
        };
        out.insert(k.clone(), json!([text]));
    }
    out
}

// NOTE: tracebacks are fixed execution.py frames, not the failing node's own frames, and
// `current_inputs` renders tensors as a shape description instead of torch's repr.
#[allow(clippy::too_many_arguments)]
pub(super) fn error_data(
    run: &Run,
    item: &QueueItem,
    prompt: &Map<String, Value>,
    node: &str,
    executed: &[String],
    kind: &str,
    message: &str,
    current_inputs: &HashMap<String, Value>,
    with_traceback: bool,
) -> Value {
    let class = prompt
        .get(node)
        .and_then(|n| n.get("class_type"))
        .cloned()
        .unwrap_or(Value::Null);
    let mut current_outputs: Vec<String> = item.outputs.clone();
    current_outputs.extend(prompt.keys().filter(|k| !item.outputs.contains(k)).cloned());
    let traceback: Vec<&str> = if with_traceback {
        vec![
            "  File \"<COMFYUI_ROOT>/execution.py\", line 496, in execute\n    output_data, output_ui, has_subgraph, has_pending_tasks = await get_output_data(prompt_id, unique_id, obj, input_data_all, execution_block_cb=execution_block_cb, pre_execute_cb=pre_execute_cb, hidden_inputs=hidden_inputs)\n",
            "  File \"<COMFYUI_ROOT>/execution.py\", line 315, in get_output_data\n    return_values = await _async_map_node_over_list(prompt_id, unique_id, obj, input_data_all, obj.FUNCTION, allow_interrupt=True, execution_block_cb=execution_block_cb, pre_execute_cb=pre_execute_cb, hidden_inputs=hidden_inputs)\n",
            "  File \"<COMFYUI_ROOT>/execution.py\", line 289, in _async_map_node_over_list\n    await process_inputs(input_dict, i)\n",
            "  File \"<COMFYUI_ROOT>/execution.py\", line 277, in process_inputs\n    result = f(**inputs)\n             ^^^^^^^^^^^\n",
        ]
    } else {
        Vec::new()
    };
    let mut inputs = Map::new();
    let mut keys: Vec<&String> = current_inputs.keys().collect();
    keys.sort();
    for k in keys {
        inputs.insert(k.clone(), current_inputs[k].clone());
    }
    json!({"prompt_id": run.prompt_id, "node_id": node, "node_type": class, "executed": executed,
           "exception_message": message, "exception_type": kind, "traceback": traceback,
           "current_inputs": inputs, "current_outputs": current_outputs, "timestamp": now_ms()})
}
