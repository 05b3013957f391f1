//! Typed wire types and an async client for one ComfyUI node.
//!
//! Problem: ComfyUI speaks loosely typed JSON (numbers that are sometimes ints and sometimes
//! floats, positional arrays, node-defined output dicts) over HTTP and a WebSocket, and its
//! failure modes (a plain-text 500 page, a 400 with structured validation errors, silent
//! sockets) are easy to mishandle. This crate is the only place in comfyfleet that touches that
//! raw JSON; everything else sees the types below.
//!
//! Approach:
//! * [`types`] decodes every route and message of ComfyUI 0.3.64 (and the newer jobs API)
//!   leniently: unknown keys are kept, numbers accept either form, node-defined shapes stay raw
//!   where they cannot be known.
//! * [`NodeClient`] is a cheap-to-clone async HTTP client for one node; every call has a
//!   timeout and every failure is an [`Error`] naming the node and classifying the cause.
//! * [`ws::EventStream`] owns the node's WebSocket in a background task, decodes text and binary
//!   frames into [`ws::WsEvent`], watches for silence and reconnects safely.
//! * [`workflow::Workflow`] keeps a submitted API-format workflow byte for byte while offering a
//!   parsed view for checks and analysis (models, input files, cost).

pub mod client;
pub mod error;
mod lenient;
pub mod types;
pub mod workflow;
pub mod ws;

pub use client::{ClientConfig, NodeClient, ViewRequest, ViewResponse};
pub use error::{Error, ErrorKind};
pub use types::*;
pub use workflow::{Envelope, Workflow, WorkflowError};
