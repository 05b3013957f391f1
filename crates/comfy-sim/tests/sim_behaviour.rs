//! Behaviour beyond the captures: the simulated GPU (model residency, VRAM, OOM), faults,
//! crash and restart, and a 200-node fleet in one process.

mod support;

use comfy_sim::{FaultConfig, FleetConfig, ModelFile, NodeConfig};
use serde_json::{Value, json};
use support::*;

fn txt2img(ckpt: &str, seed: u64, steps: u32) -> Value {
    json!({"prompt": {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
        "3": {"class_type": "KSampler", "inputs": {"seed": seed, "steps": steps, "cfg": 7.0, "sampler_name": "euler",
              "scheduler": "normal", "denoise": 1.0, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "t2i"}}
    }, "client_id": "gpu-test"})
}

fn gpu_node(vram_gb: u64) -> NodeConfig {
    let mut cfg = NodeConfig::named("gpu").with_time_scale(0.01);
    cfg.gpu = comfy_sim::GpuConfig::cuda("NVIDIA GeForce RTX 4090", vram_gb << 30);
    cfg.gpu.vram_baseline = 0;
    cfg.models.clear();
    cfg.with_model(
        "checkpoints",
        ModelFile {
            name: "a.safetensors".into(),
            size: Some(6 << 30),
            load_seconds: Some(1.0),
        },
    )
    .with_model(
        "checkpoints",
        ModelFile {
            name: "b.safetensors".into(),
            size: Some(6 << 30),
            load_seconds: Some(1.0),
        },
    )
}

async fn run(node: &comfy_sim::SimNode, body: &Value) -> Vec<Got> {
    let mut ws = Ws::connect(node, Some("gpu-test")).await;
    ws.next(5.0).await.unwrap();
    let r = request(node, "POST", "/prompt", Some(body), &[]).await;
    assert_eq!(r.status, 200, "accepted: {}", r.text());
    let id = r.json()["prompt_id"].as_str().unwrap().to_string();
    ws.until_done(&id, 10.0).await
}

