//! Helper tasks of the manager: the I/O it must not wait for.
//!
//! Each talks to one node (POST a prompt, read a history entry, reconcile a prompt, cancel
//! one, free VRAM) and reports the outcome back to the manager as a message. None of them
//! changes a job itself.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use comfy_api::{ErrorKind, FreeRequest, PromptRequest};
use serde_json::value::RawValue;
use tracing::{Instrument, debug, warn};
use uuid::Uuid;

use super::outcome::{self, AttemptEnd};
use crate::facade::UploadStore;
use crate::fleet::Node;
use crate::job::{Failure, FailureClass, JobId, PromptExtras};

/// Why a POST /prompt did not queue the prompt.
#[derive(Debug, thiserror::Error)]
pub enum PostError {
    /// The node validated the workflow and refused it (HTTP 400).
    #[error("the node refused the workflow")]
    Rejected(Box<Failure>),
    /// The node is no longer in the fleet.
    #[error("the node left the fleet")]
    NodeGone,
    /// The journal refused to record the attempt, so the prompt was not posted.
    #[error("the journal refused to record the attempt; the prompt was not posted")]
    Unrecorded,
    /// The attempt ended (or the job moved on) before its prompt was posted, so it was not.
    #[error("the attempt ended before its prompt was posted")]
    Superseded,
    /// The request failed; `sent` says whether it may have reached the node.
    #[error("{error}")]
    Transport {
        /// The client error.
        error: comfy_api::Error,
        /// Whether the node may have received the prompt.
        maybe_received: bool,
    },
}

impl PostError {
    /// Whether the node certainly did not queue the prompt, so another POST is safe.
    pub fn certainly_not_received(&self) -> bool {
        match self {
            Self::Rejected(_) | Self::NodeGone | Self::Unrecorded | Self::Superseded => true,
            Self::Transport { maybe_received, .. } => !maybe_received,
        }
    }
}

/// Where helper tasks report the end of an attempt.
#[derive(Clone)]
pub struct Reply(Arc<dyn Fn(JobId, Uuid, String, AttemptEnd) + Send + Sync>);

impl Reply {
    /// Wraps the manager's sender.
    pub fn new(send: impl Fn(JobId, Uuid, String, AttemptEnd) + Send + Sync + 'static) -> Self {
        Self(Arc::new(send))
    }

    fn send(&self, id: JobId, prompt_id: Uuid, node: &Node, end: AttemptEnd) {
        (self.0)(id, prompt_id, node.spec.name.clone(), end);
    }
}

/// POSTs the workflow bytes as received, with what the client sent beside them, our client id
/// and the prompt id we recorded.
pub async fn post_prompt(
    node: &Node,
    workflow: &Bytes,
    extras: Option<&PromptExtras>,
    prompt_id: Uuid,
    uploads: Option<&UploadStore>,
) -> Result<(), PostError> {
    if let Some(uploads) = uploads {
        upload_inputs(node, workflow, uploads).await?;
    }
    let text = std::str::from_utf8(workflow).map_err(|_| {
        PostError::Rejected(Box::new(Failure::new(
            FailureClass::Validation,
            "workflow is not UTF-8",
        )))
    })?;
    let raw = RawValue::from_string(text.to_owned()).map_err(|error| {
        PostError::Rejected(Box::new(Failure::new(
            FailureClass::Validation,
            format!("workflow is not JSON: {error}"),
        )))
    })?;
    let mut request = PromptRequest::from_raw(raw);
    request.client_id = Some(node.client_id.clone());
    request.prompt_id = Some(prompt_id.to_string());
    if let Some(extras) = extras {
        if !extras.extra_data.is_empty() {
            request.extra_data = Some(extras.extra_data.clone());
        }
        request.partial_execution_targets = extras.partial_execution_targets.clone();
    }
    match node.client.prompt(&request).await {
        Ok(_accepted) => Ok(()),
        Err(error) => {
            if let Some(rejection) = error.prompt_rejection() {
                let mut failure = Failure::new(
                    FailureClass::Validation,
                    format!(
                        "node {} refused the workflow: {}",
                        node.spec.name, rejection.error.message
                    ),
                );
                failure.details = serde_json::to_value(rejection).ok();
                return Err(PostError::Rejected(Box::new(failure)));
            }
            // A refused connection never reached the node; a timeout or a broken
            // connection may have.
            let maybe_received =
                !matches!(&error.kind, ErrorKind::Connect { source, .. } if source.is_connect());
            Err(PostError::Transport {
                error,
                maybe_received,
            })
        }
    }
}

