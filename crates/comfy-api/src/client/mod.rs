//! [`NodeClient`]: an async HTTP client for one ComfyUI node.
//!
//! Problem: every call to a node can hang, fail at the transport, or answer one of several
//! error formats; the coordinator needs each call bounded in time and each failure classified
//! and attributed to the node.
//!
//! Approach: a `reqwest::Client` (shared connection pool, cheap to clone) plus the node's name
//! and base URL. Every request gets the configured per-call timeout; answers go through one
//! status classifier ([`classify`]) and one JSON decoder that reports the failing JSON path.
//! `reqwest` sends no `Origin` header, which matters: ComfyUI answers 403 to a loopback request
//! whose `Origin` differs from its `Host`. Redirects are never followed: ComfyUI's API routes
//! do not redirect, and following one would let a misbehaving node steer the coordinator to
//! another host (and turn a `POST /prompt` into a `GET`); a 3xx is reported as a status error.

mod files;
mod probe;
mod routes;

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use tracing::debug;

use crate::error::{Error, ErrorKind, SERVER_TROUBLE_MARKER, body_excerpt};
use crate::lenient;
use crate::types::PromptRejected;
use crate::ws::{EventStream, WsConfig};

pub use files::{ViewRequest, ViewResponse};
pub use probe::Probe;

/// Settings of a [`NodeClient`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Deadline of each call (until the whole answer is read; for `/view`, until the headers).
    /// Default 30 s.
    pub request_timeout: Duration,
    /// Deadline of the TCP connect. Default 5 s.
    pub connect_timeout: Duration,
    /// Longest pause between two chunks of a `/view` body. Default 60 s.
    pub stream_idle_timeout: Duration,
    /// Call routes under `/api` (e.g. `/api/prompt`), as the ComfyUI frontend does. Every
    /// route exists both ways on ComfyUI ≥ mid 2024. Default false.
    pub api_prefix: bool,
    /// Largest JSON answer read into memory (`/object_info` is ~0.5 MB, `/queue` and
    /// `/history` carry whole graphs). Default 256 MiB.
    pub max_json_bytes: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            stream_idle_timeout: Duration::from_secs(60),
            api_prefix: false,
            max_json_bytes: 256 << 20,
        }
    }
}

/// An async client for one ComfyUI node. Cheap to clone (shared connection pool).
#[derive(Debug, Clone)]
pub struct NodeClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    node: String,
    /// Base URL without a trailing slash, e.g. `http://10.0.0.5:8188` or `http://h/comfy`.
    base: url::Url,
    http: reqwest::Client,
    config: ClientConfig,
    /// URLs of the probe routes, built once: a node is probed about every second.
    probe_urls: probe::ProbeUrls,
}