fn types(frames: &[Got]) -> Vec<String> {
    frames
        .iter()
        .filter_map(|g| match g {
            Got::Text(v) => v["type"].as_str().map(String::from),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn models_load_once_evict_lru_and_free_on_request() {
    let node = node_with(gpu_node(16)).await;
    let objinfo = request(
        &node,
        "GET",
        "/object_info/CheckpointLoaderSimple",
        None,
        &[],
    )
    .await
    .json();
    assert_eq!(
        objinfo["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0],
        json!(["a.safetensors", "b.safetensors"])
    );
    let frames = run(&node, &txt2img("a.safetensors", 1, 4)).await;
    let steps: Vec<Value> = frames
        .iter()
        .filter_map(|g| match g {
            Got::Text(v) if v["type"] == "progress" => Some(v["data"]["value"].clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        steps,
        vec![json!(1), json!(2), json!(3), json!(4)],
        "one progress per sampler step"
    );
    assert!(types(&frames).contains(&"execution_success".to_string()));
    let snap = node.snapshot().unwrap();
    assert_eq!(snap.resident_models, vec!["a.safetensors".to_string()]);
    let stats = request(&node, "GET", "/system_stats", None, &[])
        .await
        .json();
    assert_eq!(
        stats["devices"][0]["vram_free"],
        json!((16u64 << 30) - (6u64 << 30))
    );
    run(&node, &txt2img("b.safetensors", 2, 1)).await;
    assert_eq!(
        node.snapshot().unwrap().resident_models,
        vec!["a.safetensors".to_string(), "b.safetensors".to_string()]
    );
    run(&node, &txt2img("a.safetensors", 3, 1)).await;
    // 16 GB holds two 6 GB models plus activations; both stay, `a` is now most recent.
    assert_eq!(
        node.snapshot().unwrap().resident_models,
        vec!["b.safetensors".to_string(), "a.safetensors".to_string()]
    );
    request(
        &node,
        "POST",
        "/free",
        Some(&json!({"unload_models": true})),
        &[],
    )
    .await;
    assert!(
        node.snapshot().unwrap().resident_models.is_empty(),
        "/free unloads every model when idle"
    );
}

#[tokio::test]
async fn a_model_larger_than_the_gpu_fails_with_torch_oom() {
    let node = node_with(gpu_node(4)).await;
    let frames = run(&node, &txt2img("a.safetensors", 1, 2)).await;
    let err = frames.iter().find_map(|g| match g {
        Got::Text(v) if v["type"] == "execution_error" => Some(v["data"].clone()),
        _ => None,
    });
    let err = err.expect("an execution_error");
    assert_eq!(err["exception_type"], "torch.OutOfMemoryError");
    assert_eq!(err["node_type"], "CheckpointLoaderSimple");
    assert!(
        err["exception_message"]
            .as_str()
            .unwrap()
            .contains("out of memory")
    );
}

#[tokio::test]
async fn video_frames_take_far_less_memory_than_a_batch_of_images_of_the_same_pixels() {
    let node = node_with(gpu_node(16)).await;
    // 33 frames of 832×480, as the shared Wan 2.1 workflow samples: a video model holds them
    // in a few GiB, where 33 images of that size would need about 30.
    let with_latent = |latent: Value| {
        let mut body = txt2img("a.safetensors", 5, 1);
        body["prompt"]["5"] = latent;
        body
    };
    let video = with_latent(json!({"class_type": "EmptyHunyuanLatentVideo",
        "inputs": {"width": 832, "height": 480, "length": 33, "batch_size": 1}}));
    let frames = run(&node, &video).await;
    assert!(
        types(&frames).contains(&"execution_success".to_string()),
        "{:?}",
        types(&frames)
    );
    let images = with_latent(json!({"class_type": "EmptyLatentImage",
        "inputs": {"width": 832, "height": 480, "batch_size": 33}}));
    let frames = run(&node, &images).await;
    let err = frames.iter().find_map(|g| match g {
        Got::Text(v) if v["type"] == "execution_error" => Some(v["data"].clone()),
        _ => None,
    });
    assert_eq!(
        err.expect("an execution_error")["exception_type"],
        "torch.OutOfMemoryError"
    );
}

#[tokio::test]
async fn injected_faults_fail_prompts_and_routes() {
    let node = node_with(gpu_node(24)).await;
    node.set_faults(FaultConfig {
        fail_class: Some("KSampler".into()),
        fail_count: 1,
        ..FaultConfig::default()
    })
    .unwrap();
    let first = run(&node, &txt2img("a.safetensors", 1, 1)).await;
    assert!(
        types(&first).contains(&"execution_error".to_string()),
        "first prompt fails at the KSampler"
    );
    let second = run(&node, &txt2img("a.safetensors", 2, 1)).await;
    assert!(
        types(&second).contains(&"execution_success".to_string()),
        "the fault only hits the configured count"
    );

    let set = request(
        &node,
        "POST",
        "/__sim/faults",
        Some(&json!({"http_500_routes": ["/queue"], "system_stats_fail": true})),
        &[],
    )
    .await;
    assert_eq!(set.status, 200);
    assert_eq!(
        request(&node, "GET", "/api/queue", None, &[]).await.status,
        500
    );
    assert_eq!(
        request(&node, "GET", "/system_stats", None, &[])
            .await
            .status,
        500
    );
    assert_eq!(
        request(&node, "GET", "/history", None, &[]).await.status,
        200
    );
}

#[tokio::test]
async fn crash_drops_connections_and_restart_comes_back_empty() {
    let node = capture_node().await;
    let body = capture("http_post_prompt_success.json")["request"]["body"].clone();
    let mut ws = Ws::connect(&node, Some("c1")).await;
    ws.next(5.0).await.unwrap();
    let id = request(&node, "POST", "/prompt", Some(&body), &[])
        .await
        .json()["prompt_id"]
        .as_str()
        .unwrap()
        .to_string();
    ws.until_done(&id, 5.0).await;
    node.crash();
    assert!(
        ws.next(2.0).await.is_none(),
        "the socket dies with the node"
    );
    assert!(
        reqwest::get(format!("{}/queue", node.url())).await.is_err(),
        "nothing listens after a crash"
    );
    node.restart().await.unwrap();
    let hist = request(&node, "GET", "/history", None, &[]).await.json();
    assert_eq!(hist, json!({}), "a restarted node has no history");
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_nodes_run_in_one_process() {
    let before = rss_kib();
    let nodes = comfy_sim::spawn_fleet(FleetConfig::uniform(
        "fleet",
        200,
        &NodeConfig::named("t").with_time_scale(0.0),
    ))
    .await
    .unwrap();
    let client = reqwest::Client::new();
    for n in &nodes {
        let r = client
            .get(format!("{}/system_stats", n.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{} answers", n.name());
    }
    let after = rss_kib();
    println!(
        "RSS for 200 nodes: {} MiB (process grew by {} MiB)",
        after / 1024,
        after.saturating_sub(before) / 1024
    );
}

#[tokio::test]
async fn vae_files_of_the_node_are_valid_vae_loader_choices() {
    let cfg = NodeConfig::named("vae").with_time_scale(0.0);
    let node = node_with(cfg).await;
    let body = json!({"prompt": {
        "1": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}},
        "2": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "3": {"class_type": "VAEDecode", "inputs": {"samples": ["2", 0], "vae": ["1", 0]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "vae"}}
    }});
    let r = request(&node, "POST", "/prompt", Some(&body), &[]).await;
    assert_eq!(
        r.status,
        200,
        "a vae file the node holds is accepted: {}",
        r.text()
    );
    let mut bad = body.clone();
    bad["prompt"]["1"]["inputs"]["vae_name"] = json!("missing.safetensors");
    let r = request(&node, "POST", "/prompt", Some(&bad), &[]).await;
    assert_eq!(
        r.status,
        400,
        "an unknown vae file is refused: {}",
        r.text()
    );
    assert_eq!(
        r.json()["node_errors"]["1"]["errors"][0]["extra_info"]["input_config"][0],
        json!(["ae.safetensors", "sdxl_vae.safetensors", "pixel_space"])
    );
}
