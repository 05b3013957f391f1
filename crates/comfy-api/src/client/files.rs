//! File transfer with a node: `GET /view` (streamed download) and `POST /upload/image`.
//!
//! `/view` bodies can be large videos, so they are streamed: the call's deadline covers the
//! headers and each body chunk gets its own idle deadline. Query values are percent-encoded
//! strictly (space as `%20`, never `+`), so names such as `5 (2).png` or CJK names reach the
//! node exactly.

use std::pin::Pin;

use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::Method;
use reqwest::multipart::{Form, Part};

use super::{NodeClient, classify};
use crate::error::{Error, ErrorKind};
use crate::types::{FileRef, ImageType, UploadImage, UploadedImage};

/// Characters escaped in a query value: everything but RFC 3986 unreserved characters.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Parameters of `GET /view`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ViewRequest {
    /// File name (only the base name is used by the node; put directories in `subfolder`).
    pub filename: String,
    /// Base directory; the node defaults to `output`.
    pub image_type: Option<ImageType>,
    /// Subfolder below the base directory.
    pub subfolder: Option<String>,
    /// Re-encode as a preview: `webp;Q` or `jpeg;Q`.
    pub preview: Option<String>,
    /// `rgba` (default), `rgb` or `a`.
    pub channel: Option<String>,
}

impl ViewRequest {
    /// A request for the file `file` of a history or `executed` output.
    pub fn from_file(file: &FileRef) -> Self {
        let image_type = match file.file_type.as_str() {
            "input" => Some(ImageType::Input),
            "temp" => Some(ImageType::Temp),
            _ => Some(ImageType::Output),
        };
        let subfolder = (!file.subfolder.is_empty()).then(|| file.subfolder.clone());
        Self {
            filename: file.filename.clone(),
            image_type,
            subfolder,
            ..Self::default()
        }
    }

    /// Renders the query string, strictly percent-encoded.
    pub fn query_string(&self) -> String {
        let mut pairs: Vec<(&str, &str)> = vec![("filename", &self.filename)];
        if let Some(t) = &self.image_type {
            pairs.push(("type", t.as_str()));
        }
        if let Some(s) = &self.subfolder {
            pairs.push(("subfolder", s));
        }
        if let Some(p) = &self.preview {
            pairs.push(("preview", p));
        }
        if let Some(c) = &self.channel {
            pairs.push(("channel", c));
        }
        pairs
            .iter()
            .map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, QUERY_VALUE)))
            .collect::<Vec<_>>()
            .join("&")
    }
}

/// A streamed `/view` answer.
pub struct ViewResponse {
    /// `Content-Type` of the file (guessed by the node from the extension).
    pub content_type: Option<String>,
    /// `Content-Length`, when sent.
    pub content_length: Option<u64>,
    /// The body.
    pub body: Pin<Box<dyn Stream<Item = Result<Bytes, Error>> + Send>>,
}

impl std::fmt::Debug for ViewResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewResponse")
            .field("content_type", &self.content_type)
            .field("content_length", &self.content_length)
            .finish_non_exhaustive()
    }
}

impl ViewResponse {
    /// Reads the whole body into memory.
    pub async fn bytes(self) -> Result<Bytes, Error> {
        let chunks: Vec<Bytes> = self.body.try_collect().await?;
        Ok(chunks.concat().into())
    }
}

impl NodeClient {
    /// `GET /view`: streams a file from the node. A missing file is a 404
    /// [`ErrorKind::Status`]; a bad name or type a 400, a subfolder escape a 403.
    pub async fn view(&self, request: &ViewRequest) -> Result<ViewResponse, Error> {
        let route = "/view";
        let mut url = self.url(route)?;
        url.set_query(Some(&request.query_string()));
        let resp = self.send(route, self.request(Method::GET, url)).await?;
        let status = resp.status();
        if !status.is_success() {
            let body = self.read_body(route, resp).await?;
            return Err(self.err(classify(route, status, &body)));
        }
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let content_length = resp.content_length();

        // NOTE: the per-call timeout set on the request also bounds reading the body, so very
        // large files need a larger `request_timeout`; the idle timeout below catches stalls
        // earlier.
        let idle = self.inner.config.stream_idle_timeout;
        let client = self.clone();
        let body = futures_util::stream::unfold(Some(resp), move |state| {
            let client = client.clone();
            async move {
                let mut resp = state?;
                match tokio::time::timeout(idle, resp.chunk()).await {
                    Ok(Ok(Some(chunk))) => Some((Ok(chunk), Some(resp))),
                    Ok(Ok(None)) => None,
                    Ok(Err(e)) => Some((Err(client.transport_error(route, e)), None)),
                    Err(_) => Some((
                        Err(client.err(ErrorKind::Timeout {
                            route: route.into(),
                            after: idle,
                        })),
                        None,
                    )),
                }
            }
        })
        .boxed();
        Ok(ViewResponse {
            content_type,
            content_length,
            body,
        })
    }

    /// `POST /upload/image` (multipart): stores an image on the node and says under which
    /// name (same content under the same name is deduplicated; different content is renamed
    /// `name (1).ext` unless `overwrite`).
    pub async fn upload_image(&self, upload: &UploadImage) -> Result<UploadedImage, Error> {
        let route = "/upload/image";
        let mime = mime_for(&upload.filename);
        let part = Part::stream_with_length(upload.bytes.clone(), upload.bytes.len() as u64)
            .file_name(upload.filename.clone())
            .mime_str(mime)
            .map_err(|e| self.err(ErrorKind::InvalidRequest(format!("{route}: {e}"))))?;
        let mut form = Form::new().part("image", part);
        if let Some(t) = upload.image_type {
            form = form.text("type", t.as_str());
        }
        if let Some(s) = &upload.subfolder {
            form = form.text("subfolder", s.clone());
        }
        form = form.text("overwrite", if upload.overwrite { "true" } else { "false" });
        let req = self.request(Method::POST, self.url(route)?).multipart(form);
        self.call_json(route, req).await
    }
}

fn mime_for(filename: &str) -> &'static str {
    let ext = filename
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "bmp" => "image/bmp",
        "tif" | "tiff" => "image/tiff",
        _ => "application/octet-stream",
    }
}
