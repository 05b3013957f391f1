//! Errors of every call to a node, in one type.
//!
//! Problem: a coordinator must decide, per failure, whether the node is down, the request was
//! wrong, or a retry may help, and it must say which node failed. ComfyUI reports failures in
//! several incompatible ways (JSON 400 bodies, a text/plain 500 page, empty 404s, 413 text).
//!
//! Approach: one [`Error`] struct carrying the node name and an [`ErrorKind`] enum. Each kind
//! keeps the evidence (status, body excerpt, JSON path that failed to decode) and
//! [`Error::is_retryable`] / [`Error::fault`] classify it, so callers never parse messages.

use std::time::Duration;

use crate::types::prompt::PromptRejected;

/// The body text ComfyUI's aiohttp server answers with when a handler raised (bad JSON body).
pub(crate) const SERVER_TROUBLE_MARKER: &str = "Server got itself in trouble";

/// Longest body excerpt kept in an error, so a huge HTML page cannot bloat logs.
const MAX_BODY_EXCERPT: usize = 2048;

/// A failed call to one ComfyUI node.
#[derive(Debug, thiserror::Error)]
#[error("node {node}: {kind}")]
pub struct Error {
    /// Name of the node the call went to (as given to [`crate::NodeClient::new`]).
    pub node: String,
    /// What went wrong.
    pub kind: ErrorKind,
}

/// Whose fault a failure is, for retry and blame decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The node or the network to it misbehaved; another node (or later) may succeed.
    Node,
    /// The request itself was refused as invalid (bad workflow, bad parameters).
    Request,
    /// This crate or its configuration is wrong (bad URL, unexpected answer shape).
    Client,
}

/// The cause of an [`Error`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The TCP connection could not be established or broke during the exchange.
    #[error("{route}: cannot connect: {source}")]
    Connect {
        /// Route being called, e.g. `/system_stats`.
        route: String,
        /// Underlying transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The call did not finish within its deadline.
    #[error("{route}: no answer within {after:?}")]
    Timeout {
        /// Route being called.
        route: String,
        /// The deadline that passed.
        after: Duration,
    },
    /// `POST /prompt` answered 400: the workflow failed validation and was not queued.
    #[error("/prompt: workflow rejected: {0}")]
    PromptRejected(Box<PromptRejected>),
    /// The node answered its generic text/plain 500 page ("Server got itself in trouble"):
    /// in ComfyUI this means a handler raised, nearly always because the request body was not
    /// the JSON it expected.
    #[error(
        "{route}: server raised an exception (500 \"server got itself in trouble\"); usually a malformed request body"
    )]
    ServerTrouble {
        /// Route being called.
        route: String,
    },
    /// The request body exceeded the node's `--max-upload-size` (413).
    #[error("{route}: request body too large for the node (413): {message}")]
    TooLarge {
        /// Route being called.
        route: String,
        /// The node's message, e.g. `Maximum request body size N exceeded.`
        message: String,
    },
    /// `GET /models/{folder}` answered 404: the node has no such model folder.
    #[error("/models/{folder}: unknown model folder")]
    UnknownModelFolder {
        /// The folder asked for.
        folder: String,
    },
    /// The jobs API (`/api/jobs`) does not exist on this node (older than late 2025).
    #[error("{route}: the jobs api is not available on this node (404)")]
    JobsApiUnavailable {
        /// Route being called.
        route: String,
    },
    /// The jobs API does not know this job id.
    #[error("/api/jobs/{job_id}: job not found")]
    JobNotFound {
        /// The job id asked for.
        job_id: String,
    },
    /// Any other non-success HTTP status.
    #[error("{route}: http {status}: {body}")]
    Status {
        /// Route being called.
        route: String,
        /// HTTP status code.
        status: u16,
        /// Start of the body as text (at most 2 KiB, lossily decoded).
        body: String,
    },
    /// A success answer whose body does not have the documented shape.
    #[error("{route}: cannot decode answer at `{path}`: {message}")]
    Decode {
        /// Route being called.
        route: String,
        /// JSON path of the value that failed, e.g. `devices[0].vram_total` (`.` for the root).
        path: String,
        /// What was wrong.
        message: String,
    },
    /// The request could not be built (bad base URL, bad parameter).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The WebSocket failed (handshake refused, connection lost, protocol violation).
    #[error("websocket: {0}")]
    WebSocket(String),
    /// The WebSocket watchdog saw no frame (not even a pong) for too long.
    #[error("websocket: silent for {0:?} (no frame, no pong); connection presumed dead")]
    WebSocketSilent(Duration),
    /// A WebSocket frame could not be decoded; the stream carries on with the next frame.
    #[error("websocket: bad frame: {0}")]
    BadFrame(#[from] crate::ws::FrameError),
}

impl Error {
    /// Builds an error for `node` with the given kind.
    pub fn new(node: impl Into<String>, kind: ErrorKind) -> Self {
        Self {
            node: node.into(),
            kind,
        }
    }

    /// Says whether repeating the same call (on this node, later) may succeed.
    ///
    /// Transport failures, timeouts, 429/502/503/504 and WebSocket losses are retryable;
    /// rejections, decode failures and the 500 "trouble" page (caused by the request) are not.
    ///
    /// Retrying `POST /prompt` is only safe after checking `/queue` and `/history` for the
    /// prompt id: the node does not deduplicate ids.
    pub fn is_retryable(&self) -> bool {
        match &self.kind {
            ErrorKind::Connect { .. }
            | ErrorKind::Timeout { .. }
            | ErrorKind::WebSocket(_)
            | ErrorKind::WebSocketSilent(_) => true,
            ErrorKind::Status { status, .. } => matches!(status, 429 | 502 | 503 | 504),
            _ => false,
        }
    }

    /// Says whose fault the failure is.
    pub fn fault(&self) -> Fault {
        match &self.kind {
            ErrorKind::Connect { .. }
            | ErrorKind::Timeout { .. }
            | ErrorKind::WebSocket(_)
            | ErrorKind::WebSocketSilent(_)
            | ErrorKind::BadFrame(_) => Fault::Node,
            ErrorKind::Status { status, .. } if *status >= 500 => Fault::Node,
            ErrorKind::PromptRejected(_)
            | ErrorKind::TooLarge { .. }
            | ErrorKind::UnknownModelFolder { .. }
            | ErrorKind::JobNotFound { .. }
            | ErrorKind::ServerTrouble { .. }
            | ErrorKind::Status { .. } => Fault::Request,
            ErrorKind::JobsApiUnavailable { .. }
            | ErrorKind::Decode { .. }
            | ErrorKind::InvalidRequest(_) => Fault::Client,
        }
    }

    /// Returns the node's validation answer when `POST /prompt` was refused with 400.
    pub fn prompt_rejection(&self) -> Option<&PromptRejected> {
        match &self.kind {
            ErrorKind::PromptRejected(r) => Some(r),
            _ => None,
        }
    }
}

/// Cuts a body to a readable excerpt for an error message.
pub(crate) fn body_excerpt(body: &[u8]) -> String {
    let end = body.len().min(MAX_BODY_EXCERPT);
    let mut text = String::from_utf8_lossy(&body[..end]).into_owned();
    if body.len() > MAX_BODY_EXCERPT {
        text.push_str("...");
    }
    text
}
