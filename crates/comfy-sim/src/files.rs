//! `/view` and `/upload/image`, with ComfyUI's path rules.
//!
//! `/view` checks in ComfyUI's order: missing filename 404, `name [type]` annotation, empty name
//! 400, absolute or `..` name 400, unknown type 400, subfolder escaping its base 403, basename
//! only, missing file 404. `preview=` re-encodes to JPEG or WebP, `channel=` extracts RGB or
//! alpha. Uploads dedupe identical content by sha256 and otherwise rename to `name (1).ext`.

use std::path::{Component, Path, PathBuf};

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::http::{AppState, json_resp, read_body, server_error};
use crate::images;
use crate::state::SharedRef;

/// Splits a ` [input]`/` [output]`/` [temp]` annotation off a file name.
pub fn annotated(name: &str) -> (&str, Option<&'static str>) {
    for (suffix, kind) in [
        ("[output]", "output"),
        ("[input]", "input"),
        ("[temp]", "temp"),
    ] {
        if name.ends_with(suffix) {
            let cut = name.len().saturating_sub(suffix.len() + 1);
            return (name.get(..cut).unwrap_or(""), Some(kind));
        }
    }
    (name, None)
}

fn dir_of(shared: &SharedRef, kind: &str) -> Option<PathBuf> {
    match kind {
        "input" => Some(shared.dirs.input.clone()),
        "output" => Some(shared.dirs.output.clone()),
        "temp" => Some(shared.dirs.temp.clone()),
        _ => None,
    }
}

/// Whether an annotated input file exists (LoadImage validation).
pub fn annotated_input_exists(shared: &SharedRef, name: &str) -> bool {
    let (file, kind) = annotated(name);
    let Some(base) = dir_of(shared, kind.unwrap_or("input")) else {
        return false;
    };
    inside(&base, file).is_some_and(|p| p.is_file())
}

// Joins `rel` to `base` lexically, refusing results outside `base`.
fn inside(base: &Path, rel: &str) -> Option<PathBuf> {
    let mut parts: Vec<String> = Vec::new();
    for c in Path::new(rel).components() {
        match c {
            Component::Normal(p) => parts.push(p.to_string_lossy().to_string()),
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::CurDir => {}
            _ => return None,
        }
    }
    let mut out = base.to_path_buf();
    out.extend(parts);
    Some(out)
}

fn empty(status: StatusCode) -> Response {
    status.into_response()
}

/// GET /view.
pub async fn view(State(st): State<AppState>, Query(q): Query<Vec<(String, String)>>) -> Response {
    let shared = &st.shared;
    let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let Some(raw) = get("filename") else {
        return empty(StatusCode::NOT_FOUND);
    };
    let (name, annotated_kind) = annotated(&raw);
    if name.is_empty() {
        return empty(StatusCode::BAD_REQUEST);
    }
    if name.starts_with('/') || name.contains("..") {
        return empty(StatusCode::BAD_REQUEST);
    }
    let kind = annotated_kind
        .map(String::from)
        .unwrap_or_else(|| get("type").unwrap_or_else(|| "output".into()));
    let Some(mut dir) = dir_of(shared, &kind) else {
        return empty(StatusCode::BAD_REQUEST);
    };
    if let Some(sub) = get("subfolder") {
        match inside(&dir, &sub) {
            Some(d) => dir = d,
            None => return empty(StatusCode::FORBIDDEN),
        }
    }
    let base = Path::new(name)
        .file_name()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    let path = dir.join(&base);
    let Ok(bytes) = std::fs::read(&path) else {
        return empty(StatusCode::NOT_FOUND);
    };
    if !path.is_file() {
        return empty(StatusCode::NOT_FOUND);
    }
    let disposition = format!("filename=\"{base}\"");
    let channel = get("channel").unwrap_or_else(|| "rgba".into());

    if let Some(preview) = get("preview") {
        let parts: Vec<&str> = preview.split(';').collect();
        let mut format = parts.first().copied().unwrap_or("webp");
        // ComfyUI looks at the raw parameter here (absent = ""), not the rgba default.
        if !matches!(format, "webp" | "jpeg") || get("channel").unwrap_or_default().contains('a') {
            format = "webp";
        }
        let quality = parts
            .last()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<u8>().ok())
            .unwrap_or(90);
        let Some((w, h, rgba)) = images::decode_png(&bytes) else {
            return server_error();
        };
        let body = if format == "jpeg" {
            images::jpeg(w, h, &rgba, quality)
        } else {
            images::webp(w, h, &rgba)
        };
        return (
            StatusCode::OK,
            [
                (header::CONTENT_DISPOSITION, disposition),
                (header::CONTENT_TYPE, format!("image/{format}")),
            ],
            body,
        )
            .into_response();
    }
    if channel == "rgb" || channel == "a" {
        let Some((w, h, rgba)) = images::decode_png(&bytes) else {
            return server_error();
        };
        let body = if channel == "rgb" {
            images::png(w, h, &rgba, true, &[])
        } else {
            let alpha: Vec<u8> = rgba.chunks(4).flat_map(|p| [0, 0, 0, p[3]]).collect();
            images::png(w, h, &alpha, false, &[])
        };
        return (
            StatusCode::OK,
            [
                (header::CONTENT_DISPOSITION, disposition),
                (header::CONTENT_TYPE, "image/png".to_string()),
            ],
            body,
        )
            .into_response();
    }
    let mut content_type = mime_guess::from_path(&base)
        .first_raw()
        .unwrap_or("application/octet-stream")
        .to_string();
    if [
        "text/html",
        "text/javascript",
        "application/javascript",
        "text/css",
        "application/xhtml+xml",
    ]
    .contains(&content_type.as_str())
    {
        content_type = "application/octet-stream".into();
    }
    let meta = std::fs::metadata(&path).ok();
    let mtime = meta
        .as_ref()
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .unwrap_or_default();
    let etag = format!("\"{:x}-{:x}\"", mtime.as_nanos(), bytes.len());
    (
        StatusCode::OK,
        [
            (header::CONTENT_DISPOSITION, disposition),
            (header::CONTENT_TYPE, content_type),
            (header::ETAG, etag),
            (header::LAST_MODIFIED, http_date(mtime.as_secs())),
        ],
        bytes,
    )
        .into_response()
}

