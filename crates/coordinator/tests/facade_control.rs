//! The queue-control routes of the ComfyUI-compatible API over a fleet: `GET/POST /queue`,
//! targeted and global `POST /interrupt`, and `POST /free`.

mod support;

use std::time::{Duration, Instant};

use comfy_sim::NodeConfig as SimConfig;
use coordinator::Coordinator;
use serde_json::{Value, json};

struct Fleet {
    coordinator: Coordinator,
    sim: comfy_sim::SimNode,
    http: reqwest::Client,
    _data: tempfile::TempDir,
}

impl Fleet {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.coordinator.http_addr())
    }

    async fn get(&self, path: &str) -> Value {
        let body = self
            .http
            .get(self.url(path))
            .send()
            .await
            .expect("answer")
            .bytes()
            .await
            .expect("body");
        serde_json::from_slice(&body).expect("json")
    }

    async fn post(&self, path: &str, body: Value) -> u16 {
        let answer = self
            .http
            .post(self.url(path))
            .body(body.to_string())
            .send()
            .await
            .expect("answer");
        answer.status().as_u16()
    }

    /// Queues the tutorial graph under `prompt_id`, optionally tied to `client_id`.
    async fn queue(&self, prompt_id: &str, client_id: Option<&str>) {
        let mut body =
            json!({"prompt": workflow(prompt_id.len() as u64 * 7919), "prompt_id": prompt_id});
        if let Some(client) = client_id {
            body["client_id"] = json!(client);
        }
        assert_eq!(
            self.post("/prompt", body).await,
            200,
            "prompt {prompt_id} accepted"
        );
    }

    async fn queue_ids(&self) -> (Vec<String>, Vec<String>) {
        let queue = self.get("/queue").await;
        let ids = |key: &str| -> Vec<String> {
            queue[key]
                .as_array()
                .expect("items")
                .iter()
                .map(|item| item[1].as_str().expect("prompt id").to_owned())
                .collect()
        };
        (ids("queue_running"), ids("queue_pending"))
    }

    /// Waits for the prompt's history entry and returns its status string and message types.
    async fn outcome(&self, prompt_id: &str) -> (String, Vec<String>) {
        let started = Instant::now();
        loop {
            let history = self.get(&format!("/history/{prompt_id}")).await;
            if let Some(entry) = history.get(prompt_id) {
                let status = entry["status"]["status_str"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let kinds = entry["status"]["messages"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|m| m[0].as_str().map(str::to_owned))
                    .collect();
                return (status, kinds);
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{prompt_id} never reached history"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// An SD1.5 graph whose sampler takes about two simulated seconds.
fn workflow(seed: u64) -> Value {
    json!({
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a harbour", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
        "3": {"class_type": "KSampler", "inputs": {"seed": seed, "steps": 40, "cfg": 7.0, "sampler_name": "euler",
              "scheduler": "normal", "denoise": 1.0, "model": ["4", 0], "positive": ["6", 0],
              "negative": ["7", 0], "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ctl", "images": ["8", 0]}}
    })
}

async fn start() -> Fleet {
    // These tests need a second prompt in the node's own queue at once. Expected-finish gives
    // a node it has not measured one prompt at a time, so they place with least-loaded.
    let mut fleet = support::start_sim_fleet_with(vec![SimConfig::named("gpu-0")], |config| {
        config.placement.kind = scheduler::PolicyKind::LeastLoaded;
    })
    .await;
    Fleet {
        coordinator: fleet.coordinator,
        sim: fleet.sims.remove(0),
        http: reqwest::Client::new(),
        _data: fleet.data,
    }
}

async fn wait_for(fleet: &Fleet, running: usize, pending: usize) -> (Vec<String>, Vec<String>) {
    let started = Instant::now();
    loop {
        let (r, p) = fleet.queue_ids().await;
        if r.len() == running && p.len() == pending {
            return (r, p);
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "queue never reached {running}/{pending}: {r:?} {p:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_clear_and_targeted_interrupt_touch_only_the_named_jobs() {
    let fleet = start().await;
    for id in ["p1", "p2", "p3", "p4"] {
        fleet.queue(id, None).await;
    }
    assert_eq!(
        fleet.coordinator.metrics().jobs_submitted.get(),
        4,
        "prompts through the ComfyUI door count as submitted jobs"
    );
    // One node with two slots: two prompts on the node, two waiting in the coordinator.
    let (on_node, waiting) = wait_for(&fleet, 2, 2).await;
    assert_eq!(on_node, vec!["p1", "p2"], "the first two are on the node");
    assert_eq!(
        waiting,
        vec!["p3", "p4"],
        "the others wait in the coordinator"
    );

    assert_eq!(
        fleet
            .post("/queue", json!({"delete": ["p4", "no-such-prompt"]}))
            .await,
        200
    );
    let (_, waiting) = wait_for(&fleet, 2, 1).await;
    assert_eq!(waiting, vec!["p3"], "only p4 was deleted");
    assert_eq!(fleet.post("/queue", json!({"clear": true})).await, 200);
    wait_for(&fleet, 2, 0).await;

    assert_eq!(
        fleet.post("/interrupt", json!({"prompt_id": "p1"})).await,
        200
    );
    let (status, kinds) = fleet.outcome("p1").await;
    assert_eq!(status, "error", "p1 was interrupted");
    assert!(
        kinds.contains(&"execution_interrupted".to_owned()),
        "{kinds:?}"
    );
    let (status, _) = fleet.outcome("p2").await;
    assert_eq!(
        status, "success",
        "the other job on the same node was not interrupted"
    );
    let speed = fleet.coordinator.fleet().nodes()[0].status().speed;
    assert!(
        speed.is_some_and(|speed| speed > 0.0),
        "a success teaches placement the node's speed: {speed:?}"
    );

    let posts = fleet.sim.snapshot().expect("snapshot").prompt_posts;
    assert_eq!(
        posts, 2,
        "deleted and cleared prompts never reached the node"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupt_naming_a_prompt_by_a_number_or_a_list_stops_nothing() {
    let fleet = start().await;
    fleet.queue("anonymous-job", None).await;
    wait_for(&fleet, 1, 0).await;
    // As in ComfyUI: a truthy prompt_id is a targeted interrupt, and only a string can match.
    for target in [
        json!(5),
        json!(["anonymous-job"]),
        json!({"id": "anonymous-job"}),
    ] {
        assert_eq!(
            fleet
                .post("/interrupt", json!({ "prompt_id": target }))
                .await,
            200
        );
    }
    let (status, _) = fleet.outcome("anonymous-job").await;
    assert_eq!(status, "success", "nothing was interrupted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_global_interrupt_stops_only_the_callers_own_jobs() {
    let fleet = start().await;
    fleet.queue("alice-job", Some("alice")).await;
    fleet.queue("anonymous-job", None).await;
    wait_for(&fleet, 2, 0).await;

    // No prompt id and no client id: only facade jobs submitted without a client id.
    assert_eq!(fleet.post("/interrupt", json!({})).await, 200);
    let (status, _) = fleet.outcome("anonymous-job").await;
    assert_eq!(status, "error", "the anonymous job was interrupted");
    let (status, _) = fleet.outcome("alice-job").await;
    assert_eq!(status, "success", "alice's job was left alone");

    // Python's `int` has no bound, so ComfyUI takes a huge max_items as "all of history";
    // both finished jobs are listed, and a negative one lists none.
    for max_items in ["99999999999999999999", "9223372036854775807"] {
        let history = fleet.get(&format!("/history?max_items={max_items}")).await;
        let ids = history.as_object().expect("an object").keys().count();
        assert_eq!(ids, 2, "max_items={max_items}: {history}");
    }
    let history = fleet.get("/history?max_items=-99999999999999999999").await;
    assert_eq!(history, json!({}));

    // /free is forwarded to the node, which unloads its models.
    assert_eq!(
        fleet.post("/free", json!({"unload_models": true})).await,
        200
    );
    let started = Instant::now();
    while !fleet
        .sim
        .snapshot()
        .expect("snapshot")
        .resident_models
        .is_empty()
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the node kept its models after /free"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
