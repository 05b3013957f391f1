//! Replays the recorded `/view` variants (status and Content-Type) after running the same prompt.

mod support;

use support::*;

#[tokio::test]
async fn view_variants_answer_like_the_capture() {
    let node = capture_node().await;
    let rec = capture("http_get_view.json");
    let mut ws = Ws::connect(&node, Some("view-test")).await;
    ws.next(5.0).await.unwrap();
    let mut body = rec["prompt_post"]["request"]["body"].clone();
    body["client_id"] = "view-test".into();
    let id = request(&node, "POST", "/prompt", Some(&body), &[])
        .await
        .json()["prompt_id"]
        .as_str()
        .unwrap()
        .to_string();
    ws.until_done(&id, 5.0).await;
    let hist = request(&node, "GET", &format!("/history/{id}"), None, &[])
        .await
        .json();
    let outputs = &hist[&id]["outputs"];
    assert_eq!(
        normalize(outputs),
        normalize(&rec["history_outputs"]),
        "history outputs must match the capture"
    );
    let temp_name = outputs["4"]["images"][0]["filename"]
        .as_str()
        .unwrap()
        .to_string();
    let recorded_temp = rec["history_outputs"]["4"]["images"][0]["filename"]
        .as_str()
        .unwrap();
    for (case, r) in rec["responses"].as_object().unwrap() {
        if case == "raw_dotdot_in_url_path" {
            continue; // the recording client normalised the URL path itself
        }
        let path = r["request"]["path"]
            .as_str()
            .unwrap()
            .replace(recorded_temp, &temp_name);
        let ans = request(&node, "GET", &path, None, &[]).await;
        assert_eq!(
            ans.status as u64,
            r["status"].as_u64().unwrap(),
            "{case}: status"
        );
        assert_eq!(
            ans.content_type.as_deref(),
            r["headers"].get("Content-Type").and_then(|v| v.as_str()),
            "{case}: Content-Type"
        );
        if let Some(cd) = r["headers"]
            .get("Content-Disposition")
            .and_then(|v| v.as_str())
        {
            let want = cd.replace(recorded_temp, &temp_name);
            assert_eq!(
                ans.headers
                    .get("content-disposition")
                    .and_then(|v| v.to_str().ok()),
                Some(want.as_str()),
                "{case}: disposition"
            );
        }
        if let Some(hex_prefix) = r
            .get("body_first_16_bytes_hex")
            .and_then(|v| v.as_str())
            .filter(|h| !h.is_empty())
        {
            // A .latent starts with its header length, which differs; compare the header start.
            let (from, to) = if case == "latent_file" {
                (8, 16)
            } else {
                (0, 4)
            };
            let got = hex::encode(&ans.bytes[from..ans.bytes.len().min(to)]);
            assert_eq!(got, hex_prefix[from * 2..to * 2], "{case}: file magic");
        }
    }
}
