//! The worker: runs queued prompts one at a time and emits ComfyUI's event sequence.
//!
//! Order per prompt (protocol §4.5): status on dequeue, execution_start, execution_cached, then
//! per node progress_state(running) + executing, per step progress_state/preview/progress,
//! executed for UI outputs, progress_state(finished); cached output nodes replay `executed`.
//! The end writes history, then broadcasts status, then `executing{node:null}`. Nodes are
//! picked with ComfyUI's "UX friendly" rule (output nodes first). The classic cache keys nodes by
//! class, constants and ancestors, and keeps only entries of the latest prompt.

mod graph;
mod report;
mod step;

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use crate::pyjson;
use crate::state::{Inner, QueueItem, SharedRef, now_ms};

use graph::signatures;
use step::execute_nodes;

/// Runs the worker loop until `cancel` fires.
pub async fn worker(shared: SharedRef, cancel: CancellationToken) {
    loop {
        let item = loop {
            {
                let mut g = shared.lock();
                if let Some(item) = g.queue.pop() {
                    g.running = Some(item.clone());
                    g.broadcast_status(&shared.counters);
                    break item;
                }
                apply_free(&mut g);
            }
            tokio::select! {
                _ = shared.wake.notified() => {}
                _ = cancel.cancelled() => return,
            }
        };
        tokio::select! {
            _ = run_prompt(&shared, item) => {}
            _ = cancel.cancelled() => return,
        }
    }
}

/// Applies a pending `/free` (between prompts only).
pub fn apply_free(g: &mut Inner) {
    let (unload, free_memory) = std::mem::take(&mut g.pending_free);
    if unload || free_memory {
        g.gpu.unload_all();
    }
    if free_memory {
        g.cache.clear();
    }
}

async fn pause(shared: &SharedRef, secs: f64) {
    let d = secs * shared.config.time_scale;
    if d > 0.0 && d.is_finite() {
        tokio::time::sleep(Duration::from_secs_f64(d.min(86_400.0))).await;
    } else {
        tokio::task::yield_now().await;
    }
}

enum End {
    Success,
    Error(Value),
    Interrupted(Value),
}

struct Run {
    shared: SharedRef,
    prompt_id: String,
    client: Option<String>,
    messages: Vec<Value>,
    progress: Map<String, Value>,
}

impl Run {
    // "C/none": only to the prompt's client, nothing when the prompt has none.
    fn lifecycle(&self, g: &Inner, event: &str, data: Value) {
        if let Some(c) = &self.client {
            g.send(&self.shared.counters, event, data, Some(c));
        }
    }

    // "C/all": to the client, or to everyone when the prompt has none.
    fn to_client_or_all(&self, g: &Inner, event: &str, data: Value) {
        g.send(&self.shared.counters, event, data, self.client.as_deref());
    }

    fn record(&mut self, g: &Inner, event: &str, data: Value, broadcast_without_client: bool) {
        if broadcast_without_client {
            self.to_client_or_all(g, event, data.clone());
        } else {
            self.lifecycle(g, event, data.clone());
        }
        self.messages.push(json!([event, data]));
    }

    fn set_progress(&mut self, node: &str, value: Value, max: Value, state: &str) {
        self.progress.insert(
            node.to_string(),
            json!({"value": value, "max": max, "state": state, "node_id": node, "prompt_id": self.prompt_id,
                   "display_node_id": node, "parent_node_id": null, "real_node_id": node}),
        );
    }

    fn send_progress_state(&self, g: &Inner) {
        self.to_client_or_all(
            g,
            "progress_state",
            json!({"prompt_id": self.prompt_id, "nodes": self.progress}),
        );
    }

