//! The figures of one soak run and their Markdown table.
//!
//! `lost` and `prompts_started_twice` are the promise under test and must be zero; the rest
//! (outcomes, retries, faults, memory) explain a run and show leaks over long ones.

use std::collections::HashMap;

use serde::Serialize;

/// The report of one run.
#[derive(Debug, Serialize)]
pub struct SoakReport {
    /// Settings.
    pub seed: u64,
    /// Minutes of load.
    pub minutes: f64,
    /// Nodes.
    pub nodes: usize,
    /// Offered jobs per second.
    pub rate: f64,
    /// Estimated capacity in jobs per second.
    pub capacity: f64,
    /// Submissions attempted.
    pub submitted: u64,
    /// Accepted job ids (distinct).
    pub accepted: u64,
    /// Refusals by gRPC code.
    pub refused: HashMap<String, u64>,
    /// Submit calls repeated because the coordinator was unreachable.
    pub submit_retries: u64,
    /// Submits answered as replays of an earlier one (same idempotency key).
    pub submit_replayed: u64,
    /// Terminal jobs by outcome.
    pub succeeded: u64,
    /// Failed jobs.
    pub failed: u64,
    /// Cancelled jobs.
    pub cancelled: u64,
    /// Accepted but not terminal when the drain gave up (must be 0).
    pub lost: u64,
    /// Some of the lost jobs with their last known state.
    pub lost_examples: Vec<String>,
    /// Jobs the coordinator lists that the client never saw accepted.
    pub unknown_to_client: u64,
    /// Sum over nodes of `POST /prompt` calls.
    pub prompt_posts: u64,
    /// Sum over jobs of the coordinator's attempt number.
    pub attempts: u64,
    /// `prompt_posts - attempts` (positive: more POSTs than recorded attempts).
    pub posts_minus_attempts: i64,
    /// Prompt ids a node started more than once (each a job run twice).
    pub prompts_started_twice: u64,
    /// Examples of those.
    pub started_twice_examples: Vec<String>,
    /// Retries (attempts beyond the first).
    pub retries: u64,
    /// Faults injected by kind.
    pub faults: HashMap<String, u64>,
    /// Coordinator restarts whose SIGTERM did not end it in time (then killed).
    pub sigterm_timeouts: u64,
    /// Seconds the drain took.
    pub drain_seconds: f64,
    /// Coordinator RSS in KiB: min, max, last.
    pub rss_kib_min: u64,
    /// Max.
    pub rss_kib_max: u64,
    /// Last.
    pub rss_kib_last: u64,
    /// (seconds from start, KiB), every sample.
    pub rss_series: Vec<(f64, u64)>,
}

/// The report as a Markdown table.
pub fn markdown(report: &SoakReport) -> String {
    let mut faults: Vec<_> = report.faults.iter().collect();
    faults.sort();
    let faults = faults
        .iter()
        .map(|(kind, count)| format!("{kind} {count}"))
        .collect::<Vec<_>>()
        .join(", ");
    let refused = report.refused.values().sum::<u64>();
    let step = report.rss_series.len().div_ceil(12).max(1);
    let series = report
        .rss_series
        .iter()
        .step_by(step)
        .map(|(at, kib)| format!("{at:.0}s:{}M", kib / 1024))
        .collect::<Vec<_>>()
        .join(" ");
    let rows = [
        (
            "seed / nodes / minutes",
            format!("{} / {} / {}", report.seed, report.nodes, report.minutes),
        ),
        (
            "offered rate (capacity)",
            format!("{:.2}/s ({:.2}/s)", report.rate, report.capacity),
        ),
        (
            "submitted / accepted / refused",
            format!("{} / {} / {refused}", report.submitted, report.accepted),
        ),
        (
            "submit retries (replayed)",
            format!("{} ({})", report.submit_retries, report.submit_replayed),
        ),
        (
            "succeeded / failed / cancelled",
            format!(
                "{} / {} / {}",
                report.succeeded, report.failed, report.cancelled
            ),
        ),
        ("**lost** (must be 0)", report.lost.to_string()),
        (
            "listed but unknown to client",
            report.unknown_to_client.to_string(),
        ),
        (
            "POST /prompt − attempts",
            format!(
                "{} − {} = {}",
                report.prompt_posts, report.attempts, report.posts_minus_attempts
            ),
        ),
        (
            "**prompt ids started twice**",
            report.prompts_started_twice.to_string(),
        ),
        ("retries", report.retries.to_string()),
        ("faults", faults),
        ("SIGTERM timeouts", report.sigterm_timeouts.to_string()),
        ("drain", format!("{:.1}s", report.drain_seconds)),
        (
            "coordinator RSS min/max/last",
            format!(
                "{}/{}/{} MiB",
                report.rss_kib_min / 1024,
                report.rss_kib_max / 1024,
                report.rss_kib_last / 1024
            ),
        ),
        ("RSS series", series),
    ];
    let mut out = String::from("| soak | value |\n|---|---|\n");
    for (name, value) in rows {
        out.push_str(&format!("| {name} | {value} |\n"));
    }
    out
}
