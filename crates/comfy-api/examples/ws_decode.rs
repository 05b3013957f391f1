//! Measures decoding of WebSocket text frames: the direct path `WsEvent::from_text` takes for
//! the usual frames, against the tree-based one it falls back on.
//!
//! The frames are those a node sends for one short prompt, in its order. Usage:
//!
//! ```text
//! cargo run --release -p comfy-api --example ws_decode -- [rounds]
//! ```

use std::hint::black_box;
use std::time::Instant;

use comfy_api::ws::{FrameError, WsEvent};

const PROMPT_FRAMES: &[&str] = &[
    r#"{"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 1}}}}"#,
    r#"{"type": "execution_start", "data": {"prompt_id": "8b2c40a5-91f6-4a4c-9c55-7b0e7c1f6d10", "timestamp": 1733390000123}}"#,
    r#"{"type": "execution_cached", "data": {"nodes": [], "prompt_id": "8b2c40a5-91f6-4a4c-9c55-7b0e7c1f6d10", "timestamp": 1733390000124}}"#,
    r#"{"type": "progress_state", "data": {"prompt_id": "8b2c40a5-91f6-4a4c-9c55-7b0e7c1f6d10", "nodes": {"1": {"value": 0, "max": 1, "state": "running", "node_id": "1", "prompt_id": "8b2c40a5-91f6-4a4c-9c55-7b0e7c1f6d10", "display_node_id": "1", "parent_node_id": null, "real_node_id": "1"}}}}"#,
    r#"{"type": "executing", "data": {"node": "1", "display_node": "1", "prompt_id": "8b2c40a5-91f6-4a4c-9c55-7b0e7c1f6d10"}}"#,
    r#"{"type": "progress", "data": {"value": 7, "max": 20, "prompt_id": "8b2c40a5-91f6-4a4c-9c55-7b0e7c1f6d10", "node": "3"}}"#,
    r#"{"type": "executed", "data": {"node": "2", "display_node": "2", "output": {"images": [{"filename": "bench_00001_.png", "subfolder": "", "type": "output"}]}, "prompt_id": "8b2c40a5-91f6-4a4c-9c55-7b0e7c1f6d10"}}"#,
    r#"{"type": "executing", "data": {"node": null, "prompt_id": "8b2c40a5-91f6-4a4c-9c55-7b0e7c1f6d10"}}"#,
    r#"{"type": "execution_success", "data": {"prompt_id": "8b2c40a5-91f6-4a4c-9c55-7b0e7c1f6d10", "timestamp": 1733390000170}}"#,
    r#"{"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}}}"#,
];

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|arg| arg.parse().ok())
        .unwrap_or(50_000)
        .max(1);
    for frame in PROMPT_FRAMES {
        assert_eq!(
            WsEvent::from_text(frame),
            WsEvent::from_text_via_tree(frame),
            "the two paths disagree on {frame}"
        );
    }
    let time = |decode: fn(&str) -> Result<WsEvent, FrameError>| {
        let started = Instant::now();
        for _ in 0..rounds {
            for frame in PROMPT_FRAMES {
                let _ = black_box(decode(black_box(frame)));
            }
        }
        started.elapsed().as_nanos() as f64 / (rounds * PROMPT_FRAMES.len()) as f64
    };
    // Alternate the two so that a noisy neighbour hits both alike; keep the best of three.
    let (mut direct, mut tree) = (f64::MAX, f64::MAX);
    for _ in 0..3 {
        direct = direct.min(time(WsEvent::from_text));
        tree = tree.min(time(WsEvent::from_text_via_tree));
    }
    println!(
        "ws text frames ({} per prompt, {rounds} prompts): direct {direct:.0} ns/frame, \
         tree-based {tree:.0} ns/frame, direct/tree {:.2}",
        PROMPT_FRAMES.len(),
        direct / tree
    );
}
