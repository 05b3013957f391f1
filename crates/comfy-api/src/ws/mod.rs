//! A node's WebSocket: typed events and a self-healing stream.
//!
//! [`events`] decodes single frames (text and binary) into [`WsEvent`]; [`stream`] owns the
//! connection in a background task and hands the owner [`WsItem`]s through a channel, so the
//! owner can `select!` on [`EventStream::next`] (cancel-safe) alongside its other work.

pub mod events;
pub mod stream;

pub use events::{
    Executed, Executing, ExecutionCached, ExecutionError, ExecutionInterrupted, FrameError,
    NodeProgress, PreviewMetadata, Progress, ProgressState, PromptEvent, Status, WsEvent,
};
pub use stream::{EventStream, WsConfig, WsItem};
