//! End-to-end tests of the `comfyfleet` command line: the real binary runs `up` (coordinator
//! plus simulated GPUs) on free loopback ports, and client commands run against it as a user
//! or a script would, checked by exit code, output and the metrics they move.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Up, example, run_in, shared_dir, sum, variant, wait_output};

/// Fast simulated GPUs: a 25-step SDXL job takes well under a second.
const FAST: &[&str] = &["--time-scale", "0.05"];

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line:?}")))
        .collect()
}

fn no_terminal_codes(text: &str) {
    assert!(
        !text.contains('\u{1b}') && !text.contains('\r'),
        "escape codes or carriage returns without a terminal:\n{text}"
    );
}

#[test]
fn the_commands_the_banner_prints_work_as_pasted() {
    let up = Up::start(FAST);
    let commands: Vec<Vec<String>> = up
        .banner
        .lines()
        .filter_map(|line| line.strip_prefix("  comfyfleet "))
        .map(|rest| rest.split_whitespace().map(str::to_owned).collect())
        .collect();
    assert_eq!(commands.len(), 3, "{}", up.banner);
    for command in &commands {
        let args: Vec<&str> = command.iter().map(String::as_str).collect();
        let out = run_in(up.dir.path(), &args);
        assert_eq!(out.code, Some(0), "{args:?}: {}", out.both());
        no_terminal_codes(&out.stdout);
        no_terminal_codes(&out.stderr);
        match args[0] {
            "nodes" => {
                for node in ["gpu-4090", "gpu-a4000", "gpu-3060"] {
                    let row = out
                        .stdout
                        .lines()
                        .find(|line| line.starts_with(node))
                        .unwrap_or_else(|| panic!("no row for {node}: {}", out.stdout));
                    assert!(row.contains("(sim)") && row.contains(" up "), "{row}");
                }
            }
            "submit" => {
                // Without a terminal the display is plain lines: the node, the steps, the file.
                // That the job is queued is said once, by the submission line (a retry after
                // an out-of-memory failure on the small GPU queues it again, and says so).
                let queued_lines: Vec<&str> = out
                    .stdout
                    .lines()
                    .take_while(|line| !line.contains("retrying"))
                    .filter(|line| line.contains("queue"))
                    .collect();
                assert_eq!(queued_lines.len(), 1, "{}", out.stdout);
                assert!(queued_lines[0].contains("submitted job"), "{}", out.stdout);
                assert!(!out.stdout.contains(": queued"), "{}", out.stdout);
                assert!(
                    out.stdout.contains("dispatched to node gpu-"),
                    "{}",
                    out.both()
                );
                assert!(
                    out.stdout.contains("KSampler (3): step 25/25"),
                    "{}",
                    out.stdout
                );
                assert!(
                    out.stdout.contains("succeeded with 1 output(s)"),
                    "{}",
                    out.stdout
                );
                let saved = std::fs::read_dir(up.dir.path().join("outputs"))
                    .expect("outputs folder")
                    .map(|entry| entry.expect("entry").path())
                    .collect::<Vec<_>>();
                assert_eq!(saved.len(), 1, "{saved:?}");
                let bytes = std::fs::read(&saved[0]).expect("saved file");
                assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
                let name = saved[0].file_name().expect("name").to_string_lossy();
                assert!(
                    out.stdout.contains(&format!("saved outputs/{name}")),
                    "{}",
                    out.stdout
                );
            }
            "jobs" => {
                let rows: Vec<&str> = out.stdout.lines().skip(1).collect();
                assert_eq!(rows.len(), 1, "{}", out.stdout);
                assert!(rows[0].contains("succeeded"), "{}", rows[0]);
            }
            other => panic!("unexpected command {other} in the banner"),
        }
    }
    // Text logs into a file carry no colour codes; simulated nodes are marked.
    let logs = up.stderr();
    no_terminal_codes(&logs);
    assert!(logs.contains("simulated=true"), "{logs}");
}

