//! Wire types for every ComfyUI HTTP route the fleet uses.
//!
//! Problem: ComfyUI answers are Python dicts serialised as JSON, with positional arrays,
//! int-or-float numbers and node-defined shapes. Approach: one module per area, each type
//! decoding leniently (unknown keys kept in `extra`, numbers in either form) and exposing
//! helpers for the questions a coordinator asks (is this node a GPU node, what is pending, did
//! this prompt succeed).

pub mod history;
pub mod jobs;
pub mod misc;
pub mod object_info;
pub mod probe;
pub mod prompt;
pub mod queue;
pub mod stats;

pub use history::{FileRef, History, HistoryEntry, HistoryStatus, NodeOutput, Outcome};
pub use jobs::{Job, JobList, JobStatus, JobsQuery, Pagination};
pub use misc::{Features, FreeRequest, ImageType, UploadImage, UploadedImage};
pub use object_info::{InputKind, InputSpec, NodeInfo, NodeInputs, ObjectInfo};
pub use probe::{DeviceSummary, QueueSummary, StatsSummary};
pub use prompt::{
    ExecInfo, NodeError, PromptAccepted, PromptError, PromptInfo, PromptRejected, PromptRequest,
};
pub use queue::{QueueItem, QueueState};
pub use stats::{Device, SystemInfo, SystemStats};
