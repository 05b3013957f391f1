//! The drop-in ComfyUI API, driven by a ComfyUI client as if the coordinator were one node.

mod support;

use std::time::Duration;

use comfy_api::ws::{WsConfig, WsEvent, WsItem};
use comfy_api::{ClientConfig, NodeClient, PromptRequest, ViewRequest};
use comfy_sim::{ModelFile, NodeConfig as SimConfig};
use coordinator::Coordinator;
use serde_json::{Value, json};

/// A workflow every simulated node can run: an image of `color`, saved.
fn workflow(color: u32) -> String {
    format!(
        r#"{{"1": {{"class_type": "EmptyImage", "inputs": {{"width": 64, "height": 64, "batch_size": 1, "color": {color}}}}},
            "2": {{"class_type": "SaveImage", "inputs": {{"filename_prefix": "facade", "images": ["1", 0]}}}}}}"#
    )
}

struct Fleet {
    coordinator: Coordinator,
    sims: Vec<comfy_sim::SimNode>,
    _data: tempfile::TempDir,
}

async fn start_fleet(num_nodes: usize) -> Fleet {
    let nodes = (0..num_nodes)
        .map(|index| SimConfig::named(&format!("gpu-{index}")).with_time_scale(0.0))
        .collect();
    let fleet = support::start_sim_fleet(nodes).await;
    Fleet {
        coordinator: fleet.coordinator,
        sims: fleet.sims,
        _data: fleet.data,
    }
}

