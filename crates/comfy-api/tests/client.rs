//! NodeClient against a small axum server on 127.0.0.1:0 serving recorded ComfyUI answers.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Multipart, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use comfy_api::{
    ClientConfig, ErrorKind, FreeRequest, ImageType, NodeClient, PromptRequest, UploadImage,
    ViewRequest, Workflow,
};
use futures_util::StreamExt;
use serde_json::Value;
use support::capture;

#[derive(Clone, Default)]
struct Seen {
    /// What the server observed, one line per fact.
    log: Arc<Mutex<Vec<String>>>,
}

impl Seen {
    fn push(&self, s: String) {
        self.log.lock().unwrap().push(s);
    }
    fn lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

fn json(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body.to_string(),
    )
        .into_response()
}

fn body_of(file: &str) -> Value {
    capture(file)["body"].clone()
}

async fn prompt(State(seen): State<Seen>, headers: HeaderMap, body: Bytes) -> Response {
    seen.push(format!("origin={}", headers.contains_key(header::ORIGIN)));
    let text = String::from_utf8_lossy(&body).into_owned();
    seen.push(format!("prompt-body={text}"));
    if text.contains("NoSuchNode") {
        json(
            StatusCode::BAD_REQUEST,
            &body_of("http_post_prompt_bad_link_type_mismatch.json"),
        )
    } else {
        json(
            StatusCode::OK,
            &body_of("http_post_prompt_partially_invalid_accepted.json"),
        )
    }
}

async fn view(State(seen): State<Seen>, RawQuery(q): RawQuery) -> Response {
    seen.push(format!("view-query={}", q.unwrap_or_default()));
    // Three chunks to exercise streaming.
    let chunks = futures_util::stream::iter(
        [&b"\x89PNG"[..], &b"-middle-"[..], &b"end"[..]]
            .map(|c| Ok::<_, std::io::Error>(Bytes::from_static(c))),
    );
    (
        [(header::CONTENT_TYPE, "image/png")],
        axum::body::Body::from_stream(chunks),
    )
        .into_response()
}

async fn upload(State(seen): State<Seen>, mut form: Multipart) -> Response {
    while let Ok(Some(field)) = form.next_field().await {
        let name = field.name().unwrap_or_default().to_owned();
        let file = field.file_name().map(str::to_owned);
        let data = field.bytes().await.unwrap_or_default();
        seen.push(format!(
            "field {name} file={file:?} data={}",
            String::from_utf8_lossy(&data)
        ));
    }
    json(
        StatusCode::OK,
        &body_of("http_post_upload_image_subfolder_and_type_temp.json"),
    )
}

async fn trouble() -> Response {
    let rec = capture("http_post_free_empty_body.json");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        [(header::CONTENT_TYPE, "text/plain")],
        rec["body_text"].as_str().unwrap().to_owned(),
    )
        .into_response()
}

async fn models(Path(folder): Path<String>) -> Response {
    if folder == "checkpoints" {
        json(StatusCode::OK, &serde_json::json!(["a.safetensors"]))
    } else {
        StatusCode::NOT_FOUND.into_response()
    }
}

