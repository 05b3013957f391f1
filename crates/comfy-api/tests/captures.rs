//! Every recorded ComfyUI answer and WebSocket message decodes into this crate's types.

mod support;

use std::io::Read;

use comfy_api::types::{
    Features, History, ObjectInfo, Outcome, PromptAccepted, PromptInfo, PromptRejected, QueueState,
    SystemStats, UploadedImage,
};
use comfy_api::ws::WsEvent;
use serde::de::DeserializeOwned;
use serde_json::Value;
use support::{capture, capture_path, list, route_of};

fn decode<T: DeserializeOwned>(file: &str, body: &Value) -> T {
    let text = serde_json::to_vec(body).expect("re-encode capture body");
    let de = &mut serde_json::Deserializer::from_slice(&text);
    serde_path_to_error::deserialize(de).unwrap_or_else(|e| {
        panic!(
            "{file}: body must decode as {}: {e}",
            std::any::type_name::<T>()
        )
    })
}

/// Decodes one HTTP record by route; returns false when the record has no JSON body to decode.
fn decode_record(file: &str, rec: &Value) -> bool {
    let (method, path) = route_of(rec);
    let status = rec["status"].as_u64().expect("status");
    let Some(body) = rec.get("body") else {
        return false;
    };
    match (method.as_str(), path.as_str(), status) {
        ("GET", "/system_stats", 200) => {
            let s: SystemStats = decode(file, body);
            assert!(!s.has_gpu(), "{file}: the capture node ran with --cpu");
            assert!(s.system.ram_total > 0, "{file}: ram_total must be read");
        }
        ("GET", "/queue", 200) => {
            let _: QueueState = decode(file, body);
        }
        ("GET", "/prompt", 200) => {
            let _: PromptInfo = decode(file, body);
        }
        ("GET", "/features", 200) => {
            let f: Features = decode(file, body);
            assert_eq!(f.max_upload_size, Some(104857600), "{file}");
        }
        ("GET", "/embeddings" | "/models" | "/extensions", 200) => {
            let _: Vec<String> = decode(file, body);
        }
        ("GET", p, 200) if p.starts_with("/models/") => {
            let _: Vec<String> = decode(file, body);
        }
        ("GET", p, 200) if p.starts_with("/history") => {
            let _: History = decode(file, body);
        }
        ("GET", p, 200) if p.starts_with("/object_info") => {
            let info: ObjectInfo = decode(file, body);
            assert!(
                info.undecodable.is_empty(),
                "{file}: undecodable classes {:?}",
                info.undecodable
            );
        }
        ("POST", "/prompt", 200) => {
            let _: PromptAccepted = decode(file, body);
        }
        ("POST", "/prompt", 400) => {
            let r: PromptRejected = decode(file, body);
            assert!(!r.error.kind.is_empty(), "{file}: error type must be read");
        }
        ("POST", "/upload/image", 200) => {
            let _: UploadedImage = decode(file, body);
        }
        other => panic!("{file}: no decoder for {other:?}"),
    }
    true
}

#[test]
fn every_http_capture_decodes_by_route() {
    let files = list("comfyui-captures", "http_", ".json");
    assert!(
        files.len() > 80,
        "expected the full capture set, found {}",
        files.len()
    );
    let mut decoded = 0;
    for file in &files {
        let doc = capture(file);
        match file.as_str() {
            "http_get_object_info_selected.json" => {
                for (class, rec) in doc["responses"].as_object().expect("responses") {
                    assert!(decode_record(file, rec), "{file}/{class} has a body");
                    decoded += 1;
                }
            }
            "http_get_view.json" => {
                let outputs: std::collections::BTreeMap<String, comfy_api::NodeOutput> =
                    decode(file, &doc["history_outputs"]);
                assert_eq!(
                    outputs["5"].files["latents"][0].filename,
                    "view_latent_00001_.latent"
                );
                decoded += 1;
            }
            "http_post_prompt_summary.json" => {
                for case in doc.as_array().expect("summary list") {
                    let name = case["case"].as_str().unwrap_or("?");
                    match case["status"].as_u64() {
                        Some(200) => drop(decode::<PromptAccepted>(name, &case["body"])),
                        Some(400) => drop(decode::<PromptRejected>(name, &case["body"])),
                        _ => {}
                    }
                }
                decoded += 1;
            }
            _ => {
                if decode_record(file, &doc) {
                    decoded += 1;
                }
                if let Some(after) = doc.get("after_get") {
                    assert!(decode_record(file, after), "{file}: after_get has a body");
                }
            }
        }
    }
    assert!(decoded > 60, "only {decoded} captures had bodies to decode");
}

