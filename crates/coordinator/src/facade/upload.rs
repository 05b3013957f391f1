//! `POST /upload/image` and the coordinator's store of uploaded input files.
//!
//! A ComfyUI client uploads an image, then names it in a `LoadImage` input. In a fleet the node
//! that will run the prompt is not known at upload time, so the coordinator keeps the file
//! (under `<data_dir>/uploads/<type>/<subfolder>/<name>`) with ComfyUI's naming rules: same
//! name and identical content is not written again, different content becomes `name (1).ext`,
//! `name (2).ext`, ... unless `overwrite`. [`UploadStore::files_for`] tells the dispatcher which
//! stored files a workflow references, to upload them to the chosen node before the prompt.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Multipart, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use comfy_api::{ImageType, UploadImage, Workflow};
use serde_json::json;

use super::view::subfolder_is_safe;
use super::{Facade, FacadeError, json, not_found, server_error};

/// Uploaded input files kept by the coordinator.
#[derive(Debug, Clone)]
pub struct UploadStore {
    root: PathBuf,
}

/// A stored upload that a workflow references.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredUpload {
    /// The workflow node that loads it.
    pub node_id: String,
    /// The name as the workflow writes it (`sub/name.png`).
    pub name: String,
    /// The file on the coordinator's disk.
    pub path: PathBuf,
}

