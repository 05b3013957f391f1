//! The coordinator learns a checkpoint's load time from a cold start on a real (emulated) node
//! and exports it: the gap before the first sampler step of a cold prompt, less a warm one's.

mod support;

use std::time::{Duration, Instant};

use comfy_sim::{ModelFile, NodeConfig as SimConfig};
use coordinator::metrics::Metrics;
use fleet_proto::v1::job_service_client::JobServiceClient;
use tonic::transport::Channel;

/// The emulator's load time of the test checkpoint, before the time scale.
const LOAD_SECS: f64 = 40.0;
/// Emulated time scale: the load takes 0.4 s of wall time.
const TIME_SCALE: f64 = 0.01;
const CHECKPOINT: &str = "loadtest_v1.safetensors";

/// A two-step SD 1.5-style txt2img on the test checkpoint; `seed` keeps prompts distinct.
fn workflow(seed: u32) -> Vec<u8> {
    format!(
        r#"{{
  "4": {{"class_type": "CheckpointLoaderSimple", "inputs": {{"ckpt_name": "{CHECKPOINT}"}}}},
  "5": {{"class_type": "EmptyLatentImage", "inputs": {{"width": 512, "height": 512, "batch_size": 1}}}},
  "6": {{"class_type": "CLIPTextEncode", "inputs": {{"text": "a lighthouse", "clip": ["4", 1]}}}},
  "7": {{"class_type": "CLIPTextEncode", "inputs": {{"text": "blurry", "clip": ["4", 1]}}}},
  "3": {{"class_type": "KSampler", "inputs": {{"seed": {seed}, "steps": 2, "cfg": 7, "sampler_name": "euler",
        "scheduler": "normal", "denoise": 1, "model": ["4", 0], "positive": ["6", 0],
        "negative": ["7", 0], "latent_image": ["5", 0]}}}},
  "8": {{"class_type": "VAEDecode", "inputs": {{"samples": ["3", 0], "vae": ["4", 2]}}}},
  "9": {{"class_type": "SaveImage", "inputs": {{"filename_prefix": "load", "images": ["8", 0]}}}}
}}"#
    )
    .into_bytes()
}

/// One emulated GPU that has the test checkpoint.
fn node(time_scale: f64) -> SimConfig {
    SimConfig::named("gpu-0")
        .with_time_scale(time_scale)
        .with_model(
            "checkpoints",
            ModelFile {
                name: CHECKPOINT.into(),
                size: Some(2 << 30),
                load_seconds: Some(LOAD_SECS),
            },
        )
}

/// Submits the job of `seed` and waits until it succeeded (`seed` jobs succeeded before it).
async fn run_one(client: &mut JobServiceClient<Channel>, metrics: &Metrics, seed: u32) {
    support::submit_workflow(client, workflow(seed)).await;
    let started = Instant::now();
    while metrics
        .jobs_finished
        .with_label_values(&["succeeded"])
        .get()
        < u64::from(seed) + 1
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "job {seed} did not succeed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn learnt(metrics: &Metrics) -> Option<f64> {
    let text = metrics.render();
    let series = format!("comfyfleet_model_load_seconds{{model=\"{CHECKPOINT}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&series))
        .map(|value| value.parse().expect("a number"))
}

fn loads(metrics: &Metrics) -> u64 {
    metrics.node_model_loads.with_label_values(&["gpu-0"]).get()
}

#[tokio::test]
async fn a_cold_start_teaches_the_checkpoint_load_time() {
    let fleet = support::start_sim_fleet(vec![node(TIME_SCALE)]).await;
    let metrics = fleet.coordinator.metrics().clone();
    assert_eq!(learnt(&metrics), None, "nothing learnt before a job ran");
    let url = format!("http://{}", fleet.coordinator.grpc_addr());
    let mut client = JobServiceClient::connect(url).await.expect("gRPC connects");
    // One job at a time: the first loads the checkpoint, the others find it resident.
    for seed in 0..3 {
        run_one(&mut client, &metrics, seed).await;
    }
    assert_eq!(
        loads(&metrics),
        1,
        "one load for three jobs on one checkpoint"
    );
    let secs = learnt(&metrics).expect("a load time is exported after a cold start");
    let expected = LOAD_SECS * TIME_SCALE;
    // Scheduling noise on a shared machine shifts each gap by milliseconds to tens of them.
    assert!(
        (expected * 0.5..expected * 2.0).contains(&secs),
        "learnt {secs:.3} s, the node loads in {expected:.3} s"
    );
}

#[tokio::test]
async fn a_reconnected_node_is_assumed_to_hold_no_checkpoint() {
    // The event socket dropping may mean the node restarted with empty VRAM, so the next job
    // on the same checkpoint counts as a load again.
    let fleet = support::start_sim_fleet(vec![node(0.0)]).await;
    let metrics = fleet.coordinator.metrics().clone();
    let url = format!("http://{}", fleet.coordinator.grpc_addr());
    let mut client = JobServiceClient::connect(url).await.expect("gRPC connects");
    run_one(&mut client, &metrics, 0).await;
    run_one(&mut client, &metrics, 1).await;
    assert_eq!(
        loads(&metrics),
        1,
        "the second job found the checkpoint resident"
    );
    fleet.sims[0]
        .set_faults(comfy_sim::FaultConfig {
            drop_ws_mid_run: true,
            ..Default::default()
        })
        .expect("faults set");
    // The socket drops while this job runs; it still succeeds (reconciled over HTTP).
    run_one(&mut client, &metrics, 2).await;
    let started = Instant::now();
    while metrics
        .node_websocket_reconnects
        .with_label_values(&["gpu-0"])
        .get()
        == 0
    {
        assert!(started.elapsed() < Duration::from_secs(10), "no reconnect");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    run_one(&mut client, &metrics, 3).await;
    assert_eq!(
        loads(&metrics),
        2,
        "after the reconnect the checkpoint counts as loaded again"
    );
}
