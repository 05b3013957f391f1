//! Shared helpers for the comfy-sim integration tests: capture loading, a node per test,
//! a small HTTP client and normalisation of ids, timestamps and random file names.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use comfy_sim::{NodeConfig, SimNode};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

/// The shared folder (captures, workflows); fails loudly when absent.
pub fn shared_dir() -> PathBuf {
    let dir = std::env::var_os("COMFYFLEET_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared")));
    assert!(
        dir.join("comfyui-captures").is_dir(),
        "shared folder with comfyui-captures not found at {} (set COMFYFLEET_SHARED_DIR)",
        dir.display()
    );
    dir
}

/// Loads one capture file.
pub fn capture(name: &str) -> Value {
    let path = shared_dir().join("comfyui-captures").join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read capture {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("capture {name} is not JSON: {e}"))
}

/// A node configured like the capture server, fast.
pub async fn capture_node() -> SimNode {
    node_with(NodeConfig::capture_cpu().with_time_scale(0.02)).await
}

/// A node with the given config on a free loopback port.
pub async fn node_with(cfg: NodeConfig) -> SimNode {
    comfy_sim::spawn(cfg, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("node starts")
}

/// A plain HTTP answer.
pub struct Answer {
    pub status: u16,
    pub content_type: Option<String>,
    pub headers: reqwest::header::HeaderMap,
    pub bytes: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.bytes)
            )
        })
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).to_string()
    }
}

/// Sends a request; `body` JSON values are encoded, strings are sent raw.
pub async fn request(
    node: &SimNode,
    method: &str,
    path: &str,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> Answer {
    let client = reqwest::Client::new();
    let url = format!("{}{}", node.url(), path);
    let mut req = client.request(method.parse().expect("method"), url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    match body {
        Some(Value::String(s)) => req = req.body(s.clone()),
        Some(v) => req = req.body(serde_json::to_string(v).expect("encode")),
        None => {}
    }
    let resp = req.send().await.expect("request reaches the node");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let content_type = headers
        .get("content-type")
        .map(|v| v.to_str().unwrap_or("").to_string());
    let bytes = resp.bytes().await.expect("body").to_vec();
    Answer {
        status,
        content_type,
        headers,
        bytes,
    }
}

/// Replaces ids, numbers of accepted prompts, timestamps and random temp names.
pub fn normalize(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let nv = match k.as_str() {
                        "prompt_id" | "sid" => Value::String("<id>".into()),
                        "timestamp" => Value::from(0),
                        _ => normalize(v),
                    };
                    (normalize_str(k), nv)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(normalize).collect()),
        Value::String(s) => Value::String(normalize_str(s)),
        other => other.clone(),
    }
}

fn normalize_str(s: &str) -> String {
    if uuid::Uuid::parse_str(s).is_ok() {
        return "<id>".into();
    }
    if let Some(rest) = s.strip_prefix("ComfyUI_temp_")
        && rest.len() > 5
    {
        return format!("ComfyUI_temp_<r>{}", &rest[5..]);
    }
    s.to_string()
}

/// A test WebSocket.
pub struct Ws {
    pub stream: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

/// One received frame: JSON text or a binary frame.
#[derive(Debug, Clone)]
pub enum Got {
    Text(Value),
    Binary(Vec<u8>),
}

impl Ws {
    pub async fn connect(node: &SimNode, client_id: Option<&str>) -> Ws {
        let url = match client_id {
            Some(c) => format!("{}?clientId={c}", node.ws_url()),
            None => node.ws_url(),
        };
        let (stream, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket connects");
        Ws { stream }
    }

    pub async fn send_text(&mut self, text: &str) {
        self.stream
            .send(Message::Text(text.into()))
            .await
            .expect("send");
    }

    /// Next frame within `secs`, `None` on timeout or close.
    pub async fn next(&mut self, secs: f64) -> Option<Got> {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs_f64(secs), self.stream.next())
                .await
                .ok()??
                .ok()?;
            match msg {
                Message::Text(t) => {
                    return Some(Got::Text(
                        serde_json::from_str(t.as_str()).expect("text frames are JSON"),
                    ));
                }
                Message::Binary(b) => return Some(Got::Binary(b.to_vec())),
                Message::Close(_) => return None,
                _ => continue,
            }
        }
    }

