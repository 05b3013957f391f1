//! Replays the recorded HTTP captures against a simulated node and compares status,
//! Content-Type and body (ids, numbers of accepted prompts and timestamps normalised).

mod support;

use serde_json::{Value, json};
use support::*;

fn req_body(req: &Value) -> Option<Value> {
    req.get("body").cloned()
}

fn headers_of(req: &Value) -> Vec<(String, String)> {
    req.get("headers")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// Replays one recorded request and checks the answer matches the recording.
async fn replay(node: &comfy_sim::SimNode, name: &str, rec: &Value) {
    let req = &rec["request"];
    let hdrs = headers_of(req);
    let hdr_refs: Vec<(&str, &str)> = hdrs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let body = req_body(req);
    let ans = request(
        node,
        req["method"].as_str().unwrap(),
        req["path"].as_str().unwrap(),
        body.as_ref(),
        &hdr_refs,
    )
    .await;
    assert_eq!(
        ans.status as u64,
        rec["status"].as_u64().unwrap(),
        "{name}: status must match the capture (body {})",
        ans.text()
    );
    let want_ct = rec["headers"].get("Content-Type").and_then(Value::as_str);
    assert_eq!(
        ans.content_type.as_deref(),
        want_ct,
        "{name}: Content-Type must match"
    );
    if let Some(want) = rec.get("body") {
        let mut got = normalize(&ans.json());
        let mut want = normalize(want);
        // The capture session's counter had advanced; accepted numbers are compared elsewhere.
        for v in [&mut got, &mut want] {
            if let Some(o) = v.as_object_mut()
                && o.contains_key("prompt_id")
            {
                o.insert("number".into(), json!("<n>"));
            }
        }
        assert_eq!(got, want, "{name}: body must match the capture");
    } else if let Some(text) = rec.get("body_text").and_then(Value::as_str) {
        assert_eq!(ans.text(), text, "{name}: text body must match");
    }
    if let Some(len) = rec["headers"].get("Content-Length").and_then(Value::as_str)
        && rec.get("body").is_some()
        && !rec["body"].to_string().contains("prompt_id")
    {
        assert_eq!(
            ans.bytes.len().to_string(),
            len,
            "{name}: Python-formatted body length must match"
        );
    }
}

#[tokio::test]
async fn plain_routes_answer_like_the_capture_server() {
    let node = capture_node().await;
    for name in [
        "http_get_system_stats.json",
        "http_get_api_system_stats.json",
        "http_get_queue_idle.json",
        "http_get_prompt_idle.json",
        "http_get_api_prompt.json",
        "http_get_features.json",
        "http_get_api_features.json",
        "http_get_embeddings.json",
        "http_get_extensions.json",
        "http_get_models.json",
        "http_get_models_checkpoints.json",
        "http_get_models_unknown_folder.json",
        "http_get_unknown_route.json",
        "http_get_ws_without_upgrade.json",
        "http_get_object_info_unknown_class.json",
        "http_get_history_empty.json",
        "http_get_history_unknown_id.json",
        "http_get_history_bad_max_items.json",
        "http_post_free_empty_body.json",
        "http_post_free_empty_object.json",
        "http_post_free_free_memory.json",
        "http_post_free_unload_models.json",
        "http_post_interrupt_global.json",
        "http_post_interrupt_idle.json",
        "http_post_interrupt_invalid_json.json",
        "http_post_interrupt_other_prompt_id.json",
        "http_post_queue_invalid_json.json",
        "http_post_queue_empty_object.json",
        "http_post_queue_delete_unknown.json",
        "http_post_history_invalid_json.json",
        "http_post_history_delete_unknown.json",
    ] {
        replay(&node, name, &capture(name)).await;
    }
}

#[tokio::test]
async fn object_info_classes_match_the_capture() {
    let node = capture_node().await;
    let rec = capture("http_get_object_info_selected.json");
    for (class, r) in rec["responses"].as_object().unwrap() {
        replay(&node, &format!("object_info/{class}"), r).await;
    }
    let all = request(&node, "GET", "/object_info", None, &[]).await;
    let meta = capture("http_get_object_info_full_meta.json");
    assert_eq!(
        all.json().as_object().unwrap().len() as u64,
        meta["node_class_count"].as_u64().unwrap()
    );
}

#[tokio::test]
async fn every_post_prompt_case_is_answered_like_the_capture() {
    let node = capture_node().await;
    // The uploaded-image case needs the file on this node.
    std::fs::write(
        node.data_dir().join("input/capture_upload.png"),
        comfy_sim::images::png(2, 2, &[0; 16], false, &[]),
    )
    .unwrap();
    let dir = shared_dir().join("comfyui-captures");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().to_string()))
        .filter(|n| n.starts_with("http_post_prompt_") && n != "http_post_prompt_summary.json")
        .collect();
    names.sort();
    assert!(
        names.len() >= 30,
        "expected the full set of POST /prompt captures, found {}",
        names.len()
    );
    for name in &names {
        replay(&node, name, &capture(name)).await;
    }
}