#[test]
fn full_object_info_decodes_all_classes_in_both_schemas() {
    let mut gz = flate2::read::GzDecoder::new(
        std::fs::File::open(capture_path("object_info_full.json.gz")).unwrap(),
    );
    let mut text = String::new();
    gz.read_to_string(&mut text)
        .expect("gunzip object_info_full");
    let info: ObjectInfo = serde_json::from_str(&text).expect("object_info decodes");
    assert_eq!(
        info.nodes.len(),
        496,
        "every class must decode: {:?}",
        info.undecodable
    );
    assert!(info.is_output_node("SaveImage") && !info.is_output_node("EmptyImage"));
    let ckpt = info.nodes["CheckpointLoaderSimple"]
        .input("ckpt_name")
        .expect("ckpt_name input");
    assert!(
        ckpt.combo_options().is_some(),
        "legacy combo must expose its options"
    );
    let v3_combo = info
        .nodes
        .values()
        .flat_map(|n| n.input.required.iter())
        .find(|(_, s)| s.type_name() == "COMBO" && matches!(s.kind, comfy_api::InputKind::Type(_)))
        .expect("some V3 combo input exists");
    assert!(
        v3_combo.1.combo_options().is_some(),
        "V3 combo {} must expose options",
        v3_combo.0
    );
    let v3 = info.nodes.values().filter(|n| n.is_v3_schema()).count();
    assert_eq!(v3, 230, "classes with the V3 key set");
}

#[test]
fn selected_object_info_tells_v1_from_v3() {
    let doc = capture("http_get_object_info_selected.json");
    let get = |class: &str| -> comfy_api::NodeInfo {
        let info: ObjectInfo = decode(class, &doc["responses"][class]["body"]);
        info.nodes[class].clone()
    };
    let blur = get("ImageBlur");
    assert!(
        blur.is_v3_schema() && blur.display_name.is_none(),
        "ImageBlur is a V3 node"
    );
    let empty = get("EmptyImage");
    assert!(!empty.is_v3_schema(), "EmptyImage is a V1 node");
}

#[test]
fn queue_pending_is_sorted_into_execution_order() {
    let doc = capture("http_get_queue_running_and_pending.json");
    let raw: Vec<f64> = doc["body"]["queue_pending"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i[0].as_f64().unwrap())
        .collect();
    let q: QueueState = decode("queue", &doc["body"]);
    let got: Vec<f64> = q.pending.iter().map(|i| i.number).collect();
    let mut want = raw.clone();
    want.sort_by(f64::total_cmp);
    assert_ne!(raw, want, "the capture is in heap order, not sorted");
    assert_eq!(got, want, "pending must come out sorted by number");
    assert_eq!(q.running.len(), 1);
    assert!(q.contains(&q.running[0].prompt_id));
}

#[test]
fn history_outcomes_follow_the_robust_rule() {
    let outcome = |file: &str| {
        let doc = capture(file);
        let h: History = decode(file, &doc["body"]);
        h.entries[0].1.outcome()
    };
    assert_eq!(outcome("http_get_history_success.json"), Outcome::Success);
    match outcome("http_get_history_failure.json") {
        Outcome::Failed(Some(e)) => {
            assert_eq!(
                (e.node_id.as_str(), e.node_type.as_str()),
                ("2", "ImageBlur")
            );
            assert!(!e.traceback.is_empty());
        }
        other => panic!("failure capture must be Failed with its error, got {other:?}"),
    }
    assert!(matches!(
        outcome("http_get_history_interrupted.json"),
        Outcome::Interrupted(Some(_))
    ));

    // The dependency-cycle quirk: status says success, but an execution_error is recorded.
    let quirk: comfy_api::HistoryStatus = serde_json::from_value(serde_json::json!({
        "status_str": "success", "completed": true,
        "messages": [["execution_start", {"prompt_id": "p", "timestamp": 1}],
                     ["execution_error", {"prompt_id": "p", "node_id": "3", "node_type": "X",
                      "exception_type": "graph.DependencyCycleError", "exception_message": "cycle",
                      "traceback": [], "current_inputs": [], "current_outputs": [], "executed": []}]]
    }))
    .unwrap();
    match quirk.outcome() {
        Outcome::Failed(Some(e)) => assert!(e.is_dependency_cycle()),
        other => panic!("cycle quirk must count as failed, got {other:?}"),
    }
}

