//! Shared helpers of the crate's integration tests: locating the read-only shared folder
//! (captures and workflows) and loading its files.

#![allow(dead_code)]

use std::path::PathBuf;

use serde_json::Value;

/// The shared folder: `COMFYFLEET_SHARED_DIR`, else `<workspace>/../shared`. Panics (fails the
/// test) with a clear message when it is missing: these tests must not pass vacuously.
pub fn shared_dir() -> PathBuf {
    let dir = std::env::var_os("COMFYFLEET_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared")));
    assert!(
        dir.join("comfyui-captures").is_dir() && dir.join("workflows").is_dir(),
        "shared test data not found at {} (set COMFYFLEET_SHARED_DIR to the folder holding \
         comfyui-captures/ and workflows/)",
        dir.display()
    );
    dir
}

/// Path of a capture file.
pub fn capture_path(name: &str) -> PathBuf {
    shared_dir().join("comfyui-captures").join(name)
}

/// A capture file parsed as JSON.
pub fn capture(name: &str) -> Value {
    let path = capture_path(name);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

/// Sorted file names in a capture or workflow subfolder with the given prefix and suffix.
pub fn list(sub: &str, prefix: &str, suffix: &str) -> Vec<String> {
    let dir = shared_dir().join(sub);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix) && n.ends_with(suffix))
        .collect();
    names.sort();
    names
}

/// Bytes of a file in the workflows folder.
pub fn workflow_bytes(rel: &str) -> Vec<u8> {
    let path = shared_dir().join("workflows").join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The request path of an HTTP capture without query and without the `/api` prefix.
pub fn route_of(record: &Value) -> (String, String) {
    let method = record["request"]["method"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let path = record["request"]["path"].as_str().unwrap_or_default();
    let path = path.split('?').next().unwrap_or_default();
    let path = path.strip_prefix("/api").unwrap_or(path);
    (method, path.to_owned())
}