/// Formats seconds since the epoch as an RFC 7231 date.
pub fn http_date(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil-from-days (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days.rem_euclid(7)) as usize];
    let mon = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(month - 1) as usize];
    format!("{weekday}, {d:02} {mon} {year} {h:02}:{m:02}:{s:02} GMT")
}

// aiohttp's `request.post()` reads an urlencoded (or untyped) body as a form and any other
// body as an empty form. Without an `image` field ComfyUI answers 400; an `image` that is plain
// text has no `.file` and the handler raises (500).
fn non_multipart_upload(content_type: &str, body: &[u8]) -> Response {
    let form =
        content_type.is_empty() || content_type.starts_with("application/x-www-form-urlencoded");
    let has_image = form
        && body
            .split(|b| *b == b'&')
            .any(|pair| pair.split(|b| *b == b'=').next() == Some(b"image".as_slice()));
    if has_image {
        server_error()
    } else {
        empty(StatusCode::BAD_REQUEST)
    }
}

/// POST /upload/image.
pub async fn upload_image(State(st): State<AppState>, req: Request) -> Response {
    let shared = &st.shared;
    let (parts, body) = req.into_parts();
    let bytes = match read_body(shared, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if !content_type.starts_with("multipart/form-data") {
        return non_multipart_upload(&content_type, &bytes);
    }
    let rebuilt = Request::from_parts(parts, Body::from(bytes));
    let Ok(mut multipart) = Multipart::from_request(rebuilt, &()).await else {
        return server_error();
    };
    let (mut image, mut overwrite, mut subfolder, mut kind) = (None, None, String::new(), None);
    loop {
        match multipart.next_field().await {
            Ok(Some(field)) => {
                let name = field.name().unwrap_or("").to_string();
                let file_name = field.file_name().map(String::from);
                let Ok(data) = field.bytes().await else {
                    return server_error();
                };
                match name.as_str() {
                    "image" => image = Some((file_name, data)),
                    "overwrite" => overwrite = Some(String::from_utf8_lossy(&data).to_string()),
                    "subfolder" => subfolder = String::from_utf8_lossy(&data).to_string(),
                    "type" => kind = Some(String::from_utf8_lossy(&data).to_string()),
                    _ => {}
                }
            }
            Ok(None) => break,
            Err(_) => return server_error(),
        }
    }
    let kind = kind.unwrap_or_else(|| "input".into());
    let Some(base) = dir_of(shared, &kind) else {
        return server_error();
    };
    let Some((Some(file_name), data)) = image else {
        return empty(StatusCode::BAD_REQUEST);
    };
    if file_name.is_empty() {
        return empty(StatusCode::BAD_REQUEST);
    }
    let Some(folder) = inside(&base, &subfolder) else {
        return empty(StatusCode::BAD_REQUEST);
    };
    let Some(mut path) = inside(&folder, &file_name) else {
        return empty(StatusCode::BAD_REQUEST);
    };
    if std::fs::create_dir_all(path.parent().unwrap_or(&folder)).is_err() {
        return server_error();
    }
    let mut name = file_name.clone();
    let mut duplicate = false;
    if !matches!(overwrite.as_deref(), Some("true") | Some("1")) {
        let (stem, ext) = match file_name.rfind('.') {
            Some(i) if i > 0 => (&file_name[..i], &file_name[i..]),
            _ => (file_name.as_str(), ""),
        };
        let digest = Sha256::digest(&data);
        let mut i = 1;
        while path.exists() {
            if std::fs::read(&path).is_ok_and(|existing| Sha256::digest(existing) == digest) {
                duplicate = true;
                break;
            }
            name = format!("{stem} ({i}){ext}");
            path = folder.join(&name);
            i += 1;
        }
    }
    if !duplicate && std::fs::write(&path, &data).is_err() {
        return server_error();
    }
    json_resp(
        StatusCode::OK,
        &json!({"name": name, "subfolder": subfolder, "type": kind}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotation_is_split() {
        assert_eq!(annotated("a.png [output]"), ("a.png", Some("output")));
        assert_eq!(annotated("a.png"), ("a.png", None));
    }

    #[test]
    fn escaping_paths_are_refused() {
        assert!(inside(Path::new("/b"), "../../etc").is_none());
        assert_eq!(
            inside(Path::new("/b"), "x/../y"),
            Some(PathBuf::from("/b/y"))
        );
    }

    #[test]
    fn http_date_formats_epoch_values() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(1_796_399_208), "Fri, 04 Dec 2026 15:46:48 GMT");
    }
}
