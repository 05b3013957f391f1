//! Replays the recorded WebSocket scenarios: the same prompts are posted to a simulated node and
//! the sequence of message types and key fields must equal the recording.

mod support;

use serde_json::{Value, json};
use support::*;

fn recorded(rec: &Value, socket: usize) -> Vec<String> {
    rec["websockets"][socket]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(summarize_captured)
        .collect()
}

async fn post(node: &comfy_sim::SimNode, body: &Value) -> String {
    let r = request(node, "POST", "/prompt", Some(body), &[]).await;
    assert_eq!(r.status, 200, "prompt accepted: {}", r.text());
    r.json()["prompt_id"].as_str().unwrap().to_string()
}

/// Connects like the recording, posts its prompt and compares the whole socket transcript.
async fn replay_single(node: &comfy_sim::SimNode, name: &str, connect: bool) -> Vec<String> {
    let rec = capture(name);
    let entry = &rec["websockets"][0];
    let mut ws = Ws::connect(node, entry["client_id"].as_str()).await;
    if let Some(first) = entry.get("first_message_sent").filter(|v| !v.is_null()) {
        ws.send_text(&first.to_string()).await;
    }
    let mut got = Vec::new();
    if connect {
        // The connect status (and feature_flags reply) arrive before anything is posted.
        let n = if entry["first_message_sent"].is_null() {
            1
        } else {
            2
        };
        for _ in 0..n {
            got.push(summarize_live(&ws.next(5.0).await.expect("connect frames")));
        }
    } else {
        ws.next(5.0).await.expect("connect status");
    }
    let id = post(node, &rec["posts"][0]["request"]["body"]).await;
    got.extend(ws.until_done(&id, 5.0).await.iter().map(summarize_live));
    let want = recorded(&rec, 0);
    assert_eq!(got, want, "{name}: transcript must match the recording");
    got
}