    fn preview_frames(
        &self,
        g: &Inner,
        node: &str,
        image: &[u8],
        png: bool,
        before_progress: bool,
    ) {
        let meta = pyjson::to_string(
            &json!({"node_id": node, "prompt_id": self.prompt_id, "display_node_id": node,
            "parent_node_id": null, "real_node_id": node, "image_type": if png { "image/png" } else { "image/jpeg" }}),
        );
        let has_client = self.client.is_some();
        g.send_binary(
            &self.shared.counters,
            self.client.as_deref(),
            &|wants_meta| {
                let metadata_frame = has_client && wants_meta;
                if before_progress != metadata_frame {
                    return None;
                }
                let mut out = Vec::with_capacity(image.len() + meta.len() + 8);
                if metadata_frame {
                    out.extend_from_slice(&4u32.to_be_bytes());
                    out.extend_from_slice(&(meta.len() as u32).to_be_bytes());
                    out.extend_from_slice(meta.as_bytes());
                } else {
                    out.extend_from_slice(&1u32.to_be_bytes());
                    out.extend_from_slice(&(if png { 2u32 } else { 1u32 }).to_be_bytes());
                }
                out.extend_from_slice(image);
                Some(out)
            },
        );
    }
}

async fn run_prompt(shared: &SharedRef, item: QueueItem) {
    shared.interrupt.store(false, Ordering::SeqCst);
    let prompt = item.prompt.as_object().cloned().unwrap_or_default();
    let mut run = Run {
        shared: shared.clone(),
        prompt_id: item.prompt_id.clone(),
        client: item.client_id(),
        messages: Vec::new(),
        progress: Map::new(),
    };
    tracing::debug!(node = %shared.config.name, prompt_id = %item.prompt_id, "prompt started");
    let sigs = signatures(&prompt);
    let cached: Vec<String> = {
        let mut g = shared.lock();
        let wanted: HashSet<&String> = sigs.values().collect();
        g.cache.retain(|k, _| wanted.contains(k));
        let cached: Vec<String> = prompt
            .keys()
            .filter(|id| g.cache.contains_key(&sigs[*id]))
            .cloned()
            .collect();
        run.record(
            &g,
            "execution_start",
            json!({"prompt_id": item.prompt_id, "timestamp": now_ms()}),
            false,
        );
        run.record(
            &g,
            "execution_cached",
            json!({"nodes": cached, "prompt_id": item.prompt_id, "timestamp": now_ms()}),
            false,
        );
        cached
    };
    let cached: HashSet<String> = cached.into_iter().collect();

    let (end, ui_outputs) = execute_nodes(&mut run, &item, &prompt, &sigs, &cached).await;

    let mut g = shared.lock();
    let (status_str, completed) = match &end {
        End::Success => {
            run.record(
                &g,
                "execution_success",
                json!({"prompt_id": item.prompt_id, "timestamp": now_ms()}),
                false,
            );
            ("success", true)
        }
        End::Error(data) => {
            run.record(&g, "execution_error", data.clone(), false);
            ("error", false)
        }
        End::Interrupted(data) => {
            run.record(&g, "execution_interrupted", data.clone(), true);
            ("error", false)
        }
    };
    let (outputs, meta) = if completed {
        let mut outs = Map::new();
        let mut meta = Map::new();
        for (node, ui) in ui_outputs {
            meta.insert(node.clone(), json!({"node_id": node, "display_node": node, "parent_node": null, "real_node_id": node}));
            outs.insert(node, ui);
        }
        (outs, meta)
    } else {
        (Map::new(), Map::new())
    };
    let entry = json!({
        "prompt": item.to_json(true),
        "outputs": outputs,
        "status": {"status_str": status_str, "completed": completed, "messages": run.messages},
        "meta": meta,
    });
    // ComfyUI trims before inserting, so the history can hold cap + 1 entries.
    while g.history.len() > shared.config.history_cap {
        if let Some(first) = g.history.keys().next().cloned() {
            g.history.shift_remove(&first);
        }
    }
    g.history.insert(item.prompt_id.clone(), entry);
    g.running = None;
    g.running_node = None;
    g.broadcast_status(&shared.counters);
    run.lifecycle(
        &g,
        "executing",
        json!({"node": null, "prompt_id": item.prompt_id}),
    );
    apply_free(&mut g);
    shared
        .counters
        .prompts_finished
        .fetch_add(1, Ordering::Relaxed);
    if completed {
        shared
            .counters
            .prompts_succeeded
            .fetch_add(1, Ordering::Relaxed);
    }
    tracing::debug!(node = %shared.config.name, prompt_id = %item.prompt_id, status = status_str, "prompt finished");
}