impl StoredUpload {
    /// The node upload that makes the file available under the same name on a node.
    pub fn to_upload(&self, bytes: Bytes) -> UploadImage {
        let (subfolder, filename) = match self.name.rsplit_once('/') {
            Some((sub, file)) => (Some(sub.to_owned()), file.to_owned()),
            None => (None, self.name.clone()),
        };
        UploadImage {
            filename,
            bytes,
            subfolder,
            image_type: Some(ImageType::Input),
            overwrite: true,
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FacadeError + '_ {
    move |source| FacadeError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Longest file or folder name, in bytes, that common file systems hold (`NAME_MAX`).
const MAX_NAME_BYTES: usize = 255;

/// The answer to a multipart body that cannot be read: 413 with a plain-text body when it is
/// over the size limit (as for every other route), 400 with the reason otherwise.
fn unreadable(error: &axum::extract::multipart::MultipartError) -> Response {
    (
        error.status(),
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        error.body_text(),
    )
        .into_response()
}

/// Splits `name.ext` into (`name`, `.ext`).
fn split_ext(name: &str) -> (&str, &str) {
    match name.rfind('.') {
        Some(dot) if dot > 0 => (&name[..dot], &name[dot..]),
        _ => (name, ""),
    }
}

impl UploadStore {
    /// Opens (creating) the store rooted at `root`.
    pub fn open(root: PathBuf) -> Result<Self, FacadeError> {
        std::fs::create_dir_all(&root).map_err(io(&root))?;
        Ok(Self { root })
    }

    fn dir(&self, kind: &str, subfolder: &str) -> Option<PathBuf> {
        if !subfolder_is_safe(subfolder) {
            return None;
        }
        Some(self.root.join(kind).join(subfolder))
    }

    /// Stores `bytes` as `filename` (ComfyUI's rules); returns the name it was stored under.
    pub async fn store(
        &self,
        kind: &str,
        subfolder: &str,
        filename: &str,
        bytes: Bytes,
        overwrite: bool,
    ) -> Result<Option<String>, FacadeError> {
        let Some(dir) = self.dir(kind, subfolder) else {
            return Ok(None);
        };
        let filename = filename.rsplit(['/', '\\']).next().unwrap_or_default();
        if filename.is_empty() || filename == ".." || filename == "." {
            return Ok(None);
        }
        // A name or folder the file system cannot hold is the caller's fault (400), not ours.
        let too_long = |part: &str| part.len() > MAX_NAME_BYTES;
        if too_long(filename) || subfolder.split(['/', '\\']).any(too_long) {
            return Ok(None);
        }
        match tokio::fs::create_dir_all(&dir).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::InvalidFilename => return Ok(None),
            Err(e) => return Err(io(&dir)(e)),
        }
        let mut name = filename.to_owned();
        if !overwrite {
            let (stem, ext) = split_ext(filename);
            let mut n = 1;
            loop {
                let path = dir.join(&name);
                match tokio::fs::read(&path).await {
                    Ok(existing) if existing == bytes.as_ref() => return Ok(Some(name)),
                    Ok(_) => {
                        name = format!("{stem} ({n}){ext}");
                        n += 1;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    // `name (N).ext` can outgrow the limit the original name fit in.
                    Err(e) if e.kind() == std::io::ErrorKind::InvalidFilename => return Ok(None),
                    Err(e) => return Err(io(&path)(e)),
                }
            }
        }
        let path = dir.join(&name);
        match tokio::fs::write(&path, &bytes).await {
            Ok(()) => Ok(Some(name)),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidFilename => Ok(None),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// The stored uploads `workflow` loads (LoadImage-style inputs of the `input` directory).
    pub fn files_for(&self, workflow: &Workflow) -> Vec<StoredUpload> {
        workflow
            .input_files()
            .into_iter()
            .filter_map(|file| {
                let (sub, base) = file.name.rsplit_once('/').unwrap_or(("", &file.name));
                let path = self.dir(file.directory, sub)?.join(base);
                path.is_file().then(|| StoredUpload {
                    node_id: file.node_id,
                    name: file.name.clone(),
                    path,
                })
            })
            .collect()
    }

    /// Serves a stored input file (for `/view?type=input`).
    /// Whether the store holds `name` in `subfolder` of its inputs.
    pub(crate) async fn holds(&self, subfolder: &str, name: &str) -> bool {
        match self.dir("input", subfolder) {
            Some(dir) => tokio::fs::metadata(dir.join(name))
                .await
                .is_ok_and(|meta| meta.is_file()),
            None => false,
        }
    }

    pub(crate) async fn serve(&self, subfolder: &str, name: &str) -> Response {
        let Some(dir) = self.dir("input", subfolder) else {
            return StatusCode::FORBIDDEN.into_response();
        };
        match tokio::fs::read(dir.join(name)).await {
            Ok(bytes) => {
                let kind = match split_ext(name).1.to_ascii_lowercase().as_str() {
                    ".png" => "image/png",
                    ".jpg" | ".jpeg" => "image/jpeg",
                    ".webp" => "image/webp",
                    _ => "application/octet-stream",
                };
                (
                    [
                        (header::CONTENT_TYPE, kind.to_owned()),
                        (header::CONTENT_DISPOSITION, format!("filename=\"{name}\"")),
                    ],
                    bytes,
                )
                    .into_response()
            }
            Err(_) => not_found(),
        }
    }
}

/// `POST /upload/image`.
pub(crate) async fn post_upload_image(
    State(facade): State<Arc<Facade>>,
    mut multipart: Multipart,
) -> Response {
    let mut image: Option<(String, Bytes)> = None;
    let mut kind = "input".to_owned();
    let mut subfolder = String::new();
    let mut overwrite = false;
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(error) => return unreadable(&error),
        };
        let name = field.name().unwrap_or_default().to_owned();
        let filename = field.file_name().map(str::to_owned);
        let data = match field.bytes().await {
            Ok(data) => data,
            Err(error) => return unreadable(&error),
        };
        match name.as_str() {
            "image" => match filename {
                Some(f) if !f.is_empty() => image = Some((f, data)),
                _ => return StatusCode::BAD_REQUEST.into_response(),
            },
            "type" => kind = String::from_utf8_lossy(&data).into_owned(),
            "subfolder" => subfolder = String::from_utf8_lossy(&data).into_owned(),
            "overwrite" => {
                overwrite = matches!(&*String::from_utf8_lossy(&data), "true" | "1");
            }
            _ => {}
        }
    }
    if !matches!(kind.as_str(), "input" | "temp" | "output") {
        return server_error();
    }
    let Some((filename, bytes)) = image else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    match facade
        .uploads
        .store(&kind, &subfolder, &filename, bytes, overwrite)
        .await
    {
        Ok(Some(name)) => json(
            StatusCode::OK,
            json!({"name": name, "subfolder": subfolder, "type": kind}),
        ),
        Ok(None) => StatusCode::BAD_REQUEST.into_response(),
        Err(error) => super::internal("/upload/image", &error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn put_named(store: &UploadStore, name: &str, bytes: &Bytes) -> Option<String> {
        store
            .store("input", "", name, bytes.clone(), false)
            .await
            .expect("no internal error")
    }

    #[tokio::test]
    async fn naming_follows_comfyui() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = UploadStore::open(dir.path().join("uploads")).expect("opens");
        let a = Bytes::from_static(b"aaa");
        let b = Bytes::from_static(b"bbb");
        let put = |bytes: &Bytes, overwrite| {
            store.store("input", "sub", "x.png", bytes.clone(), overwrite)
        };
        assert_eq!(
            put(&a, false).await.expect("stores").as_deref(),
            Some("x.png")
        );
        assert_eq!(
            put(&a, false).await.expect("stores").as_deref(),
            Some("x.png"),
            "identical content is deduplicated"
        );
        assert_eq!(
            put(&b, false).await.expect("stores").as_deref(),
            Some("x (1).png")
        );
        assert_eq!(
            put(&b, true).await.expect("stores").as_deref(),
            Some("x.png"),
            "overwrite keeps the name"
        );
        assert_eq!(
            std::fs::read(dir.path().join("uploads/input/sub/x.png")).expect("file"),
            b"bbb"
        );
        assert_eq!(
            store
                .store("input", "../up", "x.png", a.clone(), false)
                .await
                .expect("runs"),
            None
        );
        let long = format!("{}.png", "n".repeat(5000));
        assert_eq!(
            store
                .store("input", "", &long, a.clone(), false)
                .await
                .expect("a name too long is refused, not an error"),
            None
        );
        assert_eq!(
            store
                .store("input", &"s".repeat(300), "x.png", a.clone(), false)
                .await
                .expect("a folder name too long is refused, not an error"),
            None
        );
        let longest = format!("{}.png", "m".repeat(MAX_NAME_BYTES - 4));
        assert_eq!(
            put_named(&store, &longest, &a).await.as_deref(),
            Some(longest.as_str())
        );
        assert_eq!(
            put_named(&store, &longest, &b).await,
            None,
            "its `(1)` variant does not fit the file system"
        );

        let workflow = Workflow::parse(r#"{"1":{"class_type":"LoadImage","inputs":{"image":"sub/x (1).png"}},"2":{"class_type":"LoadImage","inputs":{"image":"missing.png"}}}"#.as_bytes()).expect("parses");
        let files = store.files_for(&workflow);
        assert_eq!(files.len(), 1, "only stored files are listed: {files:?}");
        assert_eq!(files[0].node_id, "1");
        let upload = files[0].to_upload(b.clone());
        assert_eq!(upload.subfolder.as_deref(), Some("sub"));
        assert_eq!(upload.filename, "x (1).png");
    }
}