#[test]
fn history_outputs_expose_files_of_every_kind() {
    let doc = capture("http_get_history_latent.json");
    let h: History = decode("latent", &doc["body"]);
    let kinds: Vec<&str> = h.entries[0].1.files().map(|(_, k, _)| k).collect();
    assert!(
        kinds.contains(&"latents"),
        "latent outputs must be file refs: {kinds:?}"
    );

    let out = comfy_api::NodeOutput::from_map(
        serde_json::from_value(serde_json::json!({
            "gifs": [{"filename": "a.webp", "subfolder": "", "type": "output", "format": "image/webp", "frame_rate": 8.0}],
            "audio": [{"filename": "a.flac", "subfolder": "s", "type": "temp"}],
            "text": ["hello", 3],
            "animated": [true],
            "images": "not a list of files",
            "custom": {"x": 1}
        }))
        .unwrap(),
    );
    assert_eq!(out.files["gifs"][0].extra["frame_rate"], 8.0);
    assert_eq!(out.files["audio"][0].file_type, "temp");
    assert_eq!(out.text, vec!["hello".to_owned(), "3".to_owned()]);
    assert_eq!(out.animated, vec![true]);
    assert!(
        out.other.contains_key("images") && out.other.contains_key("custom"),
        "odd shapes stay raw"
    );
    let ui = out.ui_values();
    assert_eq!(
        serde_json::Value::Object(ui),
        serde_json::json!({
            "text": ["hello", "3"],
            "animated": [true],
            "images": "not a list of files",
            "custom": {"x": 1}
        }),
        "everything but the files, in the node's own shape"
    );
}

#[test]
fn every_ws_capture_message_decodes_without_unknown() {
    let files = list("comfyui-captures", "ws_", ".json");
    assert!(
        files.len() >= 20,
        "expected the ws capture set, found {}",
        files.len()
    );
    let mut texts = 0;
    for file in &files {
        let doc = capture(file);
        for post in doc["posts"].as_array().into_iter().flatten() {
            decode_record(file, post);
        }
        for ws in doc["websockets"].as_array().expect("websockets") {
            for m in ws["messages"].as_array().expect("messages") {
                if m["frame"] != "text" {
                    continue;
                }
                let text = serde_json::to_string(&m["message"]).unwrap();
                let ev =
                    WsEvent::from_text(&text).unwrap_or_else(|e| panic!("{file}: {e}: {text}"));
                // By debug text, so that a NaN step count would compare equal to itself.
                assert_eq!(
                    format!("{:?}", Ok::<_, ()>(&ev)),
                    format!(
                        "{:?}",
                        WsEvent::from_text_via_tree(&text).as_ref().map_err(drop)
                    ),
                    "{file}: the direct and tree-based decoders disagree on {text}"
                );
                assert!(
                    !matches!(ev, WsEvent::UnknownText { .. }),
                    "{file}: known type decoded as unknown: {text}"
                );
                texts += 1;
            }
        }
    }
    assert!(texts > 300, "only {texts} text messages seen");
}

#[test]
fn ws_special_messages_keep_their_meaning() {
    let doc = capture("ws_reconnect_same_client_id.json");
    let replay = doc["websockets"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|w| w["messages"].as_array().unwrap())
        .filter(|m| m["frame"] == "text" && m["message"]["type"] == "executing")
        .map(|m| WsEvent::from_text(&m["message"].to_string()).unwrap())
        .find(|e| matches!(e, WsEvent::Executing(x) if x.prompt_id.is_none()))
        .expect("the reconnect capture has an executing without prompt_id");
    assert!(
        matches!(replay, WsEvent::Executing(ref x) if x.node.is_some() && x.finished_prompt().is_none())
    );

    let end = WsEvent::from_text(r#"{"type":"executing","data":{"node":null,"prompt_id":"p1"}}"#)
        .unwrap();
    assert!(matches!(end, WsEvent::Executing(ref x) if x.finished_prompt() == Some("p1")));

    let first = WsEvent::from_text(
        r#"{"type":"status","data":{"status":{"exec_info":{"queue_remaining":2}},"sid":"abc"}}"#,
    )
    .unwrap();
    assert!(
        matches!(first, WsEvent::Status(ref s) if s.sid.as_deref() == Some("abc") && s.queue_remaining() == 2)
    );

    let blocked = WsEvent::from_text(
        r#"{"type":"execution_error","data":{"prompt_id":"p","node_id":"4","node_type":"X","executed":[],
            "exception_message":"Execution Blocked: no","exception_type":"ExecutionBlocked","traceback":[],
            "current_inputs":[],"current_outputs":[]}}"#,
    )
    .unwrap();
    assert!(
        matches!(blocked, WsEvent::ExecutionError(ref e) if e.is_blocked() && e.timestamp.is_none())
    );

    let custom = WsEvent::from_text(r#"{"type":"crystools.monitor","data":{"cpu":3}}"#).unwrap();
    assert!(matches!(custom, WsEvent::UnknownText { ref kind, .. } if kind == "crystools.monitor"));
}

