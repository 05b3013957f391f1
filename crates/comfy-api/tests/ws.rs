//! EventStream against an axum WebSocket server on 127.0.0.1:0 that behaves like ComfyUI.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::get;
use comfy_api::ws::{WsConfig, WsEvent, WsItem};
use comfy_api::{ClientConfig, ErrorKind, NodeClient};

#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn push(&self, s: String) {
        self.0.lock().unwrap().push(s);
    }
    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

async fn upgrade(
    ws: WebSocketUpgrade,
    Query(q): Query<Vec<(String, String)>>,
    State(log): State<Log>,
) -> Response {
    let sid = q
        .into_iter()
        .find(|(k, _)| k == "clientId")
        .map(|(_, v)| v)
        .unwrap_or_default();
    ws.on_upgrade(move |socket| session(socket, sid, log))
}

async fn session(mut socket: WebSocket, sid: String, log: Log) {
    let n = log.lines().iter().filter(|l| l.starts_with("open")).count() + 1;
    log.push(format!("open {n} {sid}"));
    let status = format!(
        r#"{{"type":"status","data":{{"status":{{"exec_info":{{"queue_remaining":0}}}},"sid":"{sid}"}}}}"#
    );
    let _ = socket.send(Message::Text(status.into())).await;
    if let Some(Ok(Message::Text(first))) = socket.recv().await {
        log.push(format!("first {first}"));
        if first.contains("feature_flags") {
            let reply = r#"{"type":"feature_flags","data":{"supports_preview_metadata":true,"max_upload_size":104857600}}"#;
            let _ = socket.send(Message::Text(reply.into())).await;
        }
    }
    if n == 1 {
        let frames = vec![
            Message::Text(
                r#"{"type":"executing","data":{"node":"3","display_node":"3","prompt_id":"p1"}}"#
                    .into(),
            ),
            Message::Text("not json at all".into()),
            Message::Binary(vec![0u8, 0].into()),
            Message::Binary(vec![0, 0, 0, 3, 0, 0, 0, 1, b'7', b'h', b'i'].into()),
            Message::Text(r#"{"type":"my.custom","data":[1]}"#.into()),
            Message::Text(r#"{"type":"executing","data":{"node":null,"prompt_id":"p1"}}"#.into()),
        ];
        for f in frames {
            let _ = socket.send(f).await;
        }
        // Server-side close: the client must finish the handshake before reconnecting.
        let _ = socket.send(Message::Close(None)).await;
        while let Some(Ok(_)) = socket.recv().await {}
        log.push(format!("closed {n}"));
        return;
    }
    // Later sessions stay silent (an idle node) but answer pings, as aiohttp does.
    while let Some(Ok(msg)) = socket.recv().await {
        if let Message::Ping(p) = msg {
            log.push("ping".into());
            let _ = socket.send(Message::Pong(p)).await;
        }
    }
    log.push(format!("closed {n}"));
}

async fn next(stream: &mut comfy_api::ws::EventStream) -> WsItem {
    tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("item within 5 s")
        .expect("stream open")
}

#[tokio::test]
async fn stream_decodes_survives_bad_frames_reconnects_cleanly_and_reports_idle() {
    let log = Log::default();
    let app = Router::new()
        .route("/ws", get(upgrade))
        .with_state(log.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let client =
        NodeClient::new("gpu-ws", &format!("http://{addr}"), ClientConfig::default()).unwrap();
    let config = WsConfig {
        idle_timeout: Duration::from_millis(300),
        backoff_min: Duration::from_millis(50),
        ..WsConfig::default()
    };
    let mut stream = client.events("fleet-1", config).unwrap();

    assert!(matches!(
        next(&mut stream).await,
        WsItem::Connected { reconnect: false }
    ));
    assert!(
        matches!(next(&mut stream).await, WsItem::Event(WsEvent::Status(s)) if s.sid.as_deref() == Some("fleet-1"))
    );
    assert!(
        matches!(next(&mut stream).await, WsItem::Event(WsEvent::FeatureFlags(f)) if f.supports_preview_metadata)
    );
    assert!(
        matches!(next(&mut stream).await, WsItem::Event(WsEvent::Executing(e)) if e.node.as_deref() == Some("3"))
    );
    match next(&mut stream).await {
        WsItem::BadFrame(e) => assert!(
            matches!(e.kind, ErrorKind::BadFrame(_)) && e.node == "gpu-ws",
            "{e}"
        ),
        other => panic!("garbage text must be a bad frame, got {other:?}"),
    }
    assert!(
        matches!(next(&mut stream).await, WsItem::BadFrame(_)),
        "short binary frame"
    );
    assert!(matches!(next(&mut stream).await,
        WsItem::Event(WsEvent::ProgressText { node_id, text }) if node_id == "7" && text == "hi"));
    assert!(
        matches!(next(&mut stream).await, WsItem::Event(WsEvent::UnknownText { kind, .. }) if kind == "my.custom")
    );
    assert!(matches!(next(&mut stream).await,
        WsItem::Event(WsEvent::Executing(e)) if e.finished_prompt() == Some("p1")));

    match next(&mut stream).await {
        WsItem::Disconnected { error, retry_in } => {
            assert!(
                error.is_retryable() && retry_in >= Duration::from_millis(50),
                "{error}"
            );
        }
        other => panic!("server close must be reported, got {other:?}"),
    }
    assert!(matches!(
        next(&mut stream).await,
        WsItem::Connected { reconnect: true }
    ));
    assert!(matches!(
        next(&mut stream).await,
        WsItem::Event(WsEvent::Status(_))
    ));
    assert!(matches!(
        next(&mut stream).await,
        WsItem::Event(WsEvent::FeatureFlags(_))
    ));

    // The old session ended on the server before the new one with the same id opened.
    let lines = log.lines();
    let closed1 = lines
        .iter()
        .position(|l| l == "closed 1")
        .expect("first session closed");
    let open2 = lines
        .iter()
        .position(|l| l == "open 2 fleet-1")
        .expect("second session, same id");
    assert!(
        closed1 < open2,
        "old socket must be closed before reconnecting: {lines:?}"
    );
    assert!(
        lines
            .iter()
            .filter(|l| l.starts_with("first "))
            .all(|l| l.contains("supports_preview_metadata"))
    );

    // Silence: Idle is reported and a ping goes out; the pong keeps the socket alive.
    assert!(matches!(next(&mut stream).await, WsItem::Idle { .. }));
    assert!(
        matches!(next(&mut stream).await, WsItem::Idle { .. }),
        "pong resets the watchdog, no disconnect"
    );
    assert!(log.lines().iter().any(|l| l == "ping"));

    stream.close().await;
    // Poll instead of sleeping a fixed time: the server task notices the close asynchronously.
    let mut closed = false;
    for _ in 0..100 {
        if log.lines().iter().any(|l| l == "closed 2") {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(closed, "close() must end the session on the server");
}
