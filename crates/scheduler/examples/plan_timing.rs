//! Prints how long one placement round takes for a large fleet: 1,000 nodes and 10,000
//! queued jobs, per policy, in a few fleet shapes.
//!
//! Run with `cargo run --release -p scheduler --example plan_timing [NODES [JOBS]]` (1,000 and
//! 10,000 by default). This is a measurement to read, not a test: nothing fails on a slow
//! machine.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use scheduler::{
    Health, JobView, ModelFile, NodeView, PolicyConfig, PolicyKind, QueueOrder, Snapshot,
    build_policy,
};

const DEFAULT_NODES: usize = 1_000;
const DEFAULT_JOBS: usize = 10_000;
const GIB: u64 = 1 << 30;
const CHECKPOINTS: [&str; 6] = ["sd15", "sdxl", "flux-dev", "flux-schnell", "sd3", "pony"];
const CLASSES: [&str; 8] = [
    "KSampler",
    "SaveImage",
    "CheckpointLoaderSimple",
    "CLIPTextEncode",
    "VAEDecode",
    "ControlNetApply",
    "UpscaleModelLoader",
    "AnimateDiff",
];

/// How busy the generated fleet is.
#[derive(Clone, Copy, Debug)]
enum Shape {
    /// Every node idle: the round fills 2,000 slots.
    Idle,
    /// 95% of nodes full: most jobs find no slot, the walk scans the whole queue.
    MostlyFull,
}

fn fleet(rng: &mut StdRng, shape: Shape, num_nodes: usize) -> Vec<NodeView> {
    (0..num_nodes)
        .map(|i| {
            let mut node = NodeView::new(format!("gpu-{i:04}"));
            node.health = if rng.random_bool(0.97) {
                Health::Up
            } else {
                Health::Down
            };
            node.draining = rng.random_bool(0.02);
            node.labels
                .insert("pool".into(), ["a", "b", "c"][i % 3].into());
            // Core classes everywhere, extras on some nodes.
            node.classes = Arc::new(CLASSES[..5].iter().map(|c| (*c).to_owned()).collect());
            for extra in &CLASSES[5..] {
                if rng.random_bool(0.5) {
                    Arc::make_mut(&mut node.classes).insert((*extra).to_owned());
                }
            }
            let ckpts: BTreeSet<String> = CHECKPOINTS
                .iter()
                .filter(|_| rng.random_bool(0.6))
                .map(|c| (*c).to_owned())
                .collect();
            Arc::make_mut(&mut node.models).insert("checkpoints".into(), ckpts);
            node.vram_total = [8, 12, 16, 24, 48, 80][rng.random_range(0..6)] * GIB;
            node.vram_free = node.vram_total / 2;
            node.queue_running = match shape {
                Shape::Idle => 0,
                Shape::MostlyFull => u32::from(rng.random_bool(0.95)) * 2,
            };
            node.backlog_cost = u64::from(node.queue_running) * 20;
            // One or two checkpoints in VRAM, sized like a typical SD 1.5 or SDXL load.
            for _ in 0..rng.random_range(1..=2) {
                let checkpoint = CHECKPOINTS[rng.random_range(0..CHECKPOINTS.len())];
                node.resident
                    .touch(checkpoint, rng.random_range(2..=7) * GIB, node.vram_total);
            }
            node.speed = Some(rng.random_range(5.0..80.0));
            node
        })
        .collect()
}

fn queue(rng: &mut StdRng, num_jobs: usize) -> Vec<JobView> {
    (0..num_jobs)
        .map(|i| {
            let mut job = JobView::new(format!("job-{i:05}"), i as u64);
            job.priority = rng.random_range(0..3);
            job.tenant = format!("tenant-{}", rng.random_range(0..20));
            if rng.random_bool(0.3) {
                job.required_labels
                    .insert("pool".into(), ["a", "b", "c"][i % 3].into());
            }
            job.required_classes = Arc::new(CLASSES[..5].iter().map(|c| (*c).to_owned()).collect());
            if rng.random_bool(0.2) {
                Arc::make_mut(&mut job.required_classes)
                    .insert(CLASSES[rng.random_range(5..8)].to_owned());
            }
            let ckpt = CHECKPOINTS[rng.random_range(0..CHECKPOINTS.len())];
            Arc::make_mut(&mut job.required_models).insert(ModelFile::new("checkpoints", ckpt));
            job.checkpoint = Some(ckpt.to_owned());
            job.vram_need = [4, 8, 12, 20][rng.random_range(0..4)] * GIB;
            job.cost = rng.random_range(10..50) * 4;
            job
        })
        .collect()
}

/// The coordinator's default window: a round looks at this many jobs at the head of the
/// queue, or eight per free slot if that is more.
const COORDINATOR_WINDOW: usize = 512;

fn main() {
    let mut args = std::env::args().skip(1);
    let mut count = |default: usize| {
        args.next().map_or(default, |arg| {
            arg.parse().expect("a count of nodes or jobs")
        })
    };
    let (num_nodes, num_jobs) = (count(DEFAULT_NODES), count(DEFAULT_JOBS));
    println!("placement round: {num_nodes} nodes x {num_jobs} queued jobs (best of 5)");
    for (shape, windowed) in [
        (Shape::Idle, false),
        (Shape::MostlyFull, false),
        (Shape::MostlyFull, true),
    ] {
        for order in [QueueOrder::Arrival, QueueOrder::FairShare] {
            let mut rng = StdRng::seed_from_u64(7);
            let (nodes, mut jobs) = (fleet(&mut rng, shape, num_nodes), queue(&mut rng, num_jobs));
            if windowed {
                // What the coordinator hands the policy: the head of the queue only.
                let free: usize = nodes
                    .iter()
                    .filter(|n| n.health == Health::Up && !n.draining)
                    .map(|n| n.free_slots() as usize)
                    .sum();
                jobs.truncate(COORDINATOR_WINDOW.max(8 * free));
                println!(
                    "\n(the coordinator's window: the first {} jobs)",
                    jobs.len()
                );
            }

            let started = Instant::now();
            let snapshot = Snapshot::new(jobs, nodes, order).expect("generated names are distinct");
            let build = started.elapsed();
            println!("\n{shape:?} fleet, {order:?} order: snapshot built in {build:?}");

            for kind in PolicyKind::ALL {
                let config = PolicyConfig {
                    kind,
                    ..PolicyConfig::default()
                };
                let mut best = None;
                let mut placed = 0;
                for round in 0..5 {
                    let mut policy = build_policy(&config).expect("default settings are valid");
                    let mut rng = StdRng::seed_from_u64(round);
                    let started = Instant::now();
                    let plan = policy.plan(&snapshot, &mut rng);
                    let took = started.elapsed();
                    placed = plan.assignments.len();
                    best = Some(best.map_or(took, |b: std::time::Duration| b.min(took)));
                }
                let best = best.unwrap_or_default();
                println!("  {:<22} {placed:>5} placed  {best:>12.3?}", kind.as_str());
            }
        }
    }
}