#[test]
fn json_output_is_one_object_per_line_ending_with_success_and_saved() {
    let up = Up::start(&["--time-scale", "0.05", "--log-format", "json"]);
    let out = up.run(&[
        "submit",
        example("sdxl-portrait.json").to_str().expect("path"),
        "--wait",
        "--json",
        "--out",
        "out",
    ]);
    assert_eq!(out.code, Some(0), "{}", out.both());
    let lines = json_lines(&out.stdout);
    assert!(
        lines[0]["submitted"]["job_id"].is_string(),
        "{:?}",
        lines[0]
    );
    let types: Vec<&str> = lines
        .iter()
        .filter_map(|line| line["type"].as_str())
        .collect();
    assert!(
        types.contains(&"dispatched") && types.contains(&"progress"),
        "{types:?}"
    );
    assert_eq!(types.last(), Some(&"succeeded"), "{types:?}");
    let saved = &lines.last().expect("lines")["saved"];
    assert!(saved["bytes"].as_u64().unwrap_or(0) > 0, "{saved}");
    assert!(
        up.dir
            .path()
            .join(saved["path"].as_str().expect("path"))
            .is_file(),
        "{saved}"
    );

    let nodes = json_lines(&up.run(&["nodes", "--json"]).stdout);
    assert_eq!(nodes.len(), 3);
    assert!(
        nodes.iter().all(|node| node["simulated"] == true),
        "{nodes:?}"
    );
    // A node that ran an attempt of the job (one may have failed out of memory on a small
    // GPU before the retry) is believed to hold its checkpoint; the others hold nothing.
    let table = up.run(&["nodes"]).stdout;
    assert!(table.contains("MODELS IN VRAM"), "{table}");
    for node in &nodes {
        let ran =
            node["jobs_done"].as_u64().unwrap_or(0) + node["jobs_failed"].as_u64().unwrap_or(0);
        let model = node["last_model"].as_str().expect("last_model");
        let row = table
            .lines()
            .find(|line| line.starts_with(node["name"].as_str().expect("name")))
            .expect("a row for the node");
        if ran > 0 {
            assert!(model.ends_with(".safetensors"), "{node}");
            assert_eq!(
                node["resident_models"],
                serde_json::json!([model]),
                "{node}"
            );
            assert!(row.ends_with(model), "{row}");
        } else {
            assert_eq!(node["resident_models"], serde_json::json!([]), "{node}");
        }
    }
    let jobs = json_lines(&up.run(&["jobs", "--json"]).stdout);
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0]["state"], "succeeded");

    // Logs: every stderr line is a JSON object, and simulated nodes say so.
    let logs = up.stderr();
    let entries = json_lines(&logs);
    assert!(entries.len() >= 3, "{logs}");
    assert!(
        entries
            .iter()
            .any(|entry| entry["fields"]["simulated"] == true),
        "{logs}"
    );
    assert!(entries.iter().all(|entry| entry["level"].is_string()));
}

#[test]
fn metrics_move_by_the_jobs_run() {
    const N: u64 = 3;
    let up = Up::start(FAST);
    let before = up.metrics();
    for seed in 0..N {
        let workflow = variant(
            up.dir.path(),
            &format!("w{seed}.json"),
            8,
            1000 + seed,
            "euler",
        );
        let out = up.run(&["submit", workflow.to_str().expect("path"), "--wait"]);
        assert_eq!(out.code, Some(0), "{}", out.both());
    }
    let after = up.metrics();
    let delta =
        |family: &str, labels: &[&str]| sum(&after, family, labels) - sum(&before, family, labels);
    let n = N as f64;
    assert_eq!(delta("comfyfleet_jobs_submitted_total", &[]), n);
    assert_eq!(
        delta("comfyfleet_jobs_finished_total", &["outcome=\"succeeded\""]),
        n
    );
    assert_eq!(delta("comfyfleet_node_dispatches_total", &[]), n);
    assert_eq!(
        delta(
            "comfyfleet_grpc_requests_total",
            &["method=\"SubmitJob\"", "code=\"OK\""]
        ),
        n
    );
    // Each job relays at least its start, its eight steps and its end.
    assert!(
        delta("comfyfleet_relay_events_total", &[]) >= n * 10.0,
        "relay events grew by {}",
        delta("comfyfleet_relay_events_total", &[])
    );
    assert!(
        delta("comfyfleet_relay_events_total", &["type=\"progress\""]) >= n * 8.0,
        "progress events grew by {}",
        delta("comfyfleet_relay_events_total", &["type=\"progress\""])
    );
}