    /// Frames until `executing{node:null}` for `prompt_id` (inclusive) or until quiet for `secs`.
    pub async fn until_done(&mut self, prompt_id: &str, secs: f64) -> Vec<Got> {
        let mut out = Vec::new();
        while let Some(g) = self.next(secs).await {
            let done = matches!(&g, Got::Text(v) if v["type"] == "executing" && v["data"]["node"].is_null() && v["data"]["prompt_id"] == prompt_id);
            out.push(g);
            if done {
                break;
            }
        }
        out
    }

    /// Every frame until quiet for `secs`.
    pub async fn drain(&mut self, secs: f64) -> Vec<Got> {
        let mut out = Vec::new();
        while let Some(g) = self.next(secs).await {
            out.push(g);
        }
        out
    }
}

/// One-line summary of a frame with the fields a client relies on.
pub fn summarize_live(g: &Got) -> String {
    match g {
        Got::Text(v) => summarize_msg(v),
        Got::Binary(b) => summarize_binary(b),
    }
}

fn summarize_binary(b: &[u8]) -> String {
    let event = u32::from_be_bytes(b[..4].try_into().expect("4 bytes"));
    match event {
        3 => {
            let len = u32::from_be_bytes(b[4..8].try_into().expect("len")) as usize;
            format!(
                "bin3 {} {}",
                String::from_utf8_lossy(&b[8..8 + len]),
                String::from_utf8_lossy(&b[8 + len..])
            )
        }
        1 => format!(
            "bin1 fmt{}",
            u32::from_be_bytes(b[4..8].try_into().expect("fmt"))
        ),
        4 => {
            let len = u32::from_be_bytes(b[4..8].try_into().expect("len")) as usize;
            let meta: Value = serde_json::from_slice(&b[8..8 + len]).expect("metadata JSON");
            format!("bin4 {}", normalize(&meta))
        }
        other => format!("bin{other}"),
    }
}

/// Summary of a recorded capture message entry.
pub fn summarize_captured(m: &Value) -> Option<String> {
    match m["frame"].as_str()? {
        "text" => Some(summarize_msg(&m["message"])),
        "binary" => {
            let b = &m["binary"];
            Some(match b["event_type_u32be"].as_u64()? {
                3 => format!("bin3 {} {}", b["node_id"].as_str()?, b["text"].as_str()?),
                1 => format!("bin1 fmt{}", b["image_format_u32be"]),
                4 => format!("bin4 {}", normalize(&b["metadata"])),
                other => format!("bin{other}"),
            })
        }
        _ => None,
    }
}

fn summarize_msg(v: &Value) -> String {
    let d = &v["data"];
    match v["type"].as_str().unwrap_or("") {
        "status" => format!(
            "status q={}{}",
            d["status"]["exec_info"]["queue_remaining"],
            if d.get("sid").is_some() { " +sid" } else { "" }
        ),
        "progress_state" => {
            let nodes: Vec<String> = d["nodes"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, n)| {
                            format!(
                                "{k}:{}:{}/{}",
                                n["state"].as_str().unwrap_or(""),
                                n["value"],
                                n["max"]
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            format!("progress_state {}", nodes.join(","))
        }
        "execution_error" => format!(
            "execution_error {} {} {} {}",
            d["node_id"], d["node_type"], d["exception_type"], d["exception_message"]
        ),
        "execution_interrupted" => format!(
            "execution_interrupted {} {} {:?}",
            d["node_id"],
            d["node_type"],
            sorted(&d["executed"])
        ),
        t => format!("{t} {}", normalize(d)),
    }
}

fn sorted(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .map(|a| a.iter().map(|x| x.to_string()).collect())
        .unwrap_or_default();
    out.sort();
    out
}
