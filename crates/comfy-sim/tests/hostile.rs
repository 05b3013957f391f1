//! Hostile and careless clients: sockets that never read, hostile paths and bodies, many
//! concurrent clients. The node must stay responsive and bounded in memory.

mod support;

use std::time::Duration;

use comfy_sim::NodeConfig;
use serde_json::{Value, json};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A chain of `n` image nodes ending in a PreviewImage: many broadcast frames per prompt.
fn chain(n: usize, color: u64) -> Value {
    let mut p = serde_json::Map::new();
    p.insert(
        "1".into(),
        json!({"class_type": "EmptyImage",
        "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": color}}),
    );
    for i in 2..n {
        p.insert(
            i.to_string(),
            json!({"class_type": "ImageInvert",
            "inputs": {"image": [(i - 1).to_string(), 0]}}),
        );
    }
    p.insert(
        n.to_string(),
        json!({"class_type": "PreviewImage",
        "inputs": {"images": [(n - 1).to_string(), 0]}}),
    );
    json!({"prompt": Value::Object(p)})
}

/// Opens a WebSocket by hand and never reads from it again.
async fn silent_socket(node: &comfy_sim::SimNode) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    // A tiny receive window so the node's writes stall quickly.
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let mut s = socket.connect(node.addr()).await.expect("connect");
    let req = format!(
        "GET /ws?clientId=never-reads HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n",
        node.addr()
    );
    s.write_all(req.as_bytes()).await.expect("handshake");
    let mut head = [0u8; 12];
    s.read_exact(&mut head).await.expect("handshake answer");
    assert_eq!(&head, b"HTTP/1.1 101", "upgrade accepted");
    s
}

#[tokio::test]
async fn a_socket_that_never_reads_is_cut_once_its_backlog_is_full() {
    let mut cfg = NodeConfig::named("hostile").with_time_scale(0.0);
    cfg.ws_backlog_bytes = 256 * 1024;
    let node = node_with(cfg).await;
    let _silent = silent_socket(&node).await;
    let mut cut = false;
    for round in 0..200u64 {
        let r = request(&node, "POST", "/prompt", Some(&chain(40, round)), &[]).await;
        assert_eq!(r.status, 200, "accepted: {}", r.text());
        tokio::time::sleep(Duration::from_millis(20)).await;
        if node.snapshot().expect("running").ws_clients == 0 {
            cut = true;
            break;
        }
    }
    assert!(
        cut,
        "the non-reading socket was never closed: its frames pile up in memory"
    );
    // The node still serves a well-behaved client.
    let mut ws = Ws::connect(&node, Some("reader")).await;
    assert!(
        ws.next(5.0).await.is_some(),
        "status frame for a new socket"
    );
}

#[tokio::test]
async fn hostile_view_and_upload_paths_never_leave_the_node_folders() {
    let node = capture_node().await;
    let outside = node.data_dir().join("secret.txt");
    std::fs::write(&outside, b"outside the served folders").expect("write secret");
    for (query, status) in [
        ("filename=../secret.txt&type=input", 400),
        ("filename=secret.txt&type=input&subfolder=..", 403),
        ("filename=secret.txt&type=input&subfolder=a/../..", 403),
        ("filename=secret.txt&type=input&subfolder=%2F", 403),
        ("filename=%2E%2E%2Fsecret.txt&type=input", 400),
        ("filename=secret.txt%20%5Binput%5D&subfolder=..", 403),
        ("filename=secret.txt&type=..", 400),
        ("filename=%E2%80%AE%00.png&type=input", 404),
    ] {
        let r = request(&node, "GET", &format!("/view?{query}"), None, &[]).await;
        assert_eq!(r.status, status, "/view?{query}");
        assert!(
            !r.text().contains("outside"),
            "/view?{query} leaked the file"
        );
    }
    for subfolder in ["..", "../..", "/tmp", "a/../../.."] {
        let body = format!(
            "--XX\r\nContent-Disposition: form-data; name=\"subfolder\"\r\n\r\n{subfolder}\r\n\
             --XX\r\nContent-Disposition: form-data; name=\"image\"; filename=\"evil.png\"\r\n\
             Content-Type: image/png\r\n\r\nnot a png\r\n--XX--\r\n"
        );
        let r = raw_post(
            &node,
            "/upload/image",
            "multipart/form-data; boundary=XX",
            body.as_bytes(),
        )
        .await;
        assert_eq!(r.0, 400, "upload to subfolder {subfolder:?}: {}", r.1);
    }
    for name in ["../evil.png", "/tmp/evil.png", "a/../../evil.png"] {
        let body = format!(
            "--XX\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n\
             Content-Type: image/png\r\n\r\nnot a png\r\n--XX--\r\n"
        );
        let r = raw_post(
            &node,
            "/upload/image",
            "multipart/form-data; boundary=XX",
            body.as_bytes(),
        )
        .await;
        assert!(
            !node.data_dir().join("evil.png").exists()
                && !std::path::Path::new("/tmp/evil.png").exists(),
            "upload named {name:?} escaped the input folder (status {})",
            r.0
        );
    }
}

