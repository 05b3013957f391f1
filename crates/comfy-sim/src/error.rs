//! Errors of the emulator library.
//!
//! Only setup can fail (binding a port, reading a config, creating the file store); once a node
//! runs, every bad request is answered the way ComfyUI answers it instead of surfacing here.

use std::net::SocketAddr;

/// What can go wrong while configuring or starting a simulated node.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The listening socket could not be bound.
    #[error("node {name}: cannot listen on {addr}: {source}")]
    Bind {
        /// Node name from the configuration.
        name: String,
        /// Requested address.
        addr: SocketAddr,
        /// Underlying I/O error.
        source: std::io::Error,
    },
    /// The per-node file store (input/output/temp folders) could not be prepared.
    #[error("node {name}: cannot prepare file store {path}: {source}")]
    Store {
        /// Node name from the configuration.
        name: String,
        /// Folder that failed.
        path: String,
        /// Underlying I/O error.
        source: std::io::Error,
    },
    /// The configuration is invalid.
    #[error("node {name}: invalid configuration: {reason}")]
    Config {
        /// Node name (or `fleet`).
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A TOML configuration file could not be read or parsed.
    #[error("config {path}: {reason}")]
    ConfigFile {
        /// File path.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The embedded node catalogue could not be decoded.
    #[error("node catalogue: {0}")]
    Catalogue(String),
    /// The node is not running (crashed or shut down) and the operation needs it.
    #[error("node {name}: not running")]
    NotRunning {
        /// Node name.
        name: String,
    },
}
