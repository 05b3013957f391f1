//! Errors of the benchmark harness.
//!
//! A benchmark run touches many moving parts (simulated nodes, a coordinator, gRPC, files); each
//! failure names the object it concerns first, then the cause, so a failed run says where to
//! look without a backtrace.

use std::path::PathBuf;

/// Everything that can stop a benchmark run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A simulated node could not start or be read.
    #[error("simulated node {node}: {source}")]
    Sim {
        /// The node.
        node: String,
        /// Why.
        source: comfy_sim::SimError,
    },
    /// The coordinator could not start.
    #[error("coordinator: {0}")]
    Coordinator(#[from] coordinator::StartError),
    /// A gRPC connection could not be made.
    #[error("coordinator {addr}: cannot connect: {source}")]
    Connect {
        /// The address.
        addr: String,
        /// Why.
        source: tonic::transport::Error,
    },
    /// A gRPC call failed.
    #[error("{call}: {status}")]
    Rpc {
        /// What was called, naming the job or node when there is one.
        call: String,
        /// The status.
        status: Box<tonic::Status>,
    },
    /// The fleet did not become ready in time.
    #[error("fleet: {0}")]
    NotReady(String),
    /// A scenario file could not be read or is invalid.
    #[error("scenario {path}: {message}")]
    Scenario {
        /// The file (`<text>` for inline text).
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// A bad command-line or scenario value.
    #[error("invalid setting: {0}")]
    Invalid(String),
    /// Output files could not be written.
    #[error("output {path}: {source}")]
    Output {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A temporary directory could not be created.
    #[error("temporary directory: {0}")]
    TempDir(std::io::Error),
    /// A result could not be encoded as JSON.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

impl BenchError {
    /// Wraps a gRPC status with the call it answered.
    pub fn rpc(call: impl Into<String>, status: tonic::Status) -> Self {
        Self::Rpc {
            call: call.into(),
            status: Box::new(status),
        }
    }
}
