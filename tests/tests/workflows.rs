//! Every shared workflow meets exactly the fate its content calls for.
//!
//! The shared corpus holds real workflows written by others: some run on a fleet holding the
//! models they name, some need custom node packs or files no test node has, some are editor
//! exports or not JSON at all. Each file's category is fixed in [`EXPECTED`] (with the reason),
//! and the test submits every file to a real coordinator in front of two sims and checks the
//! category and that the message says what is wrong. A new file in the corpus without a row
//! fails the test, so the table cannot silently fall behind.

use std::collections::BTreeSet;

use comfyfleet_tests::{
    GIB, TestFleet, shared_dir, sim_config, standard_models, v1 as pb, workflow_bytes,
};
use tonic::Code;

/// What must happen to one workflow.
#[derive(Debug, Clone, Copy)]
enum Fate {
    /// Runs to success.
    Succeeds,
    /// Refused at submit with FAILED_PRECONDITION whose message contains every listed text
    /// (classes or model files no node has).
    Infeasible(&'static [&'static str]),
    /// Refused at submit with INVALID_ARGUMENT whose message contains every listed text.
    Invalid(&'static [&'static str]),
    /// Accepted, then refused by the node's validation: fails with FAILURE_CLASS_VALIDATION and
    /// a node error on the listed workflow node id.
    NodeValidation(&'static str),
    /// Should run to success, but the emulator does not yet fill the listed model combo inputs
    /// with the node's files, so its validation may refuse them ("value_not_in_list" on exactly
    /// those inputs). Any other outcome is wrong.
    ///
    /// NOTE: comfy-sim keeps the captured option lists of `VAELoader.vae_name` (`pixel_space`)
    /// and of new-style `COMBO` inputs (`TripleCLIPLoader`, `DualCLIPLoader`, `CLIPLoader`)
    /// instead of listing the node's files, so these workflows cannot succeed on it yet. Once
    /// the emulator lists them, these rows should become `Succeeds`.
    SucceedsButSimComboGap(&'static [&'static str]),
}

const EXPECTED: &[(&str, Fate)] = &[
    ("sdxl-baseline-tutorial.json", Fate::Succeeds),
    ("sd15-txt2img-basic-salad.json", Fate::Succeeds),
    ("sd15-lora-txt2img-comfy-ci.json", Fate::Succeeds),
    ("sd15-three-checkpoints-parallel-salad.json", Fate::Succeeds),
    // Two SDXL checkpoints do not fit the small GPU: an out-of-memory failure there must move
    // the job to the big one.
    ("sdxl-base-refiner-no-meta-comfy-tests.json", Fate::Succeeds),
    (
        "sd35-medium-txt2img-salad.json",
        Fate::SucceedsButSimComboGap(&["clip_name1", "clip_name2", "clip_name3"]),
    ),
    // The RunPod envelope is unwrapped and the inner graph forwarded.
    (
        "flux-fp8-checkpoint-runpod-input-wrapper.json",
        Fate::Succeeds,
    ),
    (
        "hunyuanvideo-t2v-salad.json",
        Fate::SucceedsButSimComboGap(&["vae_name", "clip_name1", "clip_name2"]),
    ),
    (
        "wan21-t2v-1.3b-chinese-negative-fofr.json",
        Fate::SucceedsButSimComboGap(&["vae_name", "clip_name"]),
    ),
    // Custom node packs no node has.
    (
        "flux-inpaint-alimama-controlnet-fofr.json",
        Fate::Infeasible(&["StringFunction|pysssss"]),
    ),
    (
        "animatediff-controlnet-lora-vhs-salad.json",
        Fate::Infeasible(&["KSampler (Efficient)"]),
    ),
    (
        "sdxl-ipadapter-regional-badman-upres-jasper.json",
        Fate::Infeasible(&["IPAdapterAdvanced"]),
    ),
    (
        "sdxl-controlnet-ipadapter-reactor-upscale-influencer.json",
        Fate::Infeasible(&["IPAdapterApply"]),
    ),
    (
        "supir-upscale-rgthree-nested-fofr.json",
        Fate::Infeasible(&["SUPIR"]),
    ),
    (
        "essentials-many-previews-no-save-fofr.json",
        Fate::Infeasible(&["+"]),
    ),
    // A LoRA with a CJK file name no node holds.
    (
        "zimage-t2i-chinese-titles-lora-unicode-filename-toonflow.json",
        Fate::Infeasible(&["Z-image-Turbo-3DCG画风_1.1.safetensors"]),
    ),
    // LoadImage names island.jpg, which was never uploaded: the node's validation refuses it.
    ("ltxv-img2video-salad.json", Fate::NodeValidation("")),
    // Names checkpoints/example.safetensors, which no node holds.
    (
        "sdxl-minimal-seed-u64max-DERIVED.json",
        Fate::Infeasible(&["checkpoints/example.safetensors"]),
    ),
    (
        "ui-format/flux-fp8-UI-FORMAT-fofr.json",
        Fate::Invalid(&["editor"]),
    ),
    (
        "ui-format/subgraph-blueprint-minified-UI-FORMAT-comfy.json",
        Fate::Invalid(&["subgraph"]),
    ),
    (
        "bad/python-dict-trailing-commas-huge-seed-eco404.json",
        Fate::Invalid(&["line 5", "column"]),
    ),
];

