//! `GET /view`: a file from the node that produced it, under ComfyUI's rules.
//!
//! The facade's subfolders start with the node name (see [`super::facade_subfolder`]); the
//! first segment picks the node, the rest is the node's real subfolder. ComfyUI's checks come
//! first and in its order: no `filename` 404, a ` [type]` suffix overrides `type`, empty name
//! 400, a name starting with `/` or containing `..` 400, unknown `type` 400, a subfolder that
//! escapes its base 403; only the base name is used. `type=input` files the coordinator's
//! upload store holds are served from it, whatever their subfolder; other subfolders name a
//! node first.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use comfy_api::{ImageType, ViewRequest};
use futures_util::StreamExt;
use tracing::warn;

use super::{Facade, not_found};

/// Whether `subfolder` stays inside its base directory.
pub(crate) fn subfolder_is_safe(subfolder: &str) -> bool {
    !subfolder.starts_with('/')
        && !subfolder.starts_with('\\')
        && !subfolder.split(['/', '\\']).any(|segment| segment == "..")
        && !subfolder.contains(':')
}

/// `GET /view`.
pub(crate) async fn get_view(
    State(facade): State<Arc<Facade>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(filename) = query.get("filename") else {
        return not_found();
    };
    let mut kind = query
        .get("type")
        .cloned()
        .unwrap_or_else(|| "output".into());
    let mut name = filename.as_str();
    for suffix in ["output", "input", "temp"] {
        if let Some(stripped) = name.strip_suffix(&format!(" [{suffix}]")) {
            name = stripped;
            kind = suffix.to_owned();
            break;
        }
    }
    if name.is_empty() || name.starts_with('/') || name.contains("..") {
        return StatusCode::BAD_REQUEST.into_response();
    }
    let image_type = match kind.as_str() {
        "output" => ImageType::Output,
        "input" => ImageType::Input,
        "temp" => ImageType::Temp,
        _ => return StatusCode::BAD_REQUEST.into_response(),
    };
    let subfolder = query.get("subfolder").cloned().unwrap_or_default();
    if !subfolder_is_safe(&subfolder) {
        return StatusCode::FORBIDDEN.into_response();
    }
    let base = name.rsplit('/').next().unwrap_or(name).to_owned();

    // An input uploaded to the coordinator is found under the subfolder it was uploaded to,
    // even one whose first segment happens to name a node.
    if image_type == ImageType::Input && facade.uploads.holds(&subfolder, &base).await {
        return facade.uploads.serve(&subfolder, &base).await;
    }
    let (head, rest) = match subfolder.split_once('/') {
        Some((head, rest)) => (head.to_owned(), rest.to_owned()),
        None => (subfolder.clone(), String::new()),
    };
    let Some(node) = facade.fleet.get(&head) else {
        if image_type == ImageType::Input {
            return facade.uploads.serve(&subfolder, &base).await;
        }
        return not_found();
    };
    let request = ViewRequest {
        filename: base,
        image_type: Some(image_type),
        subfolder: (!rest.is_empty()).then_some(rest),
        preview: query.get("preview").cloned(),
        channel: query.get("channel").cloned(),
    };
    match node.client.view(&request).await {
        Ok(response) => {
            let mut builder = Response::builder().status(StatusCode::OK);
            if let Some(kind) = &response.content_type {
                builder = builder.header(header::CONTENT_TYPE, kind);
            }
            if let Some(length) = response.content_length {
                builder = builder.header(header::CONTENT_LENGTH, length);
            }
            builder = builder.header(
                header::CONTENT_DISPOSITION,
                format!("filename=\"{}\"", request.filename.replace('"', "")),
            );
            let body = response
                .body
                .map(|piece| piece.map_err(|error| std::io::Error::other(error.to_string())));
            builder
                .body(Body::from_stream(body))
                .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
        }
        Err(error) => match &error.kind {
            comfy_api::ErrorKind::Status { status, .. } => {
                StatusCode::from_u16(*status).map_or_else(|_| not_found(), |s| s.into_response())
            }
            _ => {
                warn!(node = %node.spec.name, %error, "cannot read file from node");
                StatusCode::BAD_GATEWAY.into_response()
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::subfolder_is_safe;

    #[test]
    fn escaping_subfolders_are_refused() {
        assert!(subfolder_is_safe(""));
        assert!(subfolder_is_safe("gpu-1/sub/dir"));
        assert!(!subfolder_is_safe("../etc"));
        assert!(!subfolder_is_safe("gpu-1/../../x"));
        assert!(!subfolder_is_safe("/abs"));
        assert!(!subfolder_is_safe("C:\\x"));
    }
}
