//! NodeClient and EventStream against hand-written hostile servers on 127.0.0.1: garbage
//! instead of HTTP, bodies that trickle or stop short, redirects, truncated WebSocket frames.
//! Every call must end with a typed error naming the node, within its deadline.

use std::time::{Duration, Instant};

use comfy_api::ws::{WsConfig, WsItem};
use comfy_api::{ClientConfig, ErrorKind, NodeClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Serves every connection with `answer` after reading the request head.
async fn serve<F, Fut>(answer: F) -> String
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            tokio::spawn(answer(s));
        }
    });
    format!("http://{addr}")
}

fn client(url: &str) -> NodeClient {
    let cfg = ClientConfig {
        request_timeout: Duration::from_millis(800),
        connect_timeout: Duration::from_millis(500),
        ..ClientConfig::default()
    };
    NodeClient::new("gpu-9", url, cfg).expect("client")
}

#[tokio::test]
async fn garbage_slow_and_truncated_answers_end_in_typed_errors() {
    let garbage = serve(|mut s| async move {
        let _ = s.write_all(b"\x00\xffSSH-2.0-not-http\r\n\r\n").await;
    })
    .await;
    let slow = serve(|mut s| async move {
        let _ = s
            .write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n{",
            )
            .await;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if s.write_all(b" ").await.is_err() {
                return;
            }
        }
    })
    .await;
    let truncated = serve(|mut s| async move {
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n{\"exec_info\":")
            .await;
    })
    .await;
    let not_json = serve(|mut s| async move {
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\n<html")
            .await;
    })
    .await;
    for (label, url) in [
        ("garbage", &garbage),
        ("slow", &slow),
        ("truncated", &truncated),
        ("not json", &not_json),
    ] {
        let started = Instant::now();
        let err = client(url).queue_remaining().await.expect_err(label);
        assert_eq!(err.node, "gpu-9", "{label}: error names the node");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{label}: took {:?}",
            started.elapsed()
        );
        let expected = match label {
            "slow" => matches!(err.kind, ErrorKind::Timeout { .. }),
            "not json" => matches!(err.kind, ErrorKind::Decode { .. }),
            _ => matches!(err.kind, ErrorKind::Connect { .. }),
        };
        assert!(expected, "{label}: unexpected kind {:?}", err.kind);
    }
}

#[tokio::test]
async fn redirects_are_reported_not_followed() {
    let target_hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let hits = target_hits.clone();
    let target = serve(move |mut s| {
        hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move {
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 35\r\n\r\n{\"exec_info\":{\"queue_remaining\":0}}")
                .await;
        }
    })
    .await;
    let location = format!("{target}/prompt");
    let redirecting = serve(move |mut s| {
        let answer =
            format!("HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n");
        async move {
            let _ = s.write_all(answer.as_bytes()).await;
        }
    })
    .await;
    let err = client(&redirecting)
        .queue_remaining()
        .await
        .expect_err("a redirect is an error");
    assert!(
        matches!(err.kind, ErrorKind::Status { status: 302, .. }),
        "unexpected kind {:?}",
        err.kind
    );
    assert_eq!(
        target_hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the redirect target was contacted"
    );
}

#[tokio::test]
async fn truncated_websocket_frames_end_the_session_and_reconnect() {
    // Completes the upgrade, then sends half a text frame header and closes.
    let url = serve(|mut s| async move {
        let _ = s
            .write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                  Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x81\x7e\x01",
            )
            .await;
    })
    .await;
    let cfg = WsConfig {
        connect_timeout: Duration::from_millis(500),
        close_timeout: Duration::from_millis(200),
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(100),
        ..WsConfig::default()
    };
    let mut events = client(&url).events("c1", cfg).expect("stream");
    let mut disconnects = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while disconnects < 2 {
        let item = tokio::time::timeout_at(deadline, events.next())
            .await
            .expect("stream keeps reporting")
            .expect("stream open");
        if let WsItem::Disconnected { error, .. } = item {
            assert_eq!(error.node, "gpu-9");
            disconnects += 1;
        }
    }
}
