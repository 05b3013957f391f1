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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_over_the_body_limit_is_413_with_a_body() {
    let fleet =
        support::start_sim_fleet(vec![SimConfig::named("gpu-0").with_time_scale(0.0)]).await;
    // The default `limits.max_http_body_bytes` is 16 MiB.
    let response = upload(&fleet, "big.png", vec![7u8; 20 << 20]).await;
    assert_eq!(response.status().as_u16(), 413);
    let body = response.text().await.expect("body");
    assert!(!body.is_empty(), "the 413 says why");

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