async fn start(seen: Seen) -> String {
    let app = Router::new()
        .route(
            "/system_stats",
            get(|| async { json(StatusCode::OK, &body_of("http_get_system_stats.json")) }),
        )
        .route(
            "/api/system_stats",
            get(|| async { json(StatusCode::OK, &body_of("http_get_api_system_stats.json")) }),
        )
        .route(
            "/prefix/queue",
            get(|| async {
                json(
                    StatusCode::OK,
                    &body_of("http_get_queue_running_and_pending.json"),
                )
            }),
        )
        .route("/prompt", post(prompt))
        .route(
            "/history/{id}",
            get(|| async { json(StatusCode::OK, &body_of("http_get_history_success.json")) }),
        )
        .route("/view", get(view))
        .route("/upload/image", post(upload))
        .route("/free", post(trouble))
        .route("/models/{folder}", get(models))
        .route(
            "/features",
            get(|| async {
                json(
                    StatusCode::OK,
                    &serde_json::json!({"max_upload_size": 1048576.0}),
                )
            }),
        )
        .route(
            "/embeddings",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "[]"
            }),
        )
        .route(
            "/object_info/{class}",
            get(|| async {
                json(
                    StatusCode::OK,
                    &body_of("http_get_object_info_unknown_class.json"),
                )
            }),
        )
        .route(
            "/queue",
            post(|| async {
                (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "Maximum request body size 10 exceeded.",
                )
            }),
        )
        .route(
            "/history",
            get(|| async { "<html><body>502 Bad Gateway</body></html>" }),
        )
        .with_state(seen);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn client(base: &str) -> NodeClient {
    let config = ClientConfig {
        request_timeout: Duration::from_millis(700),
        ..ClientConfig::default()
    };
    NodeClient::new("gpu-test", base, config).unwrap()
}

#[tokio::test]
async fn probes_decode_and_honour_api_and_path_prefixes() {
    let base = start(Seen::default()).await;
    let stats = client(&base).system_stats().await.unwrap();
    assert!(
        !stats.has_gpu() && stats.gpu_vram_total().is_none(),
        "cpu node must report no gpu"
    );

    let api = NodeClient::new(
        "n",
        &base,
        ClientConfig {
            api_prefix: true,
            ..ClientConfig::default()
        },
    )
    .unwrap();
    assert_eq!(api.system_stats().await.unwrap().system.os, "posix");

    let prefixed = client(&format!("{base}/prefix/"));
    let q = prefixed.queue().await.unwrap();
    assert_eq!(q.pending.len(), 5);
    assert!(q.pending.windows(2).all(|w| w[0].number <= w[1].number));

    let f = client(&base).features().await.unwrap();
    assert_eq!(
        f.max_upload_size,
        Some(1048576),
        "float max_upload_size must be accepted"
    );
}