#[tokio::test]
async fn number_counter_counts_rejected_posts_and_front_negates() {
    let node = capture_node().await;
    let good = capture("http_post_prompt_success.json")["request"]["body"].clone();
    let a = request(&node, "POST", "/prompt", Some(&good), &[])
        .await
        .json();
    assert_eq!(a["number"], json!(0));
    let bad = request(&node, "POST", "/prompt", Some(&json!({"no": 1})), &[]).await;
    assert_eq!(bad.status, 400);
    let mut front = good.clone();
    front["front"] = json!(true);
    let f = request(&node, "POST", "/prompt", Some(&front), &[])
        .await
        .json();
    assert_eq!(
        f["number"],
        json!(-2),
        "the rejected POST still moved the counter"
    );
    let mut explicit = good.clone();
    explicit["number"] = json!(7.5);
    let e = request(&node, "POST", "/prompt", Some(&explicit), &[]).await;
    assert!(
        e.text().contains("\"number\": 7.5"),
        "explicit numbers come back as floats: {}",
        e.text()
    );
    let mut with_id = good.clone();
    with_id["prompt_id"] = json!(12345);
    assert_eq!(
        request(&node, "POST", "/prompt", Some(&with_id), &[])
            .await
            .json()["prompt_id"],
        json!("12345")
    );
}