#[test]
fn refusals_failures_and_bad_addresses_have_their_exit_codes() {
    let up = Up::start(FAST);
    let ui = shared_dir().join("workflows/ui-format/flux-fp8-UI-FORMAT-fofr.json");
    let out = up.run(&["submit", ui.to_str().expect("path"), "--wait"]);
    assert_eq!(out.code, Some(3), "{}", out.both());
    assert!(out.stderr.contains("editor-format"), "{}", out.stderr);
    assert!(out.stderr.contains("Export (API)"), "{}", out.stderr);

    // A value the node refuses is the job's own fault.
    let bad = variant(up.dir.path(), "bad.json", 4, 7, "no_such_sampler");
    let out = up.run(&["submit", bad.to_str().expect("path"), "--wait"]);
    assert_eq!(out.code, Some(5), "{}", out.both());
    assert!(out.stdout.contains("no_such_sampler"), "{}", out.stdout);
    let failed_id = out
        .stdout
        .split_whitespace()
        .find(|word| word.len() == 36 && word.matches('-').count() == 4)
        .expect("job id in the output")
        .to_owned();

    // Watching a finished job prints its history and exits with its outcome.
    let out = up.run(&["watch", &failed_id]);
    assert_eq!(out.code, Some(5), "{}", out.both());
    assert!(out.stdout.contains("dispatched to node"), "{}", out.stdout);
    assert!(out.stdout.contains("failed (validation)"), "{}", out.stdout);
    let good = variant(up.dir.path(), "good.json", 4, 8, "euler");
    let out = up.run(&["submit", good.to_str().expect("path")]);
    assert_eq!(out.code, Some(0), "{}", out.both());
    let good_id = out.stdout.trim().to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    let out = loop {
        let out = up.run(&["watch", &good_id, "--json"]);
        if out.code == Some(0) || Instant::now() > deadline {
            break out;
        }
    };
    assert_eq!(out.code, Some(0), "{}", out.both());
    let types: Vec<String> = json_lines(&out.stdout)
        .iter()
        .filter_map(|line| line["type"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        types.first().map(String::as_str),
        Some("queued"),
        "{types:?}"
    );
    assert_eq!(
        types.last().map(String::as_str),
        Some("succeeded"),
        "{types:?}"
    );

    // A reader that goes away (`| head`) ends the command quietly with the SIGPIPE code,
    // without a panic; the job goes on.
    let mut child = up.spawn(&["watch", &failed_id]);
    drop(child.stdout.take());
    let out = wait_output(child, Duration::from_secs(30));
    assert_eq!(out.code, Some(141), "{}", out.both());
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);

    // Unknown and malformed job ids are refusals.
    let out = up.run(&["watch", "00000000-0000-4000-8000-000000000000"]);
    assert_eq!(out.code, Some(3), "{}", out.both());
    let out = up.run(&["cancel", "not-a-job"]);
    assert_eq!(out.code, Some(3), "{}", out.both());

    // Nothing listens on port 1: the coordinator cannot be reached. A malformed address is
    // the caller's mistake, a usage error, like clap's own.
    for (addr, code) in [
        ("http://127.0.0.1:1", 1),
        ("http://bad host:50051", 2),
        ("http://[::1", 2),
    ] {
        let out = run_in(up.dir.path(), &["nodes", "--addr", addr]);
        assert_eq!(out.code, Some(code), "{addr}: {}", out.both());
        assert!(out.stderr.starts_with("error: "), "{}", out.stderr);
    }
    let out = run_in(up.dir.path(), &["submit"]);
    assert_eq!(out.code, Some(2), "{}", out.both());
    // A configuration error is said once, though it passes through two layers of errors.
    let out = run_in(
        up.dir.path(),
        &[
            "serve",
            "--node",
            "a\"b=http://127.0.0.1:1",
            "--data-dir",
            "bad-config",
        ],
    );
    assert_eq!(out.code, Some(1), "{}", out.both());
    assert_eq!(
        out.stderr.matches("name must be").count(),
        1,
        "{}",
        out.stderr
    );
    // So is a workflow file that cannot be read, and a limit of no jobs.
    for args in [
        &["submit", "no-such-workflow.json"][..],
        &["submit", "."][..],
        &["jobs", "--limit", "0"][..],
    ] {
        let out = up.run(args);
        assert_eq!(out.code, Some(2), "{args:?}: {}", out.both());
        assert!(out.stderr.contains("error"), "{}", out.stderr);
    }
}

