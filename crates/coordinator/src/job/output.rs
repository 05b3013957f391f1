//! References to the files a job produced.
//!
//! ComfyUI keeps outputs on the machine that ran the prompt and serves them from `/view` by
//! filename, subfolder and type. The coordinator stores those three values together with the
//! node that holds the bytes, so a later fetch only ever asks that node, for a file the job
//! recorded.

use serde::{Deserialize, Serialize};

/// Points at one output file of a job.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OutputRef {
    /// The workflow node id that produced the file, e.g. `"9"`.
    pub node_id: String,
    /// The file name, e.g. `ComfyUI_00001_.png`.
    pub filename: String,
    /// The subfolder under the type's folder; empty for none.
    pub subfolder: String,
    /// ComfyUI's folder type: `output`, `temp` or `input`.
    pub folder_type: String,
    /// The key the file was listed under in the history outputs: `images`, `latents`,
    /// `gifs`, `audio`, ...
    pub kind: String,
    /// The name of the fleet node whose machine holds the bytes.
    pub held_by: String,
}

/// A job's UI values other than files, per workflow node id: what a text-display node showed,
/// an animated save's `animated` flags, any other key a custom node reported. ComfyUI
/// clients read them from `/history`, so the facade gives them back.
pub type UiValues = std::collections::BTreeMap<String, serde_json::Map<String, serde_json::Value>>;