#[test]
fn binary_frame_captures_decode() {
    let one = std::fs::read(capture_path("ws_binary_frame_type1_png_example.bin")).unwrap();
    match WsEvent::from_binary(&one).unwrap() {
        WsEvent::PreviewImage { format, image } => {
            assert_eq!(format, 2, "PNG");
            assert!(image.starts_with(b"\x89PNG"));
            assert_eq!(image.len(), one.len() - 8);
        }
        other => panic!("type 1 frame decoded as {other:?}"),
    }
    let four = std::fs::read(capture_path(
        "ws_binary_frame_type4_with_metadata_example.bin",
    ))
    .unwrap();
    match WsEvent::from_binary(&four).unwrap() {
        WsEvent::PreviewImageWithMetadata { metadata, image } => {
            assert_eq!(metadata.node_id.as_deref(), Some("2"));
            assert_eq!(metadata.image_type.as_deref(), Some("image/png"));
            assert!(metadata.prompt_id.is_some());
            assert!(image.starts_with(b"\x89PNG"));
        }
        other => panic!("type 4 frame decoded as {other:?}"),
    }
    // Event 3 as recorded in ws_binary_progress_text.json.
    let mut three = vec![0, 0, 0, 3, 0, 0, 0, 1, b'2'];
    three.extend_from_slice(b"width: 32, height: 16\n batch size: 2");
    assert_eq!(
        WsEvent::from_binary(&three).unwrap(),
        WsEvent::ProgressText {
            node_id: "2".into(),
            text: "width: 32, height: 16\n batch size: 2".into()
        }
    );
}

#[test]
fn malformed_frames_give_typed_errors() {
    use comfy_api::ws::FrameError;
    for bad in [
        "",
        "not json",
        "[1,2]",
        r#"{"data":{}}"#,
        r#"{"type":5}"#,
        r#"{"type":"progress","data":{"value":"x"}"#,
    ] {
        assert!(WsEvent::from_text(bad).is_err(), "{bad:?} must be refused");
    }
    let err =
        WsEvent::from_text(r#"{"type":"progress","data":{"value":[1],"max":3}}"#).unwrap_err();
    assert!(
        matches!(err, FrameError::BadData { ref path, .. } if path == "value"),
        "{err}"
    );
    assert!(matches!(
        WsEvent::from_binary(&[0, 0]),
        Err(FrameError::TooShort { .. })
    ));
    assert!(matches!(
        WsEvent::from_binary(&[0, 0, 0, 4, 0xff, 0, 0, 0, b'{']),
        Err(FrameError::BadLength { .. })
    ));
    assert!(matches!(
        WsEvent::from_binary(&[0, 0, 0, 4, 0, 0, 0, 1, b'{']),
        Err(FrameError::BadPayload { .. })
    ));
    assert!(matches!(
        WsEvent::from_binary(&[0, 0, 0, 3, 0, 0, 0, 1, 0xff]),
        Err(FrameError::BadPayload { .. })
    ));
    assert!(matches!(
        WsEvent::from_binary(&[0, 0, 0, 9, 1, 2]),
        Ok(WsEvent::UnknownBinary { event: 9, .. })
    ));
}

#[test]
fn malformed_http_bodies_name_the_failing_path() {
    let bad = br#"{"system":{"os":"posix","ram_total":"lots"},"devices":[]}"#;
    let de = &mut serde_json::Deserializer::from_slice(bad);
    let err = serde_path_to_error::deserialize::<_, SystemStats>(de).unwrap_err();
    assert_eq!(err.path().to_string(), "system.ram_total");
    assert!(serde_json::from_slice::<QueueState>(br#"{"queue_running":[[1]]}"#).is_err());
    assert!(serde_json::from_slice::<History>(b"{\"a\": {\"prompt\": ").is_err());
}