#[test]
fn cancel_drain_and_undrain() {
    let up = Up::start(FAST);
    for node in ["gpu-4090", "gpu-a4000", "gpu-3060"] {
        let out = up.run(&["drain", node]);
        assert_eq!(out.code, Some(0), "{}", out.both());
        assert_eq!(out.stdout.trim(), format!("node {node} is draining"));
    }
    let out = up.run(&["drain", "gpu-nope"]);
    assert_eq!(out.code, Some(3), "{}", out.both());

    // With every node draining, jobs wait in the coordinator.
    let workflow = variant(up.dir.path(), "w.json", 4, 11, "euler");
    let path = workflow.to_str().expect("path");
    let first = up.run(&["submit", path]).stdout.trim().to_owned();
    let waiter = up.spawn(&["submit", path, "--wait"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let second = loop {
        let jobs = json_lines(&up.run(&["jobs", "--json", "--state", "queued"]).stdout);
        if jobs.len() == 2 {
            // Newest first.
            assert_eq!(jobs[1]["id"], first.as_str(), "{jobs:?}");
            break jobs[0]["id"].as_str().expect("id").to_owned();
        }
        assert!(Instant::now() < deadline, "jobs never queued: {jobs:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let table = up.run(&["jobs"]).stdout;
    let row = table
        .lines()
        .find(|line| line.starts_with(&second))
        .expect("row of the waiting job");
    // Queue positions come from the coordinator: the older job is next, this one behind it.
    assert!(
        row.contains("queued") && row.contains("1 job ahead in the queue"),
        "{table}"
    );
    let first_row = table
        .lines()
        .find(|line| line.starts_with(&first))
        .expect("row of the first job");
    assert!(first_row.contains("next in the queue"), "{table}");

    let out = up.run(&["cancel", &second]);
    assert_eq!(out.code, Some(0), "{}", out.both());
    assert!(out.stdout.contains("removed from queue"), "{}", out.stdout);
    let waited = wait_output(waiter, Duration::from_secs(30));
    assert_eq!(waited.code, Some(7), "{}", waited.both());
    assert!(waited.stdout.contains("cancelled"), "{}", waited.stdout);
    // Cancelling again is harmless.
    let out = up.run(&["cancel", &second, "--json"]);
    assert_eq!(out.code, Some(0), "{}", out.both());
    assert_eq!(json_lines(&out.stdout)[0]["outcome"], "already_terminal");

    // Undrained, the fleet runs the job that waited.
    for node in ["gpu-4090", "gpu-a4000", "gpu-3060"] {
        let out = up.run(&["undrain", node, "--json"]);
        assert_eq!(out.code, Some(0), "{}", out.both());
        assert_eq!(json_lines(&out.stdout)[0]["draining"], false);
    }
    let out = up.run(&["watch", &first]);
    assert_eq!(out.code, Some(0), "{}", out.both());

    // A running job cancelled: the waiting submit exits 7. (ComfyUI allows at most 10000
    // steps.)
    let long = variant(up.dir.path(), "long.json", 9_000, 12, "euler");
    let mut waiter = up.spawn(&["submit", long.to_str().expect("path"), "--wait"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let running = loop {
        let jobs = json_lines(&up.run(&["jobs", "--json", "--state", "running"]).stdout);
        if let Some(job) = jobs.first() {
            break job["id"].as_str().expect("id").to_owned();
        }
        if Instant::now() > deadline {
            let _ = waiter.kill();
            panic!("the long job never ran");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = up.run(&["cancel", &running]);
    assert_eq!(out.code, Some(0), "{}", out.both());
    assert!(out.stdout.contains("interrupted"), "{}", out.stdout);
    let waited = wait_output(waiter, Duration::from_secs(30));
    assert_eq!(waited.code, Some(7), "{}", waited.both());
}

#[test]
fn a_taken_port_fails_naming_the_address_and_the_flag() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    for (flag, other) in [
        ("--grpc-listen", "--http-listen"),
        ("--http-listen", "--grpc-listen"),
    ] {
        let out = run_in(
            dir.path(),
            &[
                "up",
                flag,
                &addr,
                other,
                "127.0.0.1:0",
                "--data-dir",
                "data",
                "--sim",
                "1",
            ],
        );
        assert_eq!(out.code, Some(1), "{}", out.both());
        let last = out.stderr.lines().last().unwrap_or_default();
        assert!(last.starts_with("error: cannot listen on "), "{last}");
        assert!(last.contains(&addr) && last.contains(flag), "{last}");
        assert!(last.contains("127.0.0.1:0 picks a free port"), "{last}");
    }
}
