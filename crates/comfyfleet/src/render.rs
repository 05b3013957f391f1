//! How job events look on a terminal, in plain logs and as JSON lines.
//!
//! Three renderers share one input, the coordinator's event stream:
//! - `Json`: one JSON object per line on stdout, for scripts (`--json`);
//! - `Live`: a progress bar per sampler node with queue position, node and elapsed time, when
//!   stderr is a terminal;
//! - `Plain`: one short line per event, for logs and pipes (no cursor movement, no colour).
//!
//! Times printed before each line are measured from the job's submission as the coordinator
//! recorded it, so `watch` of a finished job shows when each event really happened instead of
//! the instant it was replayed.

use crate::exit::outln;
use std::time::{Duration, Instant};

use fleet_proto::v1::{EventGap, FailureClass, Job, JobEvent, JobState, Output, job_event::Kind};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};

/// Which renderer to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One JSON object per line on stdout.
    Json,
    /// Progress bars on stderr (a terminal).
    Live,
    /// One line per event on stdout.
    Plain,
}

/// Renders the stream of one job.
pub struct Renderer {
    mode: Mode,
    started: Instant,
    /// The job's submission time (seconds since the epoch), from its snapshot.
    origin: Option<f64>,
    /// The stamp of the last line printed.
    last_stamp: Duration,
    bar: Option<ProgressBar>,
    /// The ComfyUI node id the current bar counts steps of.
    bar_node: String,
    /// The fleet node the job is on (from the latest dispatch).
    fleet_node: String,
    /// The title of the graph node executing now, by node id.
    executing: Option<(String, String)>,
    /// The queue position last printed, so waiting jobs print only changes.
    queue_position: Option<u32>,
    /// Whether the lines so far already say the job is queued (from the submission answer,
    /// a snapshot or a queued event), so the next snapshot or queued event that says only
    /// that is not printed again.
    said_queued: bool,
    /// Whether the submission line was just printed: the first snapshot then says nothing
    /// new (the events that follow tell the job's story from its start), so it is not
    /// printed.
    after_submission: bool,
    /// The snapshot line printed last, while no event line has followed it.
    last_snapshot: Option<String>,
    spinner: Option<ProgressBar>,
}

impl Renderer {
    /// Creates a renderer; `Live` falls back to `Plain` when stderr is not a terminal.
    pub fn new(mode: Mode) -> Self {
        let mode = match mode {
            Mode::Live if !console_is_terminal() => Mode::Plain,
            other => other,
        };
        Self {
            mode,
            started: Instant::now(),
            origin: None,
            last_stamp: Duration::ZERO,
            bar: None,
            bar_node: String::new(),
            fleet_node: String::new(),
            executing: None,
            queue_position: None,
            said_queued: false,
            after_submission: false,
            last_snapshot: None,
            spinner: None,
        }
    }