impl NodeClient {
    /// Builds a client for the node called `node` at `base_url` (`http://host:port`,
    /// optionally with a path prefix such as `http://host/comfy`).
    pub fn new(
        node: impl Into<String>,
        base_url: &str,
        config: ClientConfig,
    ) -> Result<Self, Error> {
        let node = node.into();
        let invalid = |msg: String| Error::new(node.clone(), ErrorKind::InvalidRequest(msg));
        let mut base = url::Url::parse(base_url)
            .map_err(|e| invalid(format!("base url {base_url:?}: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(invalid(format!(
                "base url {base_url:?}: must be http(s)://host[:port][/prefix]"
            )));
        }
        base.set_query(None);
        base.set_fragment(None);
        let path = base.path().trim_end_matches('/').to_owned();
        base.set_path(&path);
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| invalid(format!("http client: {e}")))?;
        let probe_urls = probe::ProbeUrls::new(&base, config.api_prefix);
        Ok(Self {
            inner: Arc::new(Inner {
                node,
                base,
                http,
                config,
                probe_urls,
            }),
        })
    }

    /// The node's name, as given to [`NodeClient::new`].
    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// The node's base URL.
    pub fn base_url(&self) -> &url::Url {
        &self.inner.base
    }

    /// Opens the node's event stream with session id `client_id` (pass the same id in
    /// [`crate::PromptRequest::client_id`]). The socket lives in a background task; see
    /// [`EventStream`]. Must be called within a Tokio runtime.
    pub fn events(&self, client_id: &str, config: WsConfig) -> Result<EventStream, Error> {
        let mut url = self.url("/ws")?;
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        url.set_scheme(scheme).map_err(|()| {
            self.err(ErrorKind::InvalidRequest(
                "cannot build websocket url".into(),
            ))
        })?;
        url.query_pairs_mut().append_pair("clientId", client_id);
        Ok(EventStream::spawn(
            self.inner.node.clone(),
            url,
            client_id.to_owned(),
            config,
        ))
    }

    fn err(&self, kind: ErrorKind) -> Error {
        Error::new(self.inner.node.clone(), kind)
    }

    /// URL of `route` (e.g. `/queue`), honouring the base path and the `/api` setting.
    fn url(&self, route: &str) -> Result<url::Url, Error> {
        Ok(route_url(
            &self.inner.base,
            self.inner.config.api_prefix,
            route,
        ))
    }

    /// URL of `path` below the base path, with no `/api` added.
    fn url_exact(&self, path: &str) -> Result<url::Url, Error> {
        Ok(route_url(&self.inner.base, false, path))
    }

    fn request(&self, method: Method, url: url::Url) -> RequestBuilder {
        self.inner
            .http
            .request(method, url)
            .timeout(self.inner.config.request_timeout)
    }

    /// Sends a request and maps transport failures; any HTTP status is returned as is.
    async fn send(&self, route: &str, req: RequestBuilder) -> Result<Response, Error> {
        debug!(node = %self.inner.node, route, "calling node");
        req.send().await.map_err(|e| self.transport_error(route, e))
    }

    fn transport_error(&self, route: &str, e: reqwest::Error) -> Error {
        if e.is_timeout() {
            self.err(ErrorKind::Timeout {
                route: route.to_owned(),
                after: self.inner.config.request_timeout,
            })
        } else if e.is_builder() {
            self.err(ErrorKind::InvalidRequest(format!("{route}: {e}")))
        } else {
            self.err(ErrorKind::Connect {
                route: route.to_owned(),
                source: e,
            })
        }
    }

    /// Reads a whole body, bounded by `max_json_bytes`.
    async fn read_body(&self, route: &str, mut resp: Response) -> Result<Vec<u8>, Error> {
        let limit = self.inner.config.max_json_bytes;
        // Sized from the announced length (bounded by the limit) so small answers, the usual
        // case, are read without regrowing.
        let announced = resp
            .content_length()
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(0);
        let mut body = Vec::with_capacity(announced.min(limit));
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| self.transport_error(route, e))?
        {
            if body.len() + chunk.len() > limit {
                return Err(self.err(ErrorKind::Decode {
                    route: route.to_owned(),
                    path: ".".into(),
                    message: format!("answer larger than the {limit} byte limit"),
                }));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// Sends, checks for success and decodes the JSON answer.
    async fn call_json<T: DeserializeOwned>(
        &self,
        route: &str,
        req: RequestBuilder,
    ) -> Result<T, Error> {
        let resp = self.send(route, req).await?;
        let status = resp.status();
        let body = self.read_body(route, resp).await?;
        if !status.is_success() {
            return Err(self.err(classify(route, status, &body)));
        }
        self.decode(route, &body)
    }

    /// Sends and checks for success, ignoring the (normally empty) body.
    async fn call_empty(&self, route: &str, req: RequestBuilder) -> Result<(), Error> {
        let resp = self.send(route, req).await?;
        let status = resp.status();
        let body = self.read_body(route, resp).await?;
        if !status.is_success() {
            return Err(self.err(classify(route, status, &body)));
        }
        Ok(())
    }

    fn decode<T: DeserializeOwned>(&self, route: &str, body: &[u8]) -> Result<T, Error> {
        lenient::decode(body).map_err(|f| {
            self.err(ErrorKind::Decode {
                route: route.to_owned(),
                path: f.path,
                message: f.message,
            })
        })
    }
}

/// URL of `route` below `base`'s path, under `/api` when `api_prefix` is set.
fn route_url(base: &url::Url, api_prefix: bool, route: &str) -> url::Url {
    let prefix = if api_prefix { "/api" } else { "" };
    let mut url = base.clone();
    let joined = format!("{}{prefix}{route}", base.path().trim_end_matches('/'));
    url.set_path(&joined);
    url
}

/// Maps a non-success answer to an error kind.
pub(crate) fn classify(route: &str, status: StatusCode, body: &[u8]) -> ErrorKind {
    let route = route.to_owned();
    if status == StatusCode::INTERNAL_SERVER_ERROR
        && String::from_utf8_lossy(body).contains(SERVER_TROUBLE_MARKER)
    {
        return ErrorKind::ServerTrouble { route };
    }
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return ErrorKind::TooLarge {
            route,
            message: body_excerpt(body),
        };
    }
    if status == StatusCode::BAD_REQUEST
        && route.ends_with("/prompt")
        && let Ok(rejected) = serde_json::from_slice::<PromptRejected>(body)
    {
        return ErrorKind::PromptRejected(Box::new(rejected));
    }
    ErrorKind::Status {
        route,
        status: status.as_u16(),
        body: body_excerpt(body),
    }
}
