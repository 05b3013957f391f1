//! Small routes: `/features`, `/upload/image`, `/free`, and the file type of `/view`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::lenient;

/// Answer of `GET /features` (and the server's `feature_flags` WebSocket reply).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Features {
    /// Whether the node can send binary preview event 4 (previews with metadata).
    #[serde(default, deserialize_with = "lenient::bool_any")]
    pub supports_preview_metadata: bool,
    /// Largest request body in bytes (int by default, float when `--max-upload-size` is set).
    #[serde(default, deserialize_with = "lenient::opt_u64_any")]
    pub max_upload_size: Option<u64>,
    /// Every other flag.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Base directory a file lives in, for `/view` and `/upload/image`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageType {
    /// The output directory (SaveImage).
    #[default]
    Output,
    /// The input directory (uploads, LoadImage).
    Input,
    /// The temp directory (PreviewImage).
    Temp,
}

impl ImageType {
    /// The wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            ImageType::Output => "output",
            ImageType::Input => "input",
            ImageType::Temp => "temp",
        }
    }
}

/// An image to send with `POST /upload/image`.
#[derive(Debug, Clone, PartialEq)]
pub struct UploadImage {
    /// File name the node stores it under (collisions are renamed `name (1).ext` unless
    /// `overwrite`).
    pub filename: String,
    /// The file bytes.
    pub bytes: bytes::Bytes,
    /// Subfolder below the base directory (created if missing).
    pub subfolder: Option<String>,
    /// Base directory; the node defaults to `input`.
    pub image_type: Option<ImageType>,
    /// Replace an existing file of that name.
    pub overwrite: bool,
}

impl UploadImage {
    /// An upload of `bytes` named `filename` into the input directory, without overwrite.
    pub fn new(filename: impl Into<String>, bytes: impl Into<bytes::Bytes>) -> Self {
        Self {
            filename: filename.into(),
            bytes: bytes.into(),
            subfolder: None,
            image_type: None,
            overwrite: false,
        }
    }
}

/// Answer of `POST /upload/image`: where the node stored the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadedImage {
    /// Stored name (may differ from the one sent, e.g. `name (1).png`).
    pub name: String,
    /// Subfolder.
    #[serde(default)]
    pub subfolder: String,
    /// Base directory.
    #[serde(rename = "type", default)]
    pub image_type: String,
    /// Other keys (newer servers may add an `asset` object).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl UploadedImage {
    /// The value to put in a LoadImage `image` input: `subfolder/name` or `name`.
    pub fn workflow_value(&self) -> String {
        if self.subfolder.is_empty() {
            self.name.clone()
        } else {
            format!("{}/{}", self.subfolder, self.name)
        }
    }
}

/// Body of `POST /free`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FreeRequest {
    /// Unload every model from the GPU.
    pub unload_models: bool,
    /// Unload models and drop the node-output cache.
    pub free_memory: bool,
}