#[tokio::test]
async fn prompt_forwards_raw_workflow_without_origin_and_types_both_answers() {
    let seen = Seen::default();
    let base = start(seen.clone()).await;
    let c = client(&base);
    let wf = Workflow::parse(br#"{"1": {"class_type": "KSampler", "inputs": {"seed": 18446744073709551615, "cfg": 7.6000000000000005}}}"#).unwrap();
    let mut req = PromptRequest::new(&wf, "client-a");
    req.partial_execution_targets = Some(vec!["1".into()]);
    let ok = c.prompt(&req).await.unwrap();
    assert!(
        !ok.node_errors.is_empty(),
        "partially valid answer keeps its node_errors"
    );

    let lines = seen.lines();
    assert!(
        lines.contains(&"origin=false".to_owned()),
        "no Origin header may be sent: {lines:?}"
    );
    let body = lines
        .iter()
        .find_map(|l| l.strip_prefix("prompt-body="))
        .unwrap();
    assert!(body.contains(r#""prompt":{"1": {"class_type": "KSampler", "inputs": {"seed": 18446744073709551615, "cfg": 7.6000000000000005}}}"#), "{body}");
    let sent: Value = serde_json::from_str(body).unwrap();
    assert_eq!(sent["client_id"], "client-a");
    assert_eq!(sent["partial_execution_targets"], serde_json::json!(["1"]));
    assert!(uuid::Uuid::parse_str(sent["prompt_id"].as_str().unwrap()).is_ok());

    let bad = Workflow::parse(br#"{"1": {"class_type": "NoSuchNode", "inputs": {}}}"#).unwrap();
    let err = c
        .prompt(&PromptRequest::new(&bad, "client-a"))
        .await
        .unwrap_err();
    let rejected = err
        .prompt_rejection()
        .expect("400 must be a typed rejection");
    assert_eq!(rejected.error.kind, "prompt_outputs_failed_validation");
    assert!(!err.is_retryable());
    assert!(
        err.to_string()
            .starts_with("node gpu-test: /prompt: workflow rejected"),
        "{err}"
    );
}

#[tokio::test]
async fn view_encodes_names_exactly_and_streams() {
    let seen = Seen::default();
    let base = start(seen.clone()).await;
    let c = client(&base);
    let mut req = ViewRequest::from_file(
        &serde_json::from_value(serde_json::json!(
        {"filename": "5 (2).png", "subfolder": "a b/图", "type": "temp"}))
        .unwrap(),
    );
    req.preview = Some("webp;50".into());
    req.channel = Some("rgb".into());
    let resp = c.view(&req).await.unwrap();
    assert_eq!(resp.content_type.as_deref(), Some("image/png"));
    let mut body = resp.body;
    let mut all = Vec::new();
    let mut chunks = 0;
    while let Some(chunk) = body.next().await {
        all.extend_from_slice(&chunk.unwrap());
        chunks += 1;
    }
    assert_eq!(all, b"\x89PNG-middle-end");
    assert!(chunks >= 1);

    let cjk = ViewRequest {
        filename: "猫 cat+1.png".into(),
        image_type: Some(ImageType::Output),
        ..ViewRequest::default()
    };
    c.view(&cjk).await.unwrap().bytes().await.unwrap();
    let queries: Vec<String> = seen
        .lines()
        .into_iter()
        .filter_map(|l| l.strip_prefix("view-query=").map(str::to_owned))
        .collect();
    assert_eq!(
        queries[0],
        "filename=5%20%282%29.png&type=temp&subfolder=a%20b%2F%E5%9B%BE&preview=webp%3B50&channel=rgb"
    );
    assert_eq!(queries[1], "filename=%E7%8C%AB%20cat%2B1.png&type=output");
}

#[tokio::test]
async fn upload_sends_every_multipart_field() {
    let seen = Seen::default();
    let base = start(seen.clone()).await;
    let up = UploadImage {
        subfolder: Some("coord".into()),
        image_type: Some(ImageType::Temp),
        overwrite: true,
        ..UploadImage::new("5 (2).png", &b"PNGDATA"[..])
    };
    let stored = client(&base).upload_image(&up).await.unwrap();
    assert_eq!(stored.workflow_value(), "coord/capture_upload.png");
    let lines = seen.lines();
    for want in [
        r#"field image file=Some("5 (2).png") data=PNGDATA"#,
        "field type file=None data=temp",
        "field subfolder file=None data=coord",
        "field overwrite file=None data=true",
    ] {
        assert!(
            lines.iter().any(|l| l == want),
            "missing {want:?} in {lines:?}"
        );
    }
}

#[tokio::test]
async fn failures_are_classified() {
    let base = start(Seen::default()).await;
    let c = client(&base);

    let err = c.embeddings().await.unwrap_err();
    assert!(
        matches!(err.kind, ErrorKind::Timeout { .. }) && err.is_retryable(),
        "{err}"
    );

    let err = c
        .free(FreeRequest {
            unload_models: true,
            free_memory: false,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind, ErrorKind::ServerTrouble { .. }) && !err.is_retryable(),
        "{err}"
    );

    let err = c.queue_clear().await.unwrap_err();
    assert!(matches!(err.kind, ErrorKind::TooLarge { .. }), "{err}");

    let err = c.history(Some(2), None).await.unwrap_err();
    match &err.kind {
        ErrorKind::Decode { route, .. } => assert_eq!(route, "/history"),
        other => panic!("html body must be a decode error, got {other:?}"),
    }

    let err = c.models_in("no_such_folder").await.unwrap_err();
    assert!(
        matches!(err.kind, ErrorKind::UnknownModelFolder { ref folder } if folder == "no_such_folder"),
        "{err}"
    );
    assert_eq!(
        c.models_in("checkpoints").await.unwrap(),
        vec!["a.safetensors"]
    );

    assert!(
        !c.jobs_available().await.unwrap(),
        "404 on /api/jobs means no jobs api"
    );
    assert!(c.object_info_class("NoSuchNode").await.unwrap().is_none());
    assert!(
        c.history_entry("3cec408f-2dbe-49dd-8e22-32203566cbc2")
            .await
            .unwrap()
            .unwrap()
            .outcome()
            .is_success()
    );

    // A port we bound and released: nothing listens there any more.
    let gone = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let down = client(&format!("http://{gone}"));
    let err = down.system_stats().await.unwrap_err();
    assert!(
        matches!(err.kind, ErrorKind::Connect { .. }) && err.is_retryable(),
        "{err}"
    );
    assert!(NodeClient::new("n", "ftp://x", ClientConfig::default()).is_err());
}

/// A node whose answers take `delay` each, under `/slow`, and a prompt one under `/n`.
async fn start_probe_target(delay: Duration) -> String {
    let slow = move |file: &'static str| {
        get(move || async move {
            tokio::time::sleep(delay).await;
            json(StatusCode::OK, &body_of(file))
        })
    };
    let app = Router::new()
        .route(
            "/n/system_stats",
            get(|| async { json(StatusCode::OK, &body_of("http_get_system_stats.json")) }),
        )
        .route(
            "/n/queue",
            get(|| async {
                json(
                    StatusCode::OK,
                    &body_of("http_get_queue_running_and_pending.json"),
                )
            }),
        )
        .route("/slow/system_stats", slow("http_get_system_stats.json"))
        .route(
            "/slow/queue",
            slow("http_get_queue_running_and_pending.json"),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test]
async fn probe_reads_what_the_full_routes_read() {
    let base = start_probe_target(Duration::ZERO).await;
    let c = client(&format!("{base}/n"));
    let probe = c.probe(Duration::from_secs(5)).await.unwrap();
    let stats = c.system_stats().await.unwrap();
    let queue = c.queue().await.unwrap();

    let device = probe
        .stats
        .device
        .as_ref()
        .expect("the node lists a device");
    let full = stats.compute_device().unwrap();
    assert_eq!(
        (
            &device.name,
            &device.device_type,
            device.vram_total,
            device.vram_free
        ),
        (
            &full.name,
            &full.device_type,
            full.vram_total,
            full.vram_free
        )
    );
    assert_eq!(device.is_cpu(), full.is_cpu());
    assert_eq!(
        (probe.queue.running, probe.queue.pending),
        (queue.running.len(), queue.pending.len())
    );
    assert!(probe.queue.pending > 1, "the recording has pending prompts");
    for item in queue.running.iter().chain(&queue.pending) {
        assert!(probe.queue.contains(&item.prompt_id), "{}", item.prompt_id);
    }
    assert_eq!(probe.queue.prompt_ids.len(), queue.len());
}

#[tokio::test]
async fn probe_has_one_deadline_for_both_requests_and_names_the_late_route() {
    // Each answer alone fits in the deadline; both together do not.
    let base = start_probe_target(Duration::from_millis(300)).await;
    let c = NodeClient::new("gpu-slow", &format!("{base}/slow"), ClientConfig::default()).unwrap();
    let started = std::time::Instant::now();
    let err = c.probe(Duration::from_millis(450)).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2), "{err}");
    assert_eq!(err.node, "gpu-slow");
    match &err.kind {
        ErrorKind::Timeout { route, after } => {
            assert_eq!(route, "/queue");
            assert_eq!(*after, Duration::from_millis(450));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(err.is_retryable());

    // The client's own per-call bound still caps a longer probe deadline.
    let config = ClientConfig {
        request_timeout: Duration::from_millis(450),
        ..ClientConfig::default()
    };
    let short = NodeClient::new("gpu-slow", &format!("{base}/slow"), config).unwrap();
    match short.probe(Duration::from_secs(60)).await.unwrap_err().kind {
        ErrorKind::Timeout { after, .. } => assert_eq!(after, Duration::from_millis(450)),
        other => panic!("expected a timeout, got {other:?}"),
    }

    assert!(c.probe(Duration::from_secs(5)).await.is_ok());
}