async fn raw_post(
    node: &comfy_sim::SimNode,
    path: &str,
    ctype: &str,
    body: &[u8],
) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(format!("{}{path}", node.url()))
        .header("content-type", ctype)
        .body(body.to_vec())
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

#[tokio::test]
async fn hostile_bodies_get_python_answers_and_the_node_keeps_serving() {
    let node = capture_node().await;
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_prompt = format!(
        "{{\"prompt\": {{\"1\": {{\"class_type\": \"SaveImage\", \"inputs\": {{\"filename_prefix\": {}{}}}}}}}}}",
        "[".repeat(5_000),
        "]".repeat(5_000)
    );
    let cases: Vec<(&str, &str, Vec<u8>, u16)> = vec![
        (
            "/prompt",
            "application/json",
            deep.clone().into_bytes(),
            500,
        ),
        ("/prompt", "application/json", deep_prompt.into_bytes(), 500),
        ("/queue", "application/json", deep.clone().into_bytes(), 500),
        (
            "/history",
            "application/json",
            deep.clone().into_bytes(),
            500,
        ),
        ("/free", "application/json", deep.clone().into_bytes(), 500),
        ("/interrupt", "application/json", deep.into_bytes(), 200),
        ("/prompt", "application/json", vec![0xff, 0xfe, 0x00], 500),
        (
            "/prompt",
            "application/json",
            b"{\"prompt\": {\"\\u0000\\ud800\": 1}}".to_vec(),
            500,
        ),
        (
            "/upload/image",
            "multipart/form-data; boundary=",
            b"--\r\n".to_vec(),
            500,
        ),
        // aiohttp reads a non-form body as an empty form: no `image` field, 400.
        ("/upload/image", "application/json", b"{}".to_vec(), 400),
    ];
    for (path, ctype, body, status) in cases {
        let r = raw_post(&node, path, ctype, &body).await;
        assert_eq!(r.0, status, "{path} with {} bytes: {}", body.len(), r.1);
    }
    let r = request(&node, "GET", "/system_stats", None, &[]).await;
    assert_eq!(r.status, 200, "node still answers");
}

#[tokio::test]
async fn many_concurrent_clients_and_sockets_are_served() {
    let node = node_with(NodeConfig::named("busy").with_time_scale(0.0)).await;
    let mut sockets = Vec::new();
    for i in 0..200 {
        sockets.push(Ws::connect(&node, Some(&format!("c{i}"))).await);
    }
    let posts = (0..50u64).map(|i| {
        let node = &node;
        async move {
            let r = request(node, "POST", "/prompt", Some(&chain(3, i)), &[]).await;
            assert_eq!(r.status, 200, "{}", r.text());
        }
    });
    futures_util::future::join_all(posts).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while node.snapshot().expect("running").prompts_finished < 50 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "50 prompts did not finish"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(node.snapshot().expect("running").ws_clients, 200);
    drop(sockets);
}
