//! `POST /upload/image` refuses what it cannot keep with a client error that says why.

mod support;

use comfy_sim::NodeConfig as SimConfig;

async fn upload(fleet: &support::SimFleet, filename: &str, bytes: Vec<u8>) -> reqwest::Response {
    let form = reqwest::multipart::Form::new().part(
        "image",
        reqwest::multipart::Part::bytes(bytes).file_name(filename.to_owned()),
    );
    reqwest::Client::new()
        .post(format!(
            "http://{}/upload/image",
            fleet.coordinator.http_addr()
        ))
        .multipart(form)
        .send()
        .await
        .expect("POST /upload/image")
}

/// Sends a multipart upload of `size` bytes over a raw connection and returns the answer's
/// status and body, whether or not the server read the whole request.
async fn oversized_upload(addr: std::net::SocketAddr, size: usize) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let boundary = "comfyfleet-test-boundary";
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"big.png\"\r\n\
         Content-Type: image/png\r\n\r\n"
    );
    let tail = format!("\r\n--{boundary}--\r\n");
    let length = head.len() + size + tail.len();
    let request = format!(
        "POST /upload/image HTTP/1.1\r\nHost: {addr}\r\nContent-Type: multipart/form-data; \
         boundary={boundary}\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n{head}"
    );
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let sender = tokio::spawn(async move {
        // Errors are expected once the server has answered and closed.
        let _ = writer.write_all(request.as_bytes()).await;
        let chunk = vec![7u8; 64 << 10];
        let mut sent = 0;
        while sent < size {
            let n = chunk.len().min(size - sent);
            if writer.write_all(&chunk[..n]).await.is_err() {
                return;
            }
            sent += n;
        }
        let _ = writer.write_all(tail.as_bytes()).await;
    });
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        reader.read_to_end(&mut answer),
    )
    .await
    .expect("the server answers within 30 s");
    // A reset after the answer arrived is fine; what was read is what counts.
    if answer.is_empty() {
        read.expect("read the answer");
    }
    sender.abort();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_over_the_body_limit_is_413_with_a_body() {
    let fleet =
        support::start_sim_fleet(vec![SimConfig::named("gpu-0").with_time_scale(0.0)]).await;
    // The default `limits.max_http_body_bytes` is 16 MiB. The server answers as soon as the
    // limit is crossed and may close before the client has written the rest, so the body is
    // written from a separate task (its broken pipe is expected) while the answer is read.
    let (status, body) = oversized_upload(fleet.coordinator.http_addr(), 20 << 20).await;
    assert_eq!(status, 413, "{body}");
    assert!(!body.trim().is_empty(), "the 413 says why");

    // A small upload still works.
    let response = upload(&fleet, "small.png", vec![1, 2, 3]).await;
    assert_eq!(response.status().as_u16(), 200);
    fleet.coordinator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_name_too_long_for_the_disk_is_400() {
    let fleet =
        support::start_sim_fleet(vec![SimConfig::named("gpu-0").with_time_scale(0.0)]).await;
    let name = format!("{}.png", "a".repeat(5000));
    let response = upload(&fleet, &name, vec![1, 2, 3]).await;
    assert_eq!(response.status().as_u16(), 400);
    fleet.coordinator.shutdown().await;
}