    /// The mode in effect (`Live` has become `Plain` without a terminal).
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Shows where a waiting job stands in the queue: a spinner on a terminal, a line when the
    /// position changes otherwise.
    pub fn waiting(&mut self, position: u32) {
        if self.mode == Mode::Json || self.bar.is_some() {
            return;
        }
        if self.mode == Mode::Live {
            let spinner = self.spinner.get_or_insert_with(|| {
                let spinner = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
                spinner.set_style(
                    ProgressStyle::with_template("  {spinner} {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                spinner.enable_steady_tick(Duration::from_millis(120));
                spinner
            });
            spinner.set_message(format!(
                "waiting, {} ({})",
                queue_text(position),
                format_elapsed(self.started.elapsed()).trim_start()
            ));
            self.queue_position = Some(position);
            return;
        }
        if self.queue_position != Some(position) {
            self.queue_position = Some(position);
            self.line(format!("waiting, {}", queue_text(position)));
        }
    }

    /// Prints the job snapshot a watch stream starts with.
    pub fn snapshot(&mut self, job: &Job) {
        if let Some(created) = &job.created_at {
            self.origin = Some(seconds(created));
        }
        if !job.node.is_empty() {
            self.fleet_node = job.node.clone();
        }
        let queued = job.state == JobState::Queued as i32;
        let text = format!(
            "job {}: {}{}",
            job.id,
            state_name(job.state),
            if job.node.is_empty() {
                String::new()
            } else {
                format!(" on {}", job.node)
            }
        );
        // Quiet right after the submission line, when the lines already say the job is
        // queued, and when the last line printed was this same snapshot (a resumed watch
        // sends one before and one after its gap).
        let quiet = std::mem::take(&mut self.after_submission)
            || (queued && self.said_queued)
            || self.last_snapshot.as_deref() == Some(text.as_str());
        match self.mode {
            Mode::Json => outln!("{}", json!({"snapshot": job_json(job)})),
            _ if quiet => return,
            _ => self.line(text.clone()),
        }
        self.said_queued = queued;
        self.last_snapshot = Some(text);
    }

    /// Prints a gap notice: events the coordinator no longer holds.
    pub fn gap(&mut self, gap: &EventGap) {
        match self.mode {
            Mode::Json => outln!(
                "{}",
                json!({"gap": {"from_sequence": gap.from_sequence, "to_sequence": gap.to_sequence}})
            ),
            // The range's end can be far above any event number (a restarted coordinator
            // numbers on from 2^32 × its runs), which says nothing to a person.
            _ => self.line(format!(
                "(events from {} on are no longer held by the coordinator; going on from its \
                 current state)",
                gap.from_sequence
            )),
        }
    }

    /// Prints one event.
    pub fn event(&mut self, event: &JobEvent) {
        if self.mode == Mode::Json {
            outln!("{}", event_json(event));
            return;
        }
        let Some(kind) = &event.kind else { return };
        let at = self.event_elapsed(event);
        match kind {
            Kind::Dispatched(dispatched) => self.fleet_node = dispatched.node.clone(),
            // Recorded so that the first refresh of a waiting job does not repeat it.
            Kind::Queued(queued) => self.queue_position = Some(queued.position),
            Kind::NodeExecuting(executing) => {
                let title = if executing.title.is_empty() {
                    executing.class_type.clone()
                } else {
                    executing.title.clone()
                };
                self.executing = Some((executing.node_id.clone(), title));
            }
            _ => {}
        }
        match kind {
            Kind::Progress(progress) if self.mode == Mode::Live => {
                self.finish_spinner();
                self.progress(&progress.node_id, progress.value, progress.max, at);
            }
            Kind::Progress(progress) => {
                // Plain output: every step would flood a log; print the first, the last and
                // every tenth step.
                let step = progress.value as u64;
                let max = progress.max as u64;
                if step <= 1 || step == max || step.is_multiple_of(10) {
                    let label = self.step_label(&progress.node_id);
                    self.line_at(at, format!("{label}: step {step}/{max}"));
                }
            }
            // The submission answer or the snapshot already said so.
            Kind::Queued(queued) if self.said_queued => {
                if self.mode == Mode::Live {
                    self.waiting(queued.position);
                }
            }
            other => {
                self.finish_bar();
                self.finish_spinner();
                if let Some(text) = describe(other) {
                    self.line_at(at, text);
                }
                if let Kind::Queued(queued) = other
                    && self.mode == Mode::Live
                {
                    self.waiting(queued.position);
                }
            }
        }
        // Progress and previews say nothing about the state; every other event moves it.
        if !matches!(kind, Kind::Progress(_) | Kind::PreviewImage(_)) {
            self.said_queued = matches!(kind, Kind::Queued(_));
            self.last_snapshot = None;
        }
    }

    /// Prints that a job was accepted.
    pub fn submitted(&mut self, job_id: &str, position: u32, replayed: bool) {
        // A replayed submission answers with an earlier job, in whatever state it is now.
        if !replayed {
            self.said_queued = true;
            self.queue_position = Some(position);
            self.after_submission = true;
        }
        self.line(format!(
            "submitted job {job_id} ({}){}",
            queue_text(position),
            if replayed {
                ", an earlier submission with the same idempotency key"
            } else {
                ""
            }
        ));
    }

    /// Where the steps of graph node `node_id` run: `gpu-4090 KSampler (3)`.
    fn step_label(&self, node_id: &str) -> String {
        let title = match &self.executing {
            Some((id, title)) if id == node_id => format!("{title} ({node_id})"),
            _ => format!("node {node_id}"),
        };
        if self.fleet_node.is_empty() {
            title
        } else {
            format!("{} {title}", self.fleet_node)
        }
    }

    /// Time from submission to `event`, by the coordinator's clock when both are known.
    fn event_elapsed(&self, event: &JobEvent) -> Duration {
        match (self.origin, &event.time) {
            (Some(origin), Some(time)) => {
                Duration::try_from_secs_f64(seconds(time) - origin).unwrap_or_default()
            }
            _ => self.started.elapsed(),
        }
    }

    /// Prints a line saying where an output was saved.
    pub fn saved(&mut self, output: &Output, path: &std::path::Path, bytes: u64) {
        match self.mode {
            Mode::Json => outln!(
                "{}",
                json!({"saved": {"output": output_json(output), "path": path.display().to_string(), "bytes": bytes}})
            ),
            _ => self.line(format!("saved {} ({bytes} bytes)", path.display())),
        }
    }

    /// Prints a one-line notice for a person (on stderr); nothing in JSON mode.
    pub fn notice(&mut self, text: &str) {
        if self.mode != Mode::Json {
            self.line(format!("note: {text}"));
        }
    }

    /// Clears any progress bar; call before the process prints its last words.
    pub fn finish(&mut self) {
        self.finish_bar();
        self.finish_spinner();
    }

    fn progress(&mut self, node_id: &str, value: f64, max: f64, at: Duration) {
        let max = max.max(1.0) as u64;
        if self.bar.is_none() || self.bar_node != node_id {
            self.finish_bar();
            let bar = ProgressBar::with_draw_target(Some(max), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("  {prefix} [{bar:30}] {pos}/{len} steps  {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.set_prefix(self.step_label(node_id));
            self.bar = Some(bar);
            self.bar_node = node_id.to_owned();
        }
        if let Some(bar) = &self.bar {
            bar.set_length(max);
            bar.set_position(value as u64);
            bar.set_message(format_elapsed(at).trim_start().to_owned());
        }
    }

    fn finish_spinner(&mut self) {
        if let Some(spinner) = self.spinner.take() {
            spinner.finish_and_clear();
        }
    }

    fn finish_bar(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }

    /// Prints a line stamped now: time since the job's submission once its snapshot told
    /// when that was (the clock events are stamped by), else since this command started.
    fn line(&mut self, text: String) {
        let now = match self.origin {
            Some(origin) => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .ok()
                .and_then(|now| Duration::try_from_secs_f64(now.as_secs_f64() - origin).ok())
                .unwrap_or_default(),
            None => self.started.elapsed(),
        };
        self.line_at(now, text);
    }

    /// Prints a line stamped `at`. Stamps never go back: lines stamped by this machine's clock
    /// and events stamped by the coordinator's can disagree by a little, and a resumed watch
    /// mixes both.
    fn line_at(&mut self, at: Duration, text: String) {
        let at = at.max(self.last_stamp);
        self.last_stamp = at;
        let elapsed = format_elapsed(at);
        match (self.bar.as_ref().or(self.spinner.as_ref()), self.mode) {
            (Some(bar), _) => bar.println(format!("[{elapsed}] {text}")),
            (None, Mode::Live) => eprintln!("[{elapsed}] {text}"),
            (None, _) => outln!("[{elapsed}] {text}"),
        }
    }
}

fn console_is_terminal() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal()
}

fn format_elapsed(elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    if secs < 60.0 {
        format!("{secs:5.1}s")
    } else {
        format!("{}m{:02}s", secs as u64 / 60, secs as u64 % 60)
    }
}

/// A queue position for people: the protocol counts from 0 (next to be placed).
pub fn queue_text(position: u32) -> String {
    match position {
        0 => "next in the queue".to_owned(),
        1 => "1 job ahead in the queue".to_owned(),
        n => format!("{n} jobs ahead in the queue"),
    }
}

/// How long ago `time` was, in the largest unit that fits: `42s`, `5m`, `3h`, `2d`.
pub fn age(time: &Option<prost_types::Timestamp>, now: std::time::SystemTime) -> String {
    let Some(time) = time else {
        return "-".to_owned();
    };
    let now = now
        .duration_since(std::time::UNIX_EPOCH)
        .map(|since| since.as_secs_f64())
        .unwrap_or_default();
    // A clock behind the coordinator's reads as "0s" rather than a negative age.
    let secs = (now - seconds(time)).max(0.0) as u64;
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86400),
    }
}

/// One human line for an event, or `None` for events not worth a line.
fn describe(kind: &Kind) -> Option<String> {
    Some(match kind {
        Kind::Queued(queued) => format!("queued, {}", queue_text(queued.position)),
        Kind::Dispatched(dispatched) => format!(
            "dispatched to node {} (prompt {}, attempt {})",
            dispatched.node, dispatched.prompt_id, dispatched.attempt
        ),
        Kind::Started(_) => "started".to_owned(),
        Kind::NodeExecuting(executing) => {
            let title = if executing.title.is_empty() {
                &executing.class_type
            } else {
                &executing.title
            };
            format!("executing node {} ({title})", executing.node_id)
        }
        Kind::NodesCached(cached) if cached.node_ids.is_empty() => return None,
        Kind::NodesCached(cached) => format!("cached nodes {}", cached.node_ids.join(", ")),
        Kind::NodeExecuted(executed) => {
            format!(
                "node {} produced {} output(s)",
                executed.node_id,
                executed.outputs.len()
            )
        }
        Kind::PreviewImage(preview) => {
            format!(
                "preview from node {} ({} bytes)",
                preview.node_id,
                preview.data.len()
            )
        }
        Kind::Succeeded(done) => {
            let mut text = format!("succeeded with {} output(s)", done.outputs.len());
            // Text a node showed is the output itself; files are saved with --out.
            for output in done.outputs.iter().filter(|o| o.kind == "text") {
                text.push_str(&format!(
                    "\n    node {} shows: {}",
                    output.node_id,
                    printable(&output.text)
                ));
                if output.text_truncated {
                    text.push_str(&format!(
                        " … (cut here; output {} has the whole text)",
                        output.index
                    ));
                }
            }
            text
        }
        Kind::Failed(failed) => {
            let failure = failed.failure.clone().unwrap_or_default();
            let mut text = format!(
                "failed ({}): {}",
                class_name(failure.failure_class),
                failure.message
            );
            for error in &failure.node_errors {
                text.push_str(&format!(
                    "\n    node {} ({})",
                    error.node_id, error.class_type
                ));
                let exception = format!(
                    "{} {}",
                    error.exception_type,
                    error.exception_message.trim_end()
                );
                if !exception.trim().is_empty() {
                    text.push_str(&format!(": {}", exception.trim()));
                }
                for issue in &error.issues {
                    text.push_str(&format!("\n      - {}: {}", issue.message, issue.details));
                }
            }
            for attempt in &failure.attempts {
                text.push_str(&format!(
                    "\n    attempt {} on {}: {}",
                    attempt.attempt, attempt.node, attempt.reason
                ));
            }
            text
        }
        Kind::Retrying(retrying) => {
            format!(
                "retrying (attempt {}): {}",
                retrying.attempt, retrying.reason
            )
        }
        Kind::Cancelled(cancelled) => format!("cancelled: {}", cancelled.reason),
        Kind::Progress(_) => return None,
    })
}

/// The lowercase name of a job state (`queued`, `running`, ...).
pub fn state_name(state: i32) -> String {
    JobState::try_from(state)
        .map(|state| {
            state
                .as_str_name()
                .trim_start_matches("JOB_STATE_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| format!("state {state}"))
}

/// The lowercase name of a failure class (`out_of_memory`, ...).
pub fn class_name(class: i32) -> String {
    FailureClass::try_from(class)
        .map(|class| {
            class
                .as_str_name()
                .trim_start_matches("FAILURE_CLASS_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| format!("class {class}"))
}

/// Text from a node made safe for a terminal: control characters (escape sequences, carriage
/// returns, NUL) are written as escapes, and each further line is indented under the first.
fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\n      "),
            '\t' => out.push('\t'),
            c if c.is_control() => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    out
}

fn output_json(output: &Output) -> Value {
    let mut value = json!({
        "index": output.index, "node_id": output.node_id, "filename": output.filename,
        "subfolder": output.subfolder, "type": output.r#type, "kind": output.kind,
    });
    // A text output carries its text; a file output is fetched instead.
    if output.kind == "text" {
        value["text"] = json!(output.text);
        value["text_truncated"] = json!(output.text_truncated);
    }
    value
}

fn seconds(time: &prost_types::Timestamp) -> f64 {
    time.seconds as f64 + f64::from(time.nanos) / 1e9
}

fn timestamp_json(time: &Option<prost_types::Timestamp>) -> Value {
    match time {
        Some(time) => json!(seconds(time)),
        None => Value::Null,
    }
}

/// A job snapshot as JSON.
pub fn job_json(job: &Job) -> Value {
    json!({
        "id": job.id, "state": state_name(job.state), "tenant": job.tenant,
        "priority": job.priority, "node": job.node, "prompt_id": job.prompt_id,
        "attempt": job.attempt, "queue_position": job.queue_position,
        "created_at": timestamp_json(&job.created_at),
        "finished_at": timestamp_json(&job.finished_at),
        "outputs": job.outputs.iter().map(output_json).collect::<Vec<_>>(),
        "failure": job.failure.as_ref().map(|failure| json!({
            "class": class_name(failure.failure_class),
            "message": failure.message,
            "retryable": failure.retryable,
        })),
    })
}

/// An event as JSON: `{"sequence", "type", ...fields}`.
pub fn event_json(event: &JobEvent) -> Value {
    let mut value = match &event.kind {
        Some(Kind::Queued(queued)) => json!({"type": "queued", "position": queued.position}),
        Some(Kind::Dispatched(d)) => json!({
            "type": "dispatched", "node": d.node, "prompt_id": d.prompt_id, "attempt": d.attempt
        }),
        Some(Kind::Started(_)) => json!({"type": "started"}),
        Some(Kind::NodeExecuting(e)) => json!({
            "type": "node_executing", "node_id": e.node_id, "class_type": e.class_type,
            "title": e.title
        }),
        Some(Kind::Progress(p)) => {
            json!({"type": "progress", "node_id": p.node_id, "value": p.value, "max": p.max})
        }
        Some(Kind::NodesCached(c)) => json!({"type": "nodes_cached", "node_ids": c.node_ids}),
        Some(Kind::NodeExecuted(e)) => json!({
            "type": "node_executed", "node_id": e.node_id,
            "outputs": e.outputs.iter().map(output_json).collect::<Vec<_>>()
        }),
        Some(Kind::PreviewImage(p)) => json!({
            "type": "preview_image", "node_id": p.node_id, "content_type": p.content_type,
            "bytes": p.data.len()
        }),
        Some(Kind::Succeeded(s)) => json!({
            "type": "succeeded", "outputs": s.outputs.iter().map(output_json).collect::<Vec<_>>()
        }),
        Some(Kind::Failed(f)) => {
            let failure = f.failure.clone().unwrap_or_default();
            json!({
                "type": "failed", "class": class_name(failure.failure_class),
                "message": failure.message, "retryable": failure.retryable,
                "node_errors": failure.node_errors.iter().map(|e| json!({
                    "node_id": e.node_id, "class_type": e.class_type,
                    "exception_type": e.exception_type,
                    "exception_message": e.exception_message, "traceback": e.traceback,
                })).collect::<Vec<_>>(),
                "attempts": failure.attempts.iter().map(|a| json!({
                    "attempt": a.attempt, "node": a.node, "prompt_id": a.prompt_id,
                    "reason": a.reason, "class": class_name(a.failure_class),
                })).collect::<Vec<_>>(),
            })
        }
        Some(Kind::Retrying(r)) => json!({
            "type": "retrying", "attempt": r.attempt, "reason": r.reason,
            "class": class_name(r.failure_class)
        }),
        Some(Kind::Cancelled(c)) => json!({"type": "cancelled", "reason": c.reason}),
        None => json!({"type": "unknown"}),
    };
    if let Value::Object(map) = &mut value {
        map.insert("sequence".into(), json!(event.sequence));
        map.insert("time".into(), timestamp_json(&event.time));
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{SystemTime, UNIX_EPOCH};

    fn at(secs: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp {
            seconds: secs,
            nanos: 0,
        })
    }

    #[test]
    fn ages_use_the_largest_unit_that_fits() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(age(&at(1_000_000 - 42), now), "42s");
        assert_eq!(age(&at(1_000_000 - 300), now), "5m");
        assert_eq!(age(&at(1_000_000 - 3 * 3600 - 5), now), "3h");
        assert_eq!(age(&at(1_000_000 - 2 * 86400), now), "2d");
        assert_eq!(age(&at(1_000_000 + 30), now), "0s");
        assert_eq!(age(&None, SystemTime::now()), "-");
    }

    #[test]
    fn stamps_never_go_back() {
        let mut renderer = Renderer::new(Mode::Plain);
        renderer.line_at(
            Duration::from_millis(24_800),
            "a notice by this clock".into(),
        );
        renderer.line_at(
            Duration::from_millis(24_200),
            "an event by the coordinator's".into(),
        );
        assert_eq!(renderer.last_stamp, Duration::from_millis(24_800));
        renderer.line_at(Duration::from_secs(30), "later".into());
        assert_eq!(renderer.last_stamp, Duration::from_secs(30));
        // Once the snapshot says when the job was submitted, lines stamped now use that
        // origin too: a job submitted an hour ago is not at 0.0 s.
        let hour_ago = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_secs() as i64
            - 3600;
        renderer.snapshot(&Job {
            created_at: at(hour_ago),
            ..Job::default()
        });
        assert!(
            renderer.last_stamp >= Duration::from_secs(3599),
            "{:?}",
            renderer.last_stamp
        );
    }

    #[test]
    fn replayed_events_are_timed_from_submission_not_from_the_replay() {
        let mut renderer = Renderer::new(Mode::Plain);
        renderer.snapshot(&Job {
            created_at: at(1_000),
            ..Job::default()
        });
        let event = JobEvent {
            time: Some(prost_types::Timestamp {
                seconds: 1_012,
                nanos: 500_000_000,
            }),
            ..JobEvent::default()
        };
        assert_eq!(
            renderer.event_elapsed(&event),
            Duration::from_millis(12_500)
        );
        // An event stamped before the submission (clock skew) reads as zero, not a panic.
        let early = JobEvent {
            time: at(900),
            ..JobEvent::default()
        };
        assert_eq!(renderer.event_elapsed(&early), Duration::ZERO);
    }

    #[test]
    fn a_success_shows_the_text_outputs_and_json_carries_them() {
        let image = Output {
            node_id: "9".into(),
            filename: "a.png".into(),
            kind: "images".into(),
            ..Output::default()
        };
        let caption = Output {
            node_id: "4".into(),
            kind: "text".into(),
            index: 1,
            text: "a red fox".into(),
            ..Output::default()
        };
        let done = Kind::Succeeded(fleet_proto::v1::job_event::Succeeded {
            outputs: vec![image.clone(), caption.clone()],
        });
        assert_eq!(
            describe(&done).as_deref(),
            Some("succeeded with 2 output(s)\n    node 4 shows: a red fox")
        );
        assert_eq!(output_json(&caption)["text"], "a red fox");
        let hostile = Output {
            text: "red \u{1b}[31mALERT\r over\nsecond line\0".into(),
            text_truncated: true,
            index: 3,
            ..caption.clone()
        };
        let shown = describe(&Kind::Succeeded(fleet_proto::v1::job_event::Succeeded {
            outputs: vec![hostile],
        }))
        .unwrap_or_default();
        assert_eq!(
            shown,
            "succeeded with 1 output(s)\n    node 4 shows: red \\u{1b}[31mALERT\\r over\n      \
             second line\\u{0} … (cut here; output 3 has the whole text)"
        );
        assert!(output_json(&image).get("text").is_none());
    }

    #[test]
    fn step_lines_name_the_fleet_node_and_the_sampler() {
        let mut renderer = Renderer::new(Mode::Plain);
        renderer.fleet_node = "gpu-4090".into();
        renderer.executing = Some(("3".into(), "KSampler".into()));
        assert_eq!(renderer.step_label("3"), "gpu-4090 KSampler (3)");
        assert_eq!(renderer.step_label("9"), "gpu-4090 node 9");
    }
}
