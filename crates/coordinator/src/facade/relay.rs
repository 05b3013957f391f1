//! Turns a facade job's event log into the ComfyUI messages its client's socket expects.
//!
//! One task per facade job that named a `client_id`: it reads the job's [`crate::events`] log
//! from the start and publishes ComfyUI-shaped messages to that client's sockets (if none is
//! connected, they are dropped, as ComfyUI drops messages for absent sessions). Prompt ids are
//! the facade's; file references in `executed` carry the node-qualified subfolder.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tracing::debug;

use super::registry::FacadePrompt;
use super::ws::Outgoing;
use super::{Facade, rewrite_files};
use crate::events::{WatchFrom, WatchItem};
use crate::job::JobEvent;

fn millis(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// Starts relaying `prompt`'s job to `client`'s sockets.
pub(crate) fn spawn(facade: Arc<Facade>, prompt: FacadePrompt, client: String) {
    tokio::spawn(async move {
        let log = facade.hub.open(prompt.job_id);
        let mut watcher = match log.watch(WatchFrom::Oldest, true) {
            Ok(watcher) => watcher,
            Err(error) => {
                debug!(prompt_id = %prompt.prompt_id, %error, "facade relay cannot watch job");
                return;
            }
        };
        let mut translator = Translator::new(prompt.prompt_id.clone());
        while let Some(item) = watcher.next().await {
            let (event, at) = match item {
                Ok(WatchItem::Event(event)) => (event.event, event.at),
                Ok(WatchItem::Preview(event)) => (event, SystemTime::now()),
                // Missed events cannot be replayed in ComfyUI's protocol either; go on.
                Err(_) => continue,
            };
            let terminal = event.is_terminal();
            let mut out = translator.translate(&event, at);
            if terminal || matches!(*event, JobEvent::Queued { .. }) {
                let remaining = queue_remaining_of(&facade).await;
                let status = Outgoing::json(
                    "status",
                    json!({"status": {"exec_info": {"queue_remaining": remaining}}}),
                );
                // ComfyUI: the outcome, then `status`, then the final `executing`.
                let at = if terminal {
                    out.len().saturating_sub(1)
                } else {
                    out.len()
                };
                out.insert(at, status);
            }
            for message in out {
                facade.clients.publish(&client, message);
            }
            if terminal {
                break;
            }
        }
    });
}

pub(crate) async fn queue_remaining_of(facade: &Facade) -> u64 {
    facade
        .store
        .count_by_state()
        .await
        .map(|counts| {
            counts
                .iter()
                .filter(|(state, _)| !state.is_terminal())
                .map(|(_, n)| n)
                .sum()
        })
        .unwrap_or_default()
}

/// Per-job translation state.
pub(crate) struct Translator {
    prompt_id: String,
    node: Option<String>,
    executed: Vec<String>,
    current: Option<(String, Option<String>)>,
}

impl Translator {
    /// A translator for the facade prompt `prompt_id`.
    pub(crate) fn new(prompt_id: String) -> Self {
        Self {
            prompt_id,
            node: None,
            executed: Vec::new(),
            current: None,
        }
    }

    /// The ComfyUI messages for one job event.
    pub(crate) fn translate(&mut self, event: &JobEvent, at: SystemTime) -> Vec<Outgoing> {
        let id = &self.prompt_id;
        let ts = millis(at);
        match event {
            JobEvent::Queued { .. } | JobEvent::Retrying { .. } => Vec::new(),
            JobEvent::Dispatched { node, .. } => {
                self.node = Some(node.clone());
                Vec::new()
            }
            JobEvent::Started => {
                self.executed.clear();
                vec![Outgoing::json(
                    "execution_start",
                    json!({"prompt_id": id, "timestamp": ts}),
                )]
            }
            JobEvent::NodesCached { node_ids } => {
                self.executed.extend(node_ids.iter().cloned());
                vec![Outgoing::json(
                    "execution_cached",
                    json!({"nodes": node_ids, "prompt_id": id, "timestamp": ts}),
                )]
            }
            JobEvent::NodeExecuting {
                node_id,
                class_type,
                ..
            } => {
                self.current = Some((node_id.clone(), class_type.clone()));
                vec![Outgoing::json(
                    "executing",
                    json!({"node": node_id, "display_node": node_id, "prompt_id": id}),
                )]
            }
            JobEvent::Progress {
                node_id,
                value,
                max,
            } => vec![Outgoing::json(
                "progress",
                json!({"value": value, "max": max, "prompt_id": id, "node": node_id}),
            )],
            JobEvent::NodeExecuted { node_id, outputs } => {
                self.executed.push(node_id.clone());
                let mut output = outputs.clone();
                if let Some(node) = &self.node {
                    rewrite_files(&mut output, node);
                }
                vec![Outgoing::json(
                    "executed",
                    json!({"node": node_id, "display_node": node_id, "output": output, "prompt_id": id}),
                )]
            }
            JobEvent::PreviewImage {
                node_id,
                content_type,
                bytes,
            } => vec![Outgoing::Preview {
                node_id: node_id
                    .clone()
                    .or_else(|| self.current.clone().map(|c| c.0)),
                prompt_id: id.clone(),
                content_type: content_type.clone(),
                bytes: bytes.clone(),
            }],
            JobEvent::Succeeded { .. } => vec![
                Outgoing::json(
                    "execution_success",
                    json!({"prompt_id": id, "timestamp": ts}),
                ),
                self.final_executing(),
            ],
            JobEvent::Failed { failure, .. } => {
                let (node_id, node_type, message, kind, traceback) = match &failure.node_error {
                    Some(e) => (
                        json!(e.node_id),
                        json!(e.class_type),
                        e.exception_message.clone(),
                        e.exception_type.clone(),
                        e.traceback.clone(),
                    ),
                    None => (
                        self.current_node(),
                        self.current_class(),
                        format!("{}\n", failure.message),
                        failure.class.as_str().to_owned(),
                        Vec::new(),
                    ),
                };
                vec![
                    Outgoing::json(
                        "execution_error",
                        json!({
                            "prompt_id": id, "node_id": node_id, "node_type": node_type,
                            "executed": self.executed, "exception_message": message,
                            "exception_type": kind, "traceback": traceback,
                            "current_inputs": {}, "current_outputs": [], "timestamp": ts
                        }),
                    ),
                    self.final_executing(),
                ]
            }
            JobEvent::Cancelled { .. } => vec![
                Outgoing::json(
                    "execution_interrupted",
                    json!({
                        "prompt_id": id, "node_id": self.current_node(),
                        "node_type": self.current_class(), "executed": self.executed,
                        "timestamp": ts
                    }),
                ),
                self.final_executing(),
            ],
        }
    }

    fn current_node(&self) -> Value {
        self.current
            .as_ref()
            .map(|c| json!(c.0))
            .unwrap_or(Value::Null)
    }

    fn current_class(&self) -> Value {
        self.current
            .as_ref()
            .and_then(|c| c.1.clone())
            .map(Value::String)
            .unwrap_or(Value::Null)
    }

    fn final_executing(&self) -> Outgoing {
        Outgoing::json(
            "executing",
            json!({"node": null, "prompt_id": self.prompt_id}),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::OutputRef;

    fn kinds(messages: &[Outgoing]) -> Vec<String> {
        messages
            .iter()
            .map(|m| match m {
                Outgoing::Json { kind, .. } => kind.clone(),
                Outgoing::Preview { .. } => "preview".into(),
            })
            .collect()
    }

    #[test]
    fn a_successful_job_becomes_comfyui_messages_with_the_facade_prompt_id() {
        let mut t = Translator::new("mine-1".into());
        let now = SystemTime::now();
        let events = [
            JobEvent::Queued { position: 0 },
            JobEvent::Dispatched {
                node: "gpu-2".into(),
                prompt_id: uuid::Uuid::new_v4(),
                attempt: 1,
            },
            JobEvent::Started,
            JobEvent::NodesCached { node_ids: vec![] },
            JobEvent::NodeExecuting {
                node_id: "9".into(),
                class_type: Some("SaveImage".into()),
                title: None,
            },
            JobEvent::NodeExecuted {
                node_id: "9".into(),
                outputs: json!({"images": [{"filename": "a.png", "subfolder": "", "type": "output"}]}),
            },
            JobEvent::Succeeded {
                outputs: vec![OutputRef {
                    node_id: "9".into(),
                    filename: "a.png".into(),
                    subfolder: String::new(),
                    folder_type: "output".into(),
                    kind: "images".into(),
                    held_by: "gpu-2".into(),
                }],
                ui_values: Default::default(),
            },
        ];
        let out: Vec<Outgoing> = events.iter().flat_map(|e| t.translate(e, now)).collect();
        assert_eq!(
            kinds(&out),
            [
                "execution_start",
                "execution_cached",
                "executing",
                "executed",
                "execution_success",
                "executing"
            ]
        );
        let Outgoing::Json { text, .. } = &out[3] else {
            panic!("executed is json")
        };
        let executed: Value = serde_json::from_str(text).expect("json");
        assert_eq!(executed["data"]["prompt_id"], "mine-1");
        assert_eq!(
            executed["data"]["output"]["images"][0]["subfolder"],
            "gpu-2"
        );
        let Outgoing::Json { text, .. } = &out[5] else {
            panic!("executing is json")
        };
        let last: Value = serde_json::from_str(text).expect("json");
        assert_eq!(last["data"], json!({"node": null, "prompt_id": "mine-1"}));
    }
}
