//! Generators of random fleets and queues for the property tests.
//!
//! Values are drawn from small vocabularies (a few labels, classes, checkpoints, GPU sizes) so
//! that jobs and nodes often match partially: that is where filter and slot bugs show up.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use proptest::prelude::*;
use scheduler::{Health, JobView, ModelFile, NodeView};

const GIB: u64 = 1 << 30;
const CLASSES: [&str; 4] = ["KSampler", "SaveImage", "Upscale", "ControlNet"];
const CHECKPOINTS: [&str; 3] = ["sd15", "sdxl", "flux"];
const POOLS: [&str; 2] = ["a", "b"];

fn subset_of(items: &'static [&'static str]) -> impl Strategy<Value = BTreeSet<String>> {
    proptest::sample::subsequence(items, 0..=items.len())
        .prop_map(|picked| picked.into_iter().map(str::to_owned).collect())
}

fn pool_labels() -> impl Strategy<Value = BTreeMap<String, String>> {
    proptest::option::of(proptest::sample::select(&POOLS[..])).prop_map(|pool| {
        pool.map(|p| BTreeMap::from([("pool".to_owned(), p.to_owned())]))
            .unwrap_or_default()
    })
}

fn checkpoint_files(names: BTreeSet<String>) -> BTreeSet<ModelFile> {
    names
        .into_iter()
        .map(|n| ModelFile::new("checkpoints", n))
        .collect()
}

/// One node named `n{index}` with random state.
pub fn node_strategy(index: usize) -> impl Strategy<Value = NodeView> {
    (
        prop_oneof![6 => Just(Health::Up), 1 => Just(Health::Suspect), 1 => Just(Health::Down)],
        proptest::bool::weighted(0.15),
        proptest::bool::weighted(0.9),
        pool_labels(),
        subset_of(&CLASSES),
        subset_of(&CHECKPOINTS),
        proptest::sample::select(&[4_u64, 8, 16, 24][..]),
        (0_u32..=2, 0_u32..=3, 0_u32..=2, 0_u32..=4),
        (
            0_u64..2_000,
            proptest::option::of(proptest::sample::select(&CHECKPOINTS[..])),
        ),
        proptest::option::of(1.0_f64..1_000.0),
    )
        .prop_map(
            move |(
                health,
                draining,
                inventory_known,
                labels,
                classes,
                checkpoints,
                vram_gib,
                (running, pending, in_flight, slot_limit),
                (backlog_cost, resident),
                speed,
            )| {
                let mut node = NodeView::new(format!("n{index}"));
                node.health = health;
                node.draining = draining;
                node.inventory_known = inventory_known;
                node.labels = labels;
                node.classes = Arc::new(classes);
                Arc::make_mut(&mut node.models).insert("checkpoints".to_owned(), checkpoints);
                node.vram_total = vram_gib * GIB;
                node.vram_free = vram_gib * GIB / 2;
                node.queue_running = running;
                node.queue_pending = pending;
                node.in_flight = in_flight;
                node.slot_limit = slot_limit;
                node.backlog_cost = backlog_cost;
                if let Some(checkpoint) = resident {
                    node.resident.touch(checkpoint, 0, 0);
                }
                node.speed = speed;
                node
            },
        )
}

/// One job named `j{index}` with random requirements.
pub fn job_strategy(index: usize) -> impl Strategy<Value = JobView> {
    (
        -1_i32..=2,
        0_u64..50,
        proptest::sample::select(&["t0", "t1", "t2"][..]),
        pool_labels(),
        subset_of(&CLASSES[..2]),
        subset_of(&CHECKPOINTS),
        proptest::sample::select(&[0_u64, 2, 6, 12, 20, 32][..]),
        0_u64..1_000,
        proptest::option::of(proptest::sample::select(&CHECKPOINTS[..])),
    )
        .prop_map(
            move |(priority, arrival, tenant, labels, classes, models, vram_gib, cost, ckpt)| {
                let mut job = JobView::new(format!("j{index}"), arrival);
                job.priority = priority;
                job.tenant = tenant.to_owned();
                job.required_labels = labels;
                job.required_classes = Arc::new(classes);
                job.required_models = Arc::new(checkpoint_files(models));
                job.vram_need = vram_gib * GIB;
                job.cost = cost;
                job.checkpoint = ckpt.map(str::to_owned);
                job
            },
        )
}

/// A fleet of 0..`max_nodes` nodes with distinct names.
pub fn fleet_strategy(max_nodes: usize) -> impl Strategy<Value = Vec<NodeView>> {
    (0..=max_nodes).prop_flat_map(|n| (0..n).map(node_strategy).collect::<Vec<_>>())
}

/// A queue of 0..`max_jobs` jobs with distinct ids.
pub fn queue_strategy(max_jobs: usize) -> impl Strategy<Value = Vec<JobView>> {
    (0..=max_jobs).prop_flat_map(|n| (0..n).map(job_strategy).collect::<Vec<_>>())
}

/// Says whether `node` may take `job` now, written from the field docs independently of the
/// crate's filters, so a bug there cannot hide from the property tests.
pub fn oracle_can_run_now(job: &JobView, node: &NodeView) -> bool {
    let up = node.health == Health::Up && !node.draining && node.inventory_known;
    let labels = job
        .required_labels
        .iter()
        .all(|(k, v)| node.labels.get(k) == Some(v));
    let classes = job.required_classes.is_subset(&node.classes);
    let models = job.required_models.iter().all(|m| {
        node.models
            .get(&m.folder)
            .is_some_and(|files| files.contains(&m.name))
    });
    up && labels && classes && models && job.vram_need <= node.vram_total
}