fn facade_client(fleet: &Fleet) -> NodeClient {
    NodeClient::new(
        "facade",
        &format!("http://{}", fleet.coordinator.http_addr()),
        ClientConfig::default(),
    )
    .expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_comfyui_client_runs_a_prompt_through_the_facade() {
    let fleet = start_fleet(2).await;
    let client = facade_client(&fleet);
    let mut events = client
        .events("client-1", WsConfig::default())
        .expect("socket");
    // First: connected, then the status frame with the sid.
    let mut saw_status = false;
    while !saw_status {
        match tokio::time::timeout(Duration::from_secs(10), events.next()).await {
            Ok(Some(WsItem::Event(WsEvent::Status(_)))) => saw_status = true,
            Ok(Some(_)) => {}
            other => panic!("no first status: {other:?}"),
        }
    }

    let mut request = PromptRequest::from_raw(
        serde_json::value::RawValue::from_string(workflow(7)).expect("raw"),
    );
    request.client_id = Some("client-1".into());
    request.prompt_id = Some("my-own-prompt-id".into());
    let accepted = client.prompt(&request).await.expect("facade accepts");
    assert_eq!(accepted.prompt_id, "my-own-prompt-id");

    let mut kinds = Vec::new();
    loop {
        let item = tokio::time::timeout(Duration::from_secs(20), events.next())
            .await
            .expect("events keep coming")
            .expect("stream open");
        let WsItem::Event(event) = item else { continue };
        if let Some(id) = event.prompt_id() {
            assert_eq!(id, "my-own-prompt-id", "{event:?} carries the facade id");
        }
        kinds.push(event.kind().to_owned());
        if let WsEvent::Executing(executing) = &event
            && executing.node.is_none()
        {
            break;
        }
    }
    let position = |kind: &str| {
        kinds
            .iter()
            .position(|k| k == kind)
            .unwrap_or_else(|| panic!("{kind} missing from {kinds:?}"))
    };
    assert!(position("execution_start") < position("executing"));
    assert!(position("executing") < position("executed"));
    assert!(position("executed") < position("execution_success"));
    assert_eq!(kinds.last().map(String::as_str), Some("executing"));
    events.close().await;

    // History: the entry appears, with a node-qualified subfolder.
    let mut entry = None;
    for _ in 0..100 {
        entry = client
            .history_entry("my-own-prompt-id")
            .await
            .expect("history");
        if entry.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let entry = entry.expect("history entry");
    let file = entry.outputs["2"].files["images"][0].clone();
    let (node_name, real_subfolder) = match file.subfolder.split_once('/') {
        Some((node, sub)) => (node.to_owned(), sub.to_owned()),
        None => (file.subfolder.clone(), String::new()),
    };
    let sim = fleet
        .sims
        .iter()
        .find(|s| s.name() == node_name)
        .unwrap_or_else(|| panic!("subfolder {:?} names no node", file.subfolder));

    // /view through the facade gives the node's bytes.
    let through_facade = client
        .view(&ViewRequest::from_file(&file))
        .await
        .expect("view")
        .bytes()
        .await
        .expect("bytes");
    let node = NodeClient::new(sim.name(), &sim.url(), ClientConfig::default()).expect("client");
    let mut direct = ViewRequest::from_file(&file);
    direct.subfolder = (!real_subfolder.is_empty()).then_some(real_subfolder);
    let from_node = node
        .view(&direct)
        .await
        .expect("node view")
        .bytes()
        .await
        .expect("bytes");
    assert!(!from_node.is_empty());
    assert_eq!(through_facade, from_node);
    fleet.coordinator.shutdown().await;
}

/// Posts `body` to the facade's `/prompt` and returns the prompt's history entry once it is
/// completed (panics after 20 s).
async fn prompt_to_the_end(http: &reqwest::Client, base: &str, body: &Value) -> Value {
    let (status, answer) = post(http, &format!("{base}/prompt"), &body.to_string()).await;
    assert_eq!(status, 200, "{answer}");
    let prompt_id = serde_json::from_str::<Value>(&answer).expect("json")["prompt_id"]
        .as_str()
        .expect("prompt id")
        .to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let history = get_json(http, &format!("{base}/history/{prompt_id}")).await;
        if history[&prompt_id]["status"]["completed"] == json!(true) {
            return history[&prompt_id].clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "never completed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET url`, its body as JSON.
async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    let body = http
        .get(url)
        .send()
        .await
        .unwrap_or_else(|error| panic!("GET {url}: {error}"))
        .text()
        .await
        .expect("body");
    serde_json::from_str(&body).unwrap_or_else(|error| panic!("GET {url}: {error}: {body}"))
}

async fn post(http: &reqwest::Client, url: &str, body: &str) -> (u16, String) {
    let response = http
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_facade_refuses_like_comfyui_with_and_without_the_api_prefix() {
    let fleet = start_fleet(1).await;
    let http = reqwest::Client::new();
    for base in [
        format!("http://{}", fleet.coordinator.http_addr()),
        format!("http://{}/api", fleet.coordinator.http_addr()),
    ] {
        let url = format!("{base}/prompt");
        let (status, body) = post(&http, &url, "{not json").await;
        assert_eq!(status, 500, "{base}: non-JSON body");
        assert!(body.starts_with("500 Internal Server Error"), "{body}");

        let (status, body) = post(&http, &url, r#"{"client_id": "x"}"#).await;
        assert_eq!(status, 400);
        let body: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(body["error"]["type"], "no_prompt");
        assert_eq!(body["node_errors"], json!({}));

        let (status, body) = post(
            &http,
            &url,
            r#"{"prompt": {"1": {"class_type": "NoSuchNode", "inputs": {}}}}"#,
        )
        .await;
        assert_eq!(status, 400);
        let body: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(body["error"]["type"], "invalid_prompt");
        assert_eq!(
            body["error"]["message"],
            "Cannot execute because node NoSuchNode does not exist."
        );
        assert_eq!(body["error"]["details"], "Node ID '#1'");

        let (status, body) = post(&http, &url, r#"{"prompt": {"1": {"inputs": {}}}}"#).await;
        assert_eq!(status, 400);
        let body: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(
            body["error"]["message"],
            "Cannot execute because a node is missing the class_type property."
        );

        let (status, _) = post(&http, &url, r#"{"prompt": 5}"#).await;
        assert_eq!(status, 500, "prompt not an object");

        // View: ComfyUI's refusals, in its order.
        let view = |query: &str| {
            let http = http.clone();
            let url = format!("{base}/view?{query}");
            async move { http.get(url).send().await.expect("view").status().as_u16() }
        };
        assert_eq!(view("type=output").await, 404, "no filename");
        assert_eq!(view("filename=").await, 400, "empty filename");
        assert_eq!(view("filename=../x.png").await, 400, "dots in the name");
        assert_eq!(view("filename=/x.png").await, 400, "absolute name");
        assert_eq!(view("filename=x.png&type=nope").await, 400, "unknown type");
        assert_eq!(
            view("filename=x.png&subfolder=gpu-0/../../etc").await,
            403,
            "escaping subfolder"
        );
        assert_eq!(
            view("filename=none.png&subfolder=gpu-0").await,
            404,
            "missing file"
        );
        assert_eq!(
            view("filename=none.png&subfolder=no-such-node").await,
            404,
            "unknown node"
        );

        let history: Value = http
            .get(format!("{base}/history/unknown-id"))
            .send()
            .await
            .expect("history")
            .bytes()
            .await
            .map(|b| serde_json::from_slice(&b).expect("json"))
            .expect("body");
        assert_eq!(history, json!({}));
        let features: Value = http
            .get(format!("{base}/features"))
            .send()
            .await
            .expect("features")
            .bytes()
            .await
            .map(|b| serde_json::from_slice(&b).expect("json"))
            .expect("body");
        assert_eq!(features["supports_preview_metadata"], true);
    }

    // The number counter moves on every parsed POST (rejected ones too); front negates it;
    // an explicit number is echoed as a float and leaves the counter alone.
    let url = format!("http://{}/prompt", fleet.coordinator.http_addr());
    let graph = workflow(1);
    let (_, first) = post(&http, &url, &format!(r#"{{"prompt": {graph}}}"#)).await;
    let first: Value = serde_json::from_str(&first).expect("json");
    let n = first["number"].as_i64().expect("integer number");
    assert_eq!(
        n, 8,
        "two rounds of four parsed POSTs came before (non-JSON is not parsed)"
    );
    let (_, front) = post(
        &http,
        &url,
        &format!(r#"{{"prompt": {graph}, "front": true}}"#),
    )
    .await;
    let front: Value = serde_json::from_str(&front).expect("json");
    assert_eq!(front["number"], json!(-(n + 1)));
    let (_, explicit) = post(
        &http,
        &url,
        &format!(r#"{{"prompt": {graph}, "number": 7}}"#),
    )
    .await;
    let explicit: Value = serde_json::from_str(&explicit).expect("json");
    assert_eq!(explicit["number"], json!(7.0));
    let (_, next) = post(&http, &url, &format!(r#"{{"prompt": {graph}}}"#)).await;
    let next: Value = serde_json::from_str(&next).expect("json");
    assert_eq!(next["number"], json!(n + 2));

    let stats: Value = http
        .get(format!(
            "http://{}/system_stats",
            fleet.coordinator.http_addr()
        ))
        .send()
        .await
        .expect("stats")
        .bytes()
        .await
        .map(|b| serde_json::from_slice(&b).expect("json"))
        .expect("body");
    assert_eq!(stats["devices"].as_array().map(Vec::len), Some(1));
    assert!(
        stats["devices"][0]["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("gpu-0: ")),
        "{stats}"
    );
    fleet.coordinator.shutdown().await;
}

/// A 1×1 PNG, as a user would upload.
const TINY_PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4,
    0x89, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0xf8, 0xcf, 0xc0, 0xf0,
    0x1f, 0x00, 0x05, 0x00, 0x01, 0xff, 0x89, 0x99, 0x3d, 0x1d, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45,
    0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_reaches_the_node_that_runs_the_prompt_using_it() {
    let fleet = start_fleet(2).await;
    let client = facade_client(&fleet);
    let name = "fleet upload (1).png";
    let on_node = |sim: &comfy_sim::SimNode| sim.data_dir().join("input").join(name).is_file();
    assert!(
        fleet.sims.iter().all(|sim| !on_node(sim)),
        "no node has the file before the upload"
    );

    let uploaded = client
        .upload_image(&comfy_api::UploadImage {
            filename: name.to_owned(),
            bytes: bytes::Bytes::from_static(TINY_PNG),
            subfolder: None,
            image_type: None,
            overwrite: false,
        })
        .await
        .expect("the coordinator keeps the upload");
    assert_eq!(uploaded.name, name, "a new name is kept as sent");
    assert!(
        fleet.sims.iter().all(|sim| !on_node(sim)),
        "the upload stays in the coordinator until a prompt needs it"
    );

    let prompt = format!(
        r#"{{"1": {{"class_type": "LoadImage", "inputs": {{"image": "{name}"}}}},
            "2": {{"class_type": "SaveImage", "inputs": {{"filename_prefix": "up", "images": ["1", 0]}}}}}}"#
    );
    let raw = serde_json::value::RawValue::from_string(prompt).expect("json");
    let accepted = client
        .prompt(&PromptRequest::from_raw(raw))
        .await
        .expect("prompt accepted");

    let mut entry = None;
    for _ in 0..200 {
        entry = client
            .history_entry(&accepted.prompt_id)
            .await
            .expect("history");
        if entry.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let entry = entry.expect("the prompt finished");
    assert!(
        entry.outcome().is_success(),
        "the node found the uploaded file: {entry:?}"
    );
    let (_, _, file) = entry.files().next().expect("an output");
    let ran_on = file
        .subfolder
        .split('/')
        .next()
        .expect("node name")
        .to_owned();
    let sim = fleet
        .sims
        .iter()
        .find(|sim| sim.name() == ran_on)
        .expect("the subfolder names a node");
    assert!(
        on_node(sim),
        "node {ran_on} received the upload before the prompt"
    );

    // An upload into a subfolder named like a node reads back from that subfolder, as from
    // ComfyUI, rather than from the node.
    let kept = client
        .upload_image(&comfy_api::UploadImage {
            filename: "kept.png".to_owned(),
            bytes: bytes::Bytes::from_static(TINY_PNG),
            subfolder: Some("gpu-0".to_owned()),
            image_type: None,
            overwrite: false,
        })
        .await
        .expect("upload into a subfolder");
    assert_eq!(kept.subfolder, "gpu-0");
    let view = client
        .view(&comfy_api::ViewRequest {
            filename: "kept.png".to_owned(),
            image_type: Some(comfy_api::ImageType::Input),
            subfolder: Some("gpu-0".to_owned()),
            preview: None,
            channel: None,
        })
        .await
        .expect("the upload reads back");
    let mut body = view.body;
    let mut bytes = Vec::new();
    while let Some(piece) = futures_util::StreamExt::next(&mut body).await {
        bytes.extend_from_slice(&piece.expect("body"));
    }
    assert_eq!(bytes, TINY_PNG);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_client_sends_beside_the_graph_reaches_the_node() {
    let fleet = start_fleet(1).await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", fleet.coordinator.http_addr());
    let two_saves = json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 3}},
        "2": {"class_type": "SaveImage", "inputs": {"filename_prefix": "all", "images": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"filename_prefix": "picked", "images": ["1", 0]}}
    });
    let pnginfo = json!({"workflow": {"nodes": [{"id": 3, "type": "SaveImage"}], "links": [], "version": 0.4}});
    let body = json!({
        "prompt": two_saves,
        "client_id": "client-1",
        "extra_data": {"extra_pnginfo": pnginfo, "auth_token_comfy_org": "secret-token"},
        "partial_execution_targets": ["3"]
    });
    let ours = prompt_to_the_end(&http, &base, &body).await;
    let outputs: Vec<&String> = ours["outputs"]
        .as_object()
        .expect("outputs")
        .keys()
        .collect();
    assert_eq!(outputs, ["3"], "only the targeted output ran");

    // What the node itself was sent, from its own history.
    let on_node = get_json(&http, &format!("{}/history", fleet.sims[0].url())).await;
    let items: Vec<&Value> = on_node.as_object().expect("history").values().collect();
    assert_eq!(items.len(), 1, "{on_node}");
    let queued = &items[0]["prompt"];
    let extra = queued[3].as_object().expect("extra_data");
    assert_eq!(
        extra["extra_pnginfo"], pnginfo,
        "the editor's graph travels to the node"
    );
    assert!(
        !extra.contains_key("auth_token_comfy_org"),
        "credentials are not kept or forwarded: {extra:?}"
    );
    assert_ne!(
        extra["client_id"], "client-1",
        "the node talks to the coordinator's own socket"
    );
    assert_eq!(
        queued[4],
        json!(["3"]),
        "the node was told to run only node 3"
    );
    let ran: Vec<&String> = items[0]["outputs"]
        .as_object()
        .expect("outputs")
        .keys()
        .collect();
    assert_eq!(ran, ["3"]);

    // Wrong shapes are refused up front, naming the field.
    for (bad, field) in [
        (
            json!({"prompt": two_saves, "extra_data": "x"}),
            "extra_data",
        ),
        (
            json!({"prompt": two_saves, "partial_execution_targets": "3"}),
            "partial_execution_targets",
        ),
        (
            json!({"prompt": two_saves, "partial_execution_targets": [3]}),
            "partial_execution_targets",
        ),
    ] {
        let (status, answer) = post(&http, &format!("{base}/prompt"), &bad.to_string()).await;
        assert_eq!(status, 400, "{answer}");
        let answer: Value = serde_json::from_str(&answer).expect("json");
        assert_eq!(answer["error"]["type"], "invalid_prompt");
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(field)),
            "{answer}"
        );
    }
    // Targets that name no output node leave nothing to run, as on a node.
    let (status, answer) = post(
        &http,
        &format!("{base}/prompt"),
        &json!({"prompt": two_saves, "partial_execution_targets": ["1", "nope"]}).to_string(),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(
        serde_json::from_str::<Value>(&answer).expect("json")["error"]["type"],
        "prompt_no_outputs"
    );
    fleet.coordinator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_info_comes_in_comfyuis_own_shape_with_every_nodes_checkpoints() {
    let nodes = vec![
        SimConfig::named("gpu-0")
            .with_time_scale(0.0)
            .with_model("checkpoints", ModelFile::named("only_on_zero.safetensors")),
        SimConfig::named("gpu-1")
            .with_time_scale(0.0)
            .with_model("checkpoints", ModelFile::named("only_on_one.safetensors")),
    ];
    let fleet = support::start_sim_fleet(nodes).await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", fleet.coordinator.http_addr());
    let node = |index: usize| fleet.sims[index].url();

    // A class every node describes alike comes back exactly as a node sends it.
    let ours = get_json(&http, &format!("{base}/object_info/KSampler")).await;
    let theirs = get_json(&http, &format!("{}/object_info/KSampler", node(0))).await;
    assert_eq!(ours, theirs);
    assert!(
        ours["KSampler"]["input"]["required"]["model"][0] == "MODEL",
        "ComfyUI's [type, options] pairs: {ours}"
    );

    // A checkpoint loader offers the files of every node.
    let all = get_json(&http, &format!("{base}/api/object_info")).await;
    let choices = all["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for file in ["only_on_zero.safetensors", "only_on_one.safetensors"] {
        assert!(
            choices.contains(&json!(file)),
            "{file} missing from {choices:?}"
        );
    }
    let unique: std::collections::BTreeSet<_> = choices.iter().map(Value::to_string).collect();
    assert_eq!(unique.len(), choices.len(), "each file once: {choices:?}");
    let one_node = get_json(&http, &format!("{}/object_info", node(1))).await;
    assert_eq!(
        all.as_object().map(|m| m.len()),
        one_node.as_object().map(|m| m.len()),
        "the same classes as a node"
    );
    fleet.coordinator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn facade_history_keeps_what_a_node_showed_beside_its_files() {
    let fleet = start_fleet(1).await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", fleet.coordinator.http_addr());
    let animated = json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 4, "color": 5}},
        "2": {"class_type": "SaveAnimatedWEBP", "inputs": {"filename_prefix": "clip", "fps": 8,
              "lossless": false, "quality": 80, "method": "default", "images": ["1", 0]}}
    });
    let ours =
        prompt_to_the_end(&http, &base, &json!({ "prompt": animated })).await["outputs"]["2"]
            .clone();
    let on_node = get_json(&http, &format!("{}/history", fleet.sims[0].url())).await;
    let theirs = on_node
        .as_object()
        .and_then(|entries| entries.values().next())
        .map(|entry| entry["outputs"]["2"].clone())
        .expect("the node's own entry");
    assert_eq!(
        theirs["animated"],
        json!([true]),
        "the node's own flag: {theirs}"
    );
    assert_eq!(ours["animated"], theirs["animated"], "{ours}");
    let keys = |v: &Value| {
        v.as_object()
            .map(|m| m.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    assert_eq!(keys(&ours), keys(&theirs), "the same keys as on the node");
    assert_eq!(
        ours["images"][0]["filename"],
        theirs["images"][0]["filename"]
    );
    fleet.coordinator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_facade_holds_the_node_count_limit_as_grpc_does() {
    let fleet = support::start_sim_fleet_with(
        vec![SimConfig::named("gpu-0").with_time_scale(0.0)],
        |config| config.limits.max_nodes_per_workflow = 2,
    )
    .await;
    let http = reqwest::Client::new();
    let url = format!("http://{}/prompt", fleet.coordinator.http_addr());
    let three = json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"filename_prefix": "n", "images": ["2", 0]}}
    });
    let (status, answer) = post(&http, &url, &json!({"prompt": three}).to_string()).await;
    assert_eq!(status, 400, "{answer}");
    let answer: Value = serde_json::from_str(&answer).expect("json");
    assert_eq!(answer["error"]["type"], "invalid_prompt");
    assert_eq!(
        answer["error"]["message"],
        "workflow has 3 nodes; the limit is 2"
    );
    let two = json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "SaveImage", "inputs": {"filename_prefix": "n", "images": ["1", 0]}}
    });
    let (status, answer) = post(&http, &url, &json!({"prompt": two}).to_string()).await;
    assert_eq!(status, 200, "{answer}");
    fleet.coordinator.shutdown().await;
}
