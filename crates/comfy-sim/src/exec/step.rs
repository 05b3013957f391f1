//! Running the nodes of one prompt: inputs, model loads and memory, the work, outputs.
//!
//! Each picked node gets its `executing` and progress events, resolves linked values from this
//! prompt or the cache, loads its models into the simulated GPU (OOM ends the prompt), sleeps
//! its scaled work time (sampler steps emit progress and previews), writes its output files
//! and records the result in the cache.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;

use serde_json::{Map, Value, json};

use super::graph::{build_graph, link_of, pick};
use super::report::{current_inputs_of, error_data, interrupted_data};
use super::{End, Run, pause};
use crate::catalogue;
use crate::gpu::{self, Load};
use crate::images;
use crate::nodes::{self, Inputs, Out, Plan};
use crate::outputs;
use crate::pyjson;
use crate::state::{CacheEntry, QueueItem, SharedRef};

pub(super) async fn execute_nodes(
    run: &mut Run,
    item: &QueueItem,
    prompt: &Map<String, Value>,
    sigs: &HashMap<String, String>,
    cached: &HashSet<String>,
) -> (End, Vec<(String, Value)>) {
    let shared = run.shared.clone();
    let class_of = |id: &str| {
        prompt
            .get(id)
            .and_then(|n| n.get("class_type"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let is_output = |id: &str| {
        shared
            .catalogue
            .get(&class_of(id))
            .is_some_and(catalogue::is_output)
    };
    let graph = build_graph(prompt, &item.outputs, cached);
    let mut done: HashSet<String> = HashSet::new();
    let mut executed: Vec<String> = Vec::new();
    let mut values: HashMap<String, Vec<Out>> = HashMap::new();
    let mut ui_outputs: Vec<(String, Value)> = Vec::new();
    let prompt_text = pyjson::to_string(&item.prompt);
    let mut pinned: Vec<String> = Vec::new();

    while done.len() < graph.pending.len() {
        let Some(node) = pick(&graph, &done, &is_output) else {
            let data = error_data(
                run,
                item,
                prompt,
                graph.pending.first().map(String::as_str).unwrap_or(""),
                &executed,
                "graph.DependencyCycleError",
                "Dependency cycle detected\n",
                &HashMap::new(),
                false,
            );
            return (End::Error(data), ui_outputs);
        };
        let class = class_of(&node);
        let sig = sigs.get(&node).cloned().unwrap_or_default();

        // A cached output node replays its UI without `executing`.
        if cached.contains(&node) {
            let entry = shared.lock().cache.get(&sig).cloned();
            let ui = entry.as_ref().and_then(|e| e.ui.clone());
            {
                let g = shared.lock();
                run.lifecycle(&g, "executed", json!({"node": node, "display_node": node, "output": ui, "prompt_id": run.prompt_id}));
                run.set_progress(&node, json!(1), json!(1), "finished");
                run.send_progress_state(&g);
            }
            if let Some(ui) = ui {
                ui_outputs.push((node.clone(), ui));
            }
            values.insert(node.clone(), entry.map(|e| e.outputs).unwrap_or_default());
            done.insert(node);
            continue;
        }

        {
            let mut g = shared.lock();
            run.set_progress(&node, json!(0.0), json!(1.0), "running");
            run.send_progress_state(&g);
            g.running_node = Some(node.clone());
            run.lifecycle(
                &g,
                "executing",
                json!({"node": node, "display_node": node, "prompt_id": run.prompt_id}),
            );
            if g.faults.drop_ws_mid_run {
                g.faults.drop_ws_mid_run = false;
                tracing::warn!(node = %shared.config.name, prompt_id = %run.prompt_id, "fault: dropping every websocket mid-run");
                g.drop_all_sockets();
            }
        }
        if shared.interrupt.load(Ordering::SeqCst) {
            return (
                End::Interrupted(interrupted_data(run, &node, &class, &executed)),
                ui_outputs,
            );
        }

        // Resolve inputs (links read this prompt's values or the cache).
        let info = shared.catalogue.get(&class).cloned().unwrap_or_default();
        let constants: Map<String, Value> = prompt
            .get(&node)
            .and_then(|n| n.get("inputs"))
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter(|(_, v)| link_of(v).is_none())
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let mut links = HashMap::new();
        for (k, v) in prompt
            .get(&node)
            .and_then(|n| n.get("inputs"))
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            if let Some((src, slot)) = link_of(v) {
                let val = match values.get(&src) {
                    Some(outs) => outs.get(slot).cloned(),
                    None => {
                        let src_sig = sigs.get(&src).cloned().unwrap_or_default();
                        shared
                            .lock()
                            .cache
                            .get(&src_sig)
                            .and_then(|e| e.outputs.get(slot).cloned())
                    }
                };
                links.insert(k.clone(), val.unwrap_or(Out::Other));
            }
        }
        let inputs = Inputs {
            constants: &constants,
            links,
        };
        let dirs = shared.dirs.clone();
        let mut plan = nodes::plan(&class, &info, &inputs, &shared.config, &|file| {
            let name = file.rsplit_once(" [").map(|(n, _)| n).unwrap_or(file);
            std::fs::read(dirs.input.join(name))
                .ok()
                .and_then(|b| images::png_size(&b))
        });
        let current_inputs = current_inputs_of(&constants, &inputs.links);
        {
            let mut g = shared.lock();
            if g.faults.fail_count > 0 && g.faults.fail_class.as_deref() == Some(class.as_str()) {
                g.faults.fail_count -= 1;
                tracing::warn!(node = %shared.config.name, prompt_id = %run.prompt_id, class = %class, "fault: failing node at run time");
                plan.fail = Some((
                    "RuntimeError".into(),
                    format!("simulated failure injected at {class} (comfy-sim fault)\n"),
                ));
            }
        }

        // Model loads and memory.
        match load_models(&shared, &plan, &mut pinned).await {
            Ok(()) => {}
            Err(msg) => {
                let data = error_data(
                    run,
                    item,
                    prompt,
                    &node,
                    &executed,
                    "torch.OutOfMemoryError",
                    &msg,
                    &current_inputs,
                    true,
                );
                return (End::Error(data), ui_outputs);
            }
        }
        if let Some((kind, msg)) = plan.fail.clone() {
            pause(&shared, plan.work_seconds).await;
            let data = error_data(
                run,
                item,
                prompt,
                &node,
                &executed,
                &kind,
                &msg,
                &current_inputs,
                true,
            );
            return (End::Error(data), ui_outputs);
        }

        // The work itself.
        if plan.steps > 0 {
            if let Some(end) = sample(run, &node, &class, &plan, &executed).await {
                return (end, ui_outputs);
            }
        } else {
            pause(&shared, plan.work_seconds).await;
        }
        if let Some(text) = &plan.text {
            let mut frame = 3u32.to_be_bytes().to_vec();
            frame.extend_from_slice(&(node.len() as u32).to_be_bytes());
            frame.extend_from_slice(node.as_bytes());
            frame.extend_from_slice(text.as_bytes());
            shared
                .lock()
                .send_binary(&shared.counters, None, &|_| Some(frame.clone()));
        }
        let n = plan.ws_images.len();
        for (i, (w, h, color)) in plan.ws_images.iter().enumerate() {
            let (sw, sh) = images::scaled(*w, *h, 512);
            let png = images::png(sw, sh, &images::solid_rgba(sw, sh, *color), true, &[]);
            let g = shared.lock();
            run.set_progress(&node, json!(i), json!(n), "running");
            run.send_progress_state(&g);
            run.preview_frames(&g, &node, &png, true, true);
            run.to_client_or_all(
                &g,
                "progress",
                json!({"value": i, "max": n, "prompt_id": run.prompt_id, "node": node}),
            );
            run.preview_frames(&g, &node, &png, true, false);
        }
        let ui = match &plan.save {
            Some(save) => match outputs::write(&shared.dirs, save, &prompt_text) {
                Ok(ui) => Some(ui),
                Err(msg) => {
                    let data = error_data(
                        run,
                        item,
                        prompt,
                        &node,
                        &executed,
                        "Exception",
                        &format!("{msg}\n"),
                        &current_inputs,
                        true,
                    );
                    return (End::Error(data), ui_outputs);
                }
            },
            None => plan.ui.clone(),
        };
        {
            let mut g = shared.lock();
            if let Some(ui) = &ui {
                run.lifecycle(&g, "executed", json!({"node": node, "display_node": node, "output": ui, "prompt_id": run.prompt_id}));
                ui_outputs.push((node.clone(), ui.clone()));
            }
            let max = run
                .progress
                .get(&node)
                .map(|p| p["max"].clone())
                .unwrap_or(json!(1.0));
            run.set_progress(&node, max.clone(), max, "finished");
            run.send_progress_state(&g);
            g.cache.insert(
                sig,
                CacheEntry {
                    outputs: plan.outputs.clone(),
                    ui,
                },
            );
        }
        values.insert(node.clone(), plan.outputs);
        executed.push(node.clone());
        done.insert(node);
    }
    (End::Success, ui_outputs)
}

async fn load_models(
    shared: &SharedRef,
    plan: &Plan,
    pinned: &mut Vec<String>,
) -> Result<(), String> {
    let mut wanted: Vec<(String, u64, f64)> = Vec::new();
    for (folder, name) in &plan.loads {
        let file = shared
            .config
            .models
            .iter()
            .filter(|f| &f.folder == folder)
            .flat_map(|f| f.files.iter())
            .find(|m| &m.name == name);
        if let Some(f) = file {
            wanted.push((f.name.clone(), f.size_bytes(), f.load_secs()));
        }
    }
    for name in &plan.needs {
        if let Some(f) = shared
            .config
            .models
            .iter()
            .flat_map(|f| f.files.iter())
            .find(|m| &m.name == name)
        {
            wanted.push((f.name.clone(), f.size_bytes(), f.load_secs()));
        }
    }
    for (name, bytes, secs) in wanted {
        let load = shared.lock().gpu.ensure(&name, bytes, pinned);
        match load {
            Load::Resident => {}
            Load::Loaded { evicted } => {
                tracing::debug!(node = %shared.config.name, model = %name, ?evicted, "model loaded");
                pause(shared, secs).await;
            }
            Load::OutOfMemory { requested, free } => {
                let g = shared.lock();
                return Err(gpu::oom_message(
                    requested,
                    free,
                    g.gpu.total(),
                    g.gpu.used_by_models(),
                ));
            }
        }
        if !pinned.contains(&name) {
            pinned.push(name);
        }
    }
    if plan.activation_bytes > 0 {
        let mut g = shared.lock();
        if let Err((requested, free)) = g.gpu.reserve_activations(plan.activation_bytes, pinned) {
            return Err(gpu::oom_message(
                requested,
                free,
                g.gpu.total(),
                g.gpu.used_by_models(),
            ));
        }
    }
    Ok(())
}

async fn sample(
    run: &mut Run,
    node: &str,
    class: &str,
    plan: &Plan,
    executed: &[String],
) -> Option<End> {
    let shared = run.shared.clone();
    let previews = shared.config.preview_method != "none";
    for step in 1..=plan.steps {
        pause(&shared, plan.step_seconds).await;
        if shared.interrupt.load(Ordering::SeqCst) {
            return Some(End::Interrupted(interrupted_data(
                run, node, class, executed,
            )));
        }
        let g = shared.lock();
        run.set_progress(node, json!(step), json!(plan.steps), "running");
        run.send_progress_state(&g);
        let jpeg = previews
            .then(|| images::jpeg(64, 64, &images::solid_rgba(64, 64, 0x404040 + step), 95));
        if let Some(j) = &jpeg {
            run.preview_frames(&g, node, j, false, true);
        }
        run.to_client_or_all(
            &g,
            "progress",
            json!({"value": step, "max": plan.steps, "prompt_id": run.prompt_id, "node": node}),
        );
        if let Some(j) = &jpeg {
            run.preview_frames(&g, node, j, false, false);
        }
    }
    None
}