/// Copies the coordinator-held input files a workflow loads to the node, under the names the
/// workflow uses, before the prompt that needs them is posted.
async fn upload_inputs(
    node: &Node,
    workflow: &Bytes,
    uploads: &UploadStore,
) -> Result<(), PostError> {
    let Ok(parsed) = comfy_api::Workflow::parse(workflow) else {
        return Ok(());
    };
    for file in uploads.files_for(&parsed) {
        let bytes = tokio::fs::read(&file.path).await.map_err(|error| {
            PostError::Rejected(Box::new(Failure::new(
                FailureClass::Coordinator,
                format!("cannot read uploaded input {}: {error}", file.name),
            )))
        })?;
        node.client
            .upload_image(&file.to_upload(bytes.into()))
            .await
            .map_err(|error| PostError::Transport {
                error,
                maybe_received: false,
            })?;
        debug!(node = %node.spec.name, file = %file.name, "uploaded an input file before the prompt");
    }
    Ok(())
}

/// Reads the history entry of a finished prompt and reports the attempt's end.
pub fn spawn_read_history(node: Arc<Node>, id: JobId, prompt_id: Uuid, reply: Reply) {
    tokio::spawn(
        async move {
            // History is written before the final `executing`, so one read normally suffices;
            // retry briefly in case the node is slow to answer.
            for attempt in 0..5u32 {
                match node.client.history_entry(&prompt_id.to_string()).await {
                    Ok(Some(entry)) => {
                        let end = outcome::from_history(&entry, &node.spec.name);
                        reply.send(id, prompt_id, &node, end);
                        return;
                    }
                    Ok(None) => {
                        // Not written yet (or never will be): fall back to reconciling.
                        break;
                    }
                    Err(error) => {
                        debug!(%error, attempt, "history read failed");
                        tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                    }
                }
            }
            reconcile(&node, id, prompt_id, &reply).await;
        }
        .in_current_span(),
    );
}

/// Checks a prompt over HTTP and reports its end if it has ended.
pub fn spawn_reconcile(node: Arc<Node>, id: JobId, prompt_id: Uuid, reply: Reply) {
    tokio::spawn(async move { reconcile(&node, id, prompt_id, &reply).await }.in_current_span());
}

/// `/queue` first, then `/history` (in that order, so a prompt that finishes between the two
/// reads is not taken for lost).
async fn reconcile(node: &Node, id: JobId, prompt_id: Uuid, reply: &Reply) {
    let key = prompt_id.to_string();
    let queue = match node.client.queue().await {
        Ok(queue) => queue,
        Err(error) => {
            debug!(%error, "reconcile: queue read failed; the node actor will retry");
            return;
        }
    };
    if queue
        .running
        .iter()
        .chain(queue.pending.iter())
        .any(|item| item.prompt_id == key)
    {
        // Still there: its events will come (or the next reconcile will catch them).
        return;
    }
    match node.client.history_entry(&key).await {
        Ok(Some(entry)) => reply.send(
            id,
            prompt_id,
            node,
            outcome::from_history(&entry, &node.spec.name),
        ),
        Ok(None) => reply.send(id, prompt_id, node, AttemptEnd::Vanished),
        Err(error) => debug!(%error, "reconcile: history read failed"),
    }
}

/// Deletes the prompt from the node's queue and interrupts it if it runs, then reconciles.
/// Targeted by prompt id, so no other prompt on the node is touched.
pub fn spawn_cancel_on_node(node: Arc<Node>, id: JobId, prompt_id: Uuid, reply: Reply) {
    tokio::spawn(
        async move {
            let key = prompt_id.to_string();
            if let Err(error) = node.client.queue_delete(&[key.as_str()]).await {
                warn!(%error, "cancel: queue delete failed");
            }
            if let Err(error) = node.client.interrupt_prompt(&key).await {
                warn!(%error, "cancel: interrupt failed");
            }
            // A prompt deleted while pending sends no event at all: find out over HTTP.
            tokio::time::sleep(Duration::from_millis(50)).await;
            reconcile(&node, id, prompt_id, &reply).await;
        }
        .in_current_span(),
    );
}

/// Asks a node to unload its models after an out-of-memory error.
pub fn spawn_free(node: Arc<Node>) {
    tokio::spawn(
        async move {
            let request = FreeRequest {
                unload_models: true,
                free_memory: false,
            };
            if let Err(error) = node.client.free(request).await {
                debug!(%error, "free after out of memory failed");
            }
        }
        .in_current_span(),
    );
}