#[tokio::test]
async fn queue_pending_is_kept_in_python_heap_order() {
    let mut cfg = comfy_sim::NodeConfig::capture_cpu().with_time_scale(1.0);
    cfg.seconds_per_megapixel = 0.2;
    let node = node_with(cfg).await;
    let rec = capture("ws_queue_ordering.json");
    let posts = rec["posts"].as_array().unwrap();
    let first = request(
        &node,
        "POST",
        "/prompt",
        Some(&posts[0]["request"]["body"]),
        &[],
    )
    .await;
    assert_eq!(first.status, 200);
    // Wait until the slow prompt runs, then post the others with the recorded priorities.
    for _ in 0..100 {
        if !request(&node, "GET", "/queue", None, &[]).await.json()["queue_running"]
            .as_array()
            .unwrap()
            .is_empty()
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let mut ids = Vec::new();
    for (counter, p) in (1..).zip(posts[1..].iter()) {
        let mut body = p["request"]["body"].clone();
        if body.get("number").is_none() && body.get("front").is_none() {
            body["number"] = json!(counter + 45);
        } else if body.get("front").is_some() {
            body.as_object_mut().unwrap().remove("front");
            body["number"] = json!(-(counter + 45));
        }
        ids.push(
            request(&node, "POST", "/prompt", Some(&body), &[])
                .await
                .json()["prompt_id"]
                .clone(),
        );
    }
    let q = request(&node, "GET", "/queue", None, &[]).await.json();
    let got: Vec<f64> = q["queue_pending"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i[0].as_f64().unwrap())
        .collect();
    let want: Vec<f64> =
        capture("http_get_queue_running_and_pending.json")["body"]["queue_pending"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i[0].as_f64().unwrap())
            .collect();
    assert_eq!(got, want, "pending list must be the raw heap array");
    for item in q["queue_pending"].as_array().unwrap() {
        assert_eq!(
            item.as_array().unwrap().len(),
            5,
            "queue items are 5-element arrays"
        );
    }
    // Deleting from pending answers 200 with an empty body and removes exactly that item.
    let del = request(
        &node,
        "POST",
        "/queue",
        Some(&json!({"delete": [ids[1]]})),
        &[],
    )
    .await;
    assert_eq!((del.status, del.bytes.len()), (200, 0));
    let after = request(&node, "GET", "/queue", None, &[]).await.json();
    assert_eq!(after["queue_pending"].as_array().unwrap().len(), 4);
    request(&node, "POST", "/queue", Some(&json!({"clear": true})), &[]).await;
    let cleared = request(&node, "GET", "/queue", None, &[]).await.json();
    assert!(cleared["queue_pending"].as_array().unwrap().is_empty());
    assert_eq!(
        cleared["queue_running"].as_array().unwrap().len(),
        1,
        "clear leaves the running prompt alone"
    );
}

#[tokio::test]
async fn uploads_dedupe_rename_and_refuse_escapes() {
    let node = capture_node().await;
    let client = reqwest::Client::new();
    let upload = |bytes: Vec<u8>, fields: Vec<(&'static str, &'static str)>| {
        let client = client.clone();
        let url = format!("{}/upload/image", node.url());
        async move {
            let mut form = reqwest::multipart::Form::new().part(
                "image",
                reqwest::multipart::Part::bytes(bytes).file_name("capture_upload.png"),
            );
            for (k, v) in fields {
                form = form.text(k, v);
            }
            let r = client.post(url).multipart(form).send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.text().await.unwrap())
        }
    };
    let a = vec![1u8; 82];
    let b = vec![2u8; 82];
    assert_eq!(
        upload(a.clone(), vec![]).await,
        (
            200,
            r#"{"name": "capture_upload.png", "subfolder": "", "type": "input"}"#.into()
        )
    );
    assert_eq!(
        upload(a.clone(), vec![]).await.1,
        r#"{"name": "capture_upload.png", "subfolder": "", "type": "input"}"#
    );
    assert_eq!(
        upload(b.clone(), vec![]).await.1,
        r#"{"name": "capture_upload (1).png", "subfolder": "", "type": "input"}"#
    );
    assert_eq!(
        upload(b.clone(), vec![("overwrite", "true")]).await.1,
        r#"{"name": "capture_upload.png", "subfolder": "", "type": "input"}"#
    );
    assert_eq!(
        upload(a.clone(), vec![("subfolder", "coord"), ("type", "temp")])
            .await
            .1,
        r#"{"name": "capture_upload.png", "subfolder": "coord", "type": "temp"}"#
    );
    assert_eq!(
        upload(a.clone(), vec![("subfolder", "../../..")]).await,
        (400, String::new())
    );
    let none = client
        .post(format!("{}/upload/image", node.url()))
        .multipart(reqwest::multipart::Form::new().text("x", "1"))
        .send()
        .await
        .unwrap();
    assert_eq!(none.status().as_u16(), 400);
}

#[tokio::test]
async fn origin_mismatch_and_body_limit_are_enforced() {
    let mut cfg = comfy_sim::NodeConfig::capture_cpu();
    cfg.max_upload_size = 1000;
    let node = node_with(cfg).await;
    let r = request(
        &node,
        "GET",
        "/queue",
        None,
        &[("Origin", "http://example.invalid")],
    )
    .await;
    assert_eq!((r.status, r.bytes.len()), (403, 0));
    let big = Value::String("x".repeat(5000));
    let r = request(&node, "POST", "/prompt", Some(&big), &[]).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.text(), "Maximum request body size 1000 exceeded.");
}