#[tokio::test]
async fn success_then_cached_then_partially_cached_match_the_recordings() {
    let node = capture_node().await;
    replay_single(&node, "ws_success_save_image.json", true).await;
    replay_single(&node, "ws_cached_second_run.json", false).await;
    replay_single(&node, "ws_partially_cached.json", false).await;
    let files: Vec<String> = std::fs::read_dir(node.data_dir().join("output"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(
        files.iter().filter(|f| f.starts_with("ws_success")).count(),
        1,
        "a cached re-run writes no new file"
    );
}

#[tokio::test]
async fn preview_latent_error_and_binary_scenarios_match_the_recordings() {
    for name in [
        "ws_success_preview_image.json",
        "ws_success_save_latent.json",
        "ws_execution_error.json",
        "ws_binary_preview_legacy.json",
        "ws_binary_preview_with_metadata.json",
        "ws_binary_progress_text.json",
    ] {
        let node = capture_node().await;
        replay_single(&node, name, true).await;
    }
}

#[tokio::test]
async fn history_entries_have_the_recorded_shape() {
    let node = capture_node().await;
    replay_single(&node, "ws_success_save_image.json", true).await;
    let rec = capture("http_get_history_success.json");
    let all = request(&node, "GET", "/history", None, &[]).await.json();
    let (id, _) = all.as_object().unwrap().iter().next().unwrap();
    let one = request(&node, "GET", &format!("/history/{id}"), None, &[])
        .await
        .json();
    let mut want = normalize(&rec["body"]);
    let mut got = normalize(&one);
    for v in [&mut want, &mut got] {
        let entry = v.as_object_mut().unwrap().values_mut().next().unwrap();
        entry["prompt"][0] = json!("<n>");
    }
    assert_eq!(got, want, "history entry must match the recording");
    // max_items alone gives the newest; with offset it counts from the oldest.
    replay_single(&node, "ws_cached_second_run.json", false).await;
    let newest = request(&node, "GET", "/history?max_items=1", None, &[])
        .await
        .json();
    let oldest = request(&node, "GET", "/history?max_items=1&offset=0", None, &[])
        .await
        .json();
    assert_ne!(newest, oldest);
    assert_eq!(oldest.as_object().unwrap().keys().next(), Some(id));
}

#[tokio::test]
async fn failure_history_has_no_outputs_and_records_the_error() {
    let node = capture_node().await;
    replay_single(&node, "ws_execution_error.json", true).await;
    let hist = request(&node, "GET", "/history", None, &[]).await.json();
    let entry = hist.as_object().unwrap().values().next().unwrap();
    assert_eq!(entry["status"]["status_str"], "error");
    assert_eq!(entry["status"]["completed"], false);
    assert_eq!(entry["outputs"], json!({}));
    let last = entry["status"]["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap();
    assert_eq!(last[0], "execution_error");
}

async fn wait_for_executing(ws: &mut Ws, node_id: &str) -> Vec<Got> {
    let mut seen = Vec::new();
    while let Some(g) = ws.next(10.0).await {
        let hit =
            matches!(&g, Got::Text(v) if v["type"] == "executing" && v["data"]["node"] == node_id);
        seen.push(g);
        if hit {
            return seen;
        }
    }
    panic!("executing {node_id} never arrived");
}

#[tokio::test]
async fn interrupts_stop_at_the_next_node_like_the_recordings() {
    for (name, at_node) in [
        ("ws_interrupted.json", "2"),
        ("ws_interrupted_targeted.json", "2"),
    ] {
        let node = node_with(comfy_sim::NodeConfig::capture_cpu().with_time_scale(0.05)).await;
        let rec = capture(name);
        let mut ws = Ws::connect(&node, rec["websockets"][0]["client_id"].as_str()).await;
        let mut got: Vec<Got> = vec![ws.next(5.0).await.unwrap()];
        let id = post(&node, &rec["posts"][0]["request"]["body"]).await;
        got.extend(wait_for_executing(&mut ws, at_node).await);
        if name.contains("targeted") {
            // A targeted interrupt for another prompt is ignored.
            request(
                &node,
                "POST",
                "/interrupt",
                Some(&json!({"prompt_id": "not-the-running-prompt"})),
                &[],
            )
            .await;
            got.extend(wait_for_executing(&mut ws, "3").await);
            request(
                &node,
                "POST",
                "/interrupt",
                Some(&json!({"prompt_id": id})),
                &[],
            )
            .await;
        } else {
            request(&node, "POST", "/interrupt", None, &[]).await;
        }
        got.extend(ws.until_done(&id, 10.0).await);
        let got: Vec<String> = got.iter().map(summarize_live).collect();
        assert_eq!(got, recorded(&rec, 0), "{name}: transcript must match");
        let hist = request(&node, "GET", &format!("/history/{id}"), None, &[])
            .await
            .json();
        assert_eq!(hist[&id]["status"]["status_str"], "error");
    }
}

#[tokio::test]
async fn prompt_without_client_id_only_broadcasts_progress() {
    let node = capture_node().await;
    let rec = capture("ws_prompt_without_client_id.json");
    let mut a = Ws::connect(&node, rec["websockets"][0]["client_id"].as_str()).await;
    let mut anon = Ws::connect(&node, None).await;
    let mut got_a = vec![a.next(5.0).await.unwrap()];
    let first_anon = anon.next(5.0).await.unwrap();
    post(&node, &rec["posts"][0]["request"]["body"]).await;
    got_a.extend(a.drain(0.5).await);
    let got_a: Vec<String> = got_a.iter().map(summarize_live).collect();
    assert_eq!(got_a, recorded(&rec, 0), "listener transcript must match");
    let mut got_anon = vec![first_anon];
    got_anon.extend(anon.drain(0.3).await);
    let got_anon: Vec<String> = got_anon.iter().map(summarize_live).collect();
    assert_eq!(
        got_anon,
        recorded(&rec, 1),
        "anonymous socket transcript must match"
    );
}

#[tokio::test]
async fn two_clients_receive_only_their_own_events() {
    let node = capture_node().await;
    let rec = capture("ws_two_clients.json");
    let mut a = Ws::connect(&node, rec["websockets"][0]["client_id"].as_str()).await;
    let mut b = Ws::connect(&node, rec["websockets"][1]["client_id"].as_str()).await;
    let mut anon = Ws::connect(&node, None).await;
    for s in [&mut a, &mut b, &mut anon] {
        s.next(5.0).await.unwrap();
    }
    let id_a = post(&node, &rec["posts"][0]["request"]["body"]).await;
    let id_b = post(&node, &rec["posts"][1]["request"]["body"]).await;
    let got_a = a.drain(0.5).await;
    let got_b = b.drain(0.2).await;
    let got_anon = anon.drain(0.2).await;
    let ids_in = |frames: &[Got]| -> std::collections::HashSet<String> {
        frames
            .iter()
            .filter_map(|g| match g {
                Got::Text(v) => v["data"]["prompt_id"].as_str().map(String::from),
                _ => None,
            })
            .collect()
    };
    assert_eq!(
        ids_in(&got_a),
        [id_a.clone()].into_iter().collect(),
        "A only sees its prompt"
    );
    assert_eq!(
        ids_in(&got_b),
        [id_b.clone()].into_iter().collect(),
        "B only sees its prompt"
    );
    assert!(
        ids_in(&got_anon).is_empty(),
        "the anonymous socket sees no prompt events"
    );
    for frames in [&got_a, &got_b, &got_anon] {
        assert!(
            frames
                .iter()
                .any(|g| matches!(g, Got::Binary(b) if b[..4] == [0, 0, 0, 3])),
            "progress text reaches every socket"
        );
    }
    assert!(
        got_b
            .iter()
            .all(|g| !matches!(g, Got::Binary(b) if b[..4] == [0, 0, 0, 1])),
        "A's previews do not reach B"
    );
}

#[tokio::test]
async fn duplicate_client_id_older_close_silences_the_newer_socket() {
    let node = capture_node().await;
    let rec = capture("ws_duplicate_client_id.json");
    let cid = rec["websockets"][0]["client_id"].as_str().unwrap();
    let mut older = Ws::connect(&node, Some(cid)).await;
    older.next(5.0).await.unwrap();
    let mut newer = Ws::connect(&node, Some(cid)).await;
    newer.next(5.0).await.unwrap();
    let id1 = post(&node, &rec["posts"][0]["request"]["body"]).await;
    let got = newer.until_done(&id1, 5.0).await;
    assert!(
        got.iter()
            .any(|g| matches!(g, Got::Text(v) if v["type"] == "execution_success")),
        "the newest socket gets the events"
    );
    assert!(
        older.drain(0.2).await.is_empty(),
        "the older socket gets nothing"
    );
    older.stream.close(None).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    post(&node, &rec["posts"][1]["request"]["body"]).await;
    assert!(
        newer.drain(0.5).await.is_empty(),
        "after the older socket closed the newer one is unregistered"
    );
}

#[tokio::test]
async fn reconnect_during_a_run_gets_status_then_bare_executing() {
    let node = node_with(comfy_sim::NodeConfig::capture_cpu().with_time_scale(0.05)).await;
    let rec = capture("ws_reconnect_same_client_id.json");
    let cid = rec["websockets"][0]["client_id"].as_str().unwrap();
    let mut first = Ws::connect(&node, Some(cid)).await;
    first.next(5.0).await.unwrap();
    let id = post(&node, &rec["posts"][0]["request"]["body"]).await;
    wait_for_executing(&mut first, "2").await;
    first.stream.close(None).await.unwrap();
    while first.next(1.0).await.is_some() {}
    let mut second = Ws::connect(&node, Some(cid)).await;
    let mut got: Vec<Got> = Vec::new();
    got.extend(second.until_done(&id, 10.0).await);
    let got: Vec<String> = got
        .iter()
        .map(summarize_live)
        .filter(|s| !s.starts_with("progress_state"))
        .collect();
    let want: Vec<String> = recorded(&rec, 1)
        .into_iter()
        .filter(|s| !s.starts_with("progress_state"))
        .collect();
    assert_eq!(got, want, "reconnect transcript must match");
}