fn corpus() -> BTreeSet<String> {
    let root = shared_dir().join("workflows");
    let mut files = BTreeSet::new();
    for sub in ["", "ui-format", "bad"] {
        let dir = root.join(sub);
        for entry in std::fs::read_dir(&dir).expect("read workflows dir") {
            let path = entry.expect("dir entry").path();
            if path.extension().is_some_and(|ext| ext == "json") {
                let name = path
                    .file_name()
                    .expect("name")
                    .to_string_lossy()
                    .into_owned();
                files.insert(if sub.is_empty() {
                    name
                } else {
                    format!("{sub}/{name}")
                });
            }
        }
    }
    files
}

#[test]
fn every_corpus_file_has_an_expected_fate() {
    let listed: BTreeSet<String> = EXPECTED
        .iter()
        .map(|(name, _)| (*name).to_owned())
        .collect();
    assert_eq!(corpus(), listed, "the table and the shared corpus differ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shared_workflow_succeeds_or_is_refused_clearly() {
    let mut big = sim_config("big", 0.002);
    big.models = standard_models(true);
    // Video workflows need more than 48 GiB in the emulator's activation model.
    big.gpu = comfy_sim::GpuConfig::cuda("NVIDIA A100-SXM4-80GB", 80 * GIB);
    let mut small = sim_config("small", 0.002);
    small.gpu = comfy_sim::GpuConfig::cuda("NVIDIA GeForce RTX 3060", 8 * GIB);
    let fleet = TestFleet::start(vec![big, small]).await;

    let mut problems = Vec::new();
    for (name, fate) in EXPECTED {
        if let Err(problem) = check(&fleet, name, *fate).await {
            problems.push(format!("{name}: {problem}"));
        }
    }
    assert!(
        problems.is_empty(),
        "workflows with the wrong fate:\n{}",
        problems.join("\n")
    );
    fleet.shutdown().await;
}

async fn check(fleet: &TestFleet, name: &str, fate: Fate) -> Result<(), String> {
    let submitted = fleet.submit(&workflow_bytes(name)).await;
    match (fate, submitted) {
        (Fate::Infeasible(texts), Err(status)) if status.code() == Code::FailedPrecondition => {
            contains_all(status.message(), texts)
        }
        (Fate::Invalid(texts), Err(status)) if status.code() == Code::InvalidArgument => {
            contains_all(status.message(), texts)
        }
        (_, Err(status)) => Err(format!("expected {fate:?}, refused at submit: {status:?}")),
        (Fate::Infeasible(_) | Fate::Invalid(_), Ok(job)) => {
            let watched = fleet.watch_to_end(&job).await;
            Err(format!(
                "expected {fate:?}, accepted; ended with {:?}",
                watched.terminal()
            ))
        }
        (Fate::Succeeds, Ok(job)) => {
            let watched = fleet.watch_to_end(&job).await;
            match watched.terminal() {
                Some(pb::job_event::Kind::Succeeded(done)) if !done.outputs.is_empty() => Ok(()),
                other => Err(format!(
                    "expected success with outputs, ended with {other:?}"
                )),
            }
        }
        (Fate::SucceedsButSimComboGap(inputs), Ok(job)) => {
            let watched = fleet.watch_to_end(&job).await;
            match watched.terminal() {
                Some(pb::job_event::Kind::Succeeded(done)) if !done.outputs.is_empty() => Ok(()),
                Some(pb::job_event::Kind::Failed(failed)) => {
                    let failure = failed.failure.as_ref().ok_or("no failure")?;
                    let issues: Vec<_> =
                        failure.node_errors.iter().flat_map(|e| &e.issues).collect();
                    let only_gap = failure.failure_class() == pb::FailureClass::Validation
                        && !issues.is_empty()
                        && issues.iter().all(|issue| {
                            issue.r#type == "value_not_in_list"
                                && inputs.contains(&issue.input_name.as_str())
                        });
                    if only_gap {
                        Ok(())
                    } else {
                        Err(format!("unexpected failure {failure:?}"))
                    }
                }
                other => Err(format!("expected success, ended with {other:?}")),
            }
        }
        (Fate::NodeValidation(node_id), Ok(job)) => {
            let watched = fleet.watch_to_end(&job).await;
            match watched.terminal() {
                Some(pb::job_event::Kind::Failed(failed)) => {
                    let failure = failed.failure.as_ref().ok_or("no failure")?;
                    if failure.failure_class() != pb::FailureClass::Validation {
                        return Err(format!("expected a validation failure, got {failure:?}"));
                    }
                    if failure.node_errors.is_empty()
                        || !node_id.is_empty()
                            && failure.node_errors.iter().all(|e| e.node_id != node_id)
                    {
                        return Err(format!("node errors missing: {failure:?}"));
                    }
                    if failure.retryable {
                        return Err("a validation failure marked retryable".into());
                    }
                    Ok(())
                }
                other => Err(format!(
                    "expected a node validation failure, ended with {other:?}"
                )),
            }
        }
    }
}

fn contains_all(message: &str, texts: &[&str]) -> Result<(), String> {
    match texts.iter().find(|text| !message.contains(*text)) {
        None => Ok(()),
        Some(missing) => Err(format!("message {message:?} does not mention {missing:?}")),
    }
}
