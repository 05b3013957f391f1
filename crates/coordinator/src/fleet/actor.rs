//! The node actor: one per node, it probes the node and relays its WebSocket events.
//!
//! Two loops run per node, each in its own task and tracing span:
//! - the **probe loop** reads `/system_stats` and `/queue` every interval (jittered so a
//!   hundred nodes are not probed in lockstep), learns the node's classes and model files, and
//!   moves the node between up, suspect and down, logging each change once. It wakes the job
//!   manager only when a probe changed something placement reads (health, VRAM, queue depth,
//!   which of our prompts the node lists): a thousand idle nodes probed every second would
//!   otherwise cost a thousand placement wake-ups a second that can decide nothing new;
//! - the **event loop** keeps one WebSocket open with the coordinator's client id for the node,
//!   maps each event to our job by prompt id and appends it to that job's event log. It never
//!   waits for a watcher: appending to a log is a short, non-blocking operation.
//!
//! Anything that changes a job's state (a prompt started, a prompt ended, a node lost) is
//! handed to the job manager as a [`Signal`]; the actor itself never writes the journal.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use comfy_api::ws::{WsConfig, WsEvent, WsItem};
use rand::Rng;
use scheduler::Health;
use tokio::sync::{mpsc, watch};
use tracing::{Instrument, debug, info, info_span, warn};

use super::{Node, NodeHealth};
use crate::events::EventHub;
use crate::job::{JobEvent, JobId};
use crate::metrics::Metrics;

/// Model folders the coordinator reads from every node, so placement can check model files.
pub const MODEL_FOLDERS: &[&str] = &[
    "checkpoints",
    "loras",
    "vae",
    "diffusion_models",
    "text_encoders",
    "clip_vision",
    "controlnet",
    "upscale_models",
    "embeddings",
    "style_models",
    "hypernetworks",
    "photomaker",
    "gligen",
];

/// What a node actor tells the job manager.
#[derive(Debug)]
pub enum Signal {
    /// Something placement depends on changed (a probe, a slot freed): plan again.
    Wake,
    /// The node started executing one of our prompts.
    PromptStarted {
        /// The node.
        node: String,
        /// The prompt.
        prompt_id: String,
        /// Its job.
        job: JobId,
    },
    /// The node finished one of our prompts (final `executing` with a null node): read its
    /// history.
    PromptEnded {
        /// The node.
        node: String,
        /// The prompt.
        prompt_id: String,
        /// Its job.
        job: JobId,
    },
    /// Events may have been missed (reconnect, silence): check every prompt of ours there.
    Reconcile {
        /// The node.
        node: String,
    },
    /// The node has been unreachable past the grace: give its prompts back.
    NodeLost {
        /// The node.
        node: String,
    },
}

/// Timing of the node actor.
#[derive(Debug, Clone)]
pub struct ActorSettings {
    /// Time between probes. Default 1 s.
    pub probe_interval: Duration,
    /// Random extra delay added to each interval, up to this much. Default 100 ms.
    pub probe_jitter: Duration,
    /// Timeout of each probe request. Default 2 s.
    pub probe_timeout: Duration,
    /// Probes that must fail in a row before the node is suspect. Default 2.
    pub suspect_after: u32,
    /// How long a node may fail probes before it is down and its prompts go elsewhere.
    /// Default 15 s.
    pub down_after: Duration,
    /// How often the node's classes and model files are read again. Default 5 min.
    pub inventory_refresh: Duration,
    /// WebSocket settings (idle watchdog, backoff).
    pub websocket: WsConfig,
}

impl Default for ActorSettings {
    fn default() -> Self {
        Self {
            probe_interval: Duration::from_secs(1),
            probe_jitter: Duration::from_millis(100),
            probe_timeout: Duration::from_secs(2),
            suspect_after: 2,
            down_after: Duration::from_secs(15),
            inventory_refresh: Duration::from_secs(300),
            websocket: WsConfig::default(),
        }
    }
}

/// Shared things every actor needs.
#[derive(Clone)]
pub struct ActorContext {
    /// Where job events go.
    pub hub: Arc<EventHub>,
    /// Metrics.
    pub metrics: Metrics,
    /// The manager's signal inbox.
    pub signals_tx: mpsc::UnboundedSender<Signal>,
    /// Fires when the coordinator shuts down.
    pub shutdown_rx: watch::Receiver<bool>,
    /// Timing.
    pub settings: ActorSettings,
}

/// Starts both loops of `node`; they stop when shutdown fires.
pub fn spawn(node: Arc<Node>, context: ActorContext) -> Vec<tokio::task::JoinHandle<()>> {
    let span = info_span!("node", node = %node.spec.name, url = %node.spec.url);
    let probe = tokio::spawn(probe_loop(node.clone(), context.clone()).instrument(span.clone()));
    let events = tokio::spawn(event_loop(node, context).instrument(span));
    vec![probe, events]
}

/// The node's own metric series, looked up once per actor instead of by name on every probe.
struct NodeSeries {
    probe_duration: prometheus::Histogram,
    probe_failures: prometheus::IntCounter,
    vram_total: prometheus::IntGauge,
    vram_free: prometheus::IntGauge,
    queue_running: prometheus::IntGauge,
    queue_pending: prometheus::IntGauge,
    in_flight: prometheus::IntGauge,
    /// The health last written to the node's health series, and when: the series are keyed
    /// by node and state, so writing them costs several label lookups and is done only when
    /// the health changed (or now and then, see [`HEALTH_SERIES_REFRESH`]).
    health_written: Option<(NodeHealth, Instant)>,
}

impl NodeSeries {
    fn new(node: &Node, metrics: &Metrics) -> Self {
        let name = [node.spec.name.as_str()];
        Self {
            probe_duration: metrics.node_probe_duration.with_label_values(&name),
            probe_failures: metrics.node_probe_failures.with_label_values(&name),
            vram_total: metrics.node_vram_total.with_label_values(&name),
            vram_free: metrics.node_vram_free.with_label_values(&name),
            queue_running: metrics.node_queue_running.with_label_values(&name),
            queue_pending: metrics.node_queue_pending.with_label_values(&name),
            in_flight: metrics.node_in_flight.with_label_values(&name),
            health_written: None,
        }
    }
}

async fn probe_loop(node: Arc<Node>, context: ActorContext) {
    let mut shutdown_rx = context.shutdown_rx.clone();
    let settings = &context.settings;
    let mut series = NodeSeries::new(&node, &context.metrics);
    let mut inventory_read_at: Option<Instant> = None;
    loop {
        let started = Instant::now();
        // The probe bounds its two requests with one deadline (see `NodeClient::probe`).
        let result = probe_once(&node, settings.probe_timeout).await;
        let elapsed = started.elapsed();
        series.probe_duration.observe(elapsed.as_secs_f64());
        match result {
            Ok(changed) => {
                mark_probe_ok(&node, &context, &mut series, changed);
                let stale =
                    inventory_read_at.is_none_or(|at| at.elapsed() > settings.inventory_refresh);
                if stale {
                    match read_inventory(&node).await {
                        Ok(()) => {
                            inventory_read_at = Some(Instant::now());
                            let _ = context.signals_tx.send(Signal::Wake);
                        }
                        Err(error) => warn!(%error, "cannot read the node's classes and models"),
                    }
                }
            }
            Err(error) => mark_probe_failed(&node, &context, &mut series, error.to_string()),
        }

        // Jitter spreads a large fleet's probes over the interval, so a hundred nodes are
        // not probed in lockstep.
        let jitter = settings
            .probe_jitter
            .mul_f64(rand::rng().random_range(0.0..=1.0));
        let next = tick_after(started + settings.probe_interval + jitter);
        tokio::select! {
            _ = tokio::time::sleep(next.saturating_duration_since(Instant::now())) => {}
            _ = shutdown_rx.changed() => return,
        }
    }
}

/// Probes start on a grid of this step, so the probes of a large fleet that fall due within
/// one step are woken together: one runtime wake-up for several probes instead of one each.
/// It is small next to the interval and the jitter, which still spread the probes.
const PROBE_TICK: Duration = Duration::from_millis(10);

/// How often a node's health series are written again although its health did not change,
/// so series cleared by a node leaving and coming back (see discovery) reappear.
const HEALTH_SERIES_REFRESH: Duration = Duration::from_secs(30);

/// The first grid point (of [`PROBE_TICK`], counted from a process-wide origin) at or after
/// `at`.
fn tick_after(at: Instant) -> Instant {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let origin = *ORIGIN.get_or_init(Instant::now);
    let Some(since) = at.checked_duration_since(origin) else {
        return at;
    };
    let tick = PROBE_TICK.as_nanos();
    let rounded = since.as_nanos().div_ceil(tick) * tick;
    let extra = u64::try_from(rounded - since.as_nanos()).unwrap_or(0);
    at + Duration::from_nanos(extra)
}

/// What a probe can change among the things placement reads (see [`Node::view`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProbedInputs {
    cpu_only: bool,
    vram_total: u64,
    vram_free: u64,
    queue_running: u32,
    queue_pending: u32,
    /// Our prompts the node has not listed yet (they count as in flight).
    unseen: u32,
}

impl ProbedInputs {
    fn read(node: &Node) -> Self {
        // The prompt table and the status are locked one after the other, never together.
        let unseen = node.prompts.summary().unseen;
        let status = node.status();
        Self {
            cpu_only: status.cpu_only,
            vram_total: status.vram_total,
            vram_free: status.vram_free,
            queue_running: status.queue_running,
            queue_pending: status.queue_pending,
            unseen,
        }
    }
}

/// One probe round: `/system_stats` then `/queue`, both within `timeout`. Returns whether it
/// changed anything placement reads.
async fn probe_once(node: &Node, timeout: Duration) -> Result<bool, comfy_api::Error> {
    let probe = node.client.probe(timeout).await?;
    let before = ProbedInputs::read(node);
    if !probe.queue.prompt_ids.is_empty() {
        node.prompts.mark_listed(&probe.queue.prompt_ids);
    }

    {
        let mut status = node.status();
        if let Some(device) = &probe.stats.device {
            if status.gpu_name != device.name {
                status.gpu_name.clone_from(&device.name);
            }
            status.cpu_only = device.device_type == "cpu";
            status.vram_total = device.vram_total;
            status.vram_free = device.vram_free;
        }
        status.queue_running = u32::try_from(probe.queue.running).unwrap_or(u32::MAX);
        status.queue_pending = u32::try_from(probe.queue.pending).unwrap_or(u32::MAX);
    }
    Ok(ProbedInputs::read(node) != before)
}

/// Reads the node's classes and model files.
async fn read_inventory(node: &Node) -> Result<(), comfy_api::Error> {
    let classes: BTreeSet<String> = node.client.object_info().await?.nodes.into_keys().collect();
    let mut models = std::collections::BTreeMap::new();
    for folder in MODEL_FOLDERS {
        match node.client.models_in(folder).await {
            Ok(files) => {
                models.insert(
                    (*folder).to_owned(),
                    files.into_iter().collect::<BTreeSet<_>>(),
                );
            }
            // A folder the node does not know is simply empty there.
            Err(error) if matches!(error.kind, comfy_api::ErrorKind::UnknownModelFolder { .. }) => {
            }
            Err(error) => return Err(error),
        }
    }
    let mut status = node.status();
    debug!(num_classes = classes.len(), "read the node's inventory");
    status.classes = Some(Arc::new(classes));
    status.models = Arc::new(models);
    Ok(())
}

/// Records a good probe; wakes the manager when the node just came up or `changed` (the
/// probe changed something placement reads).
fn mark_probe_ok(node: &Node, context: &ActorContext, series: &mut NodeSeries, changed: bool) {
    let (health_changed, came_up) = {
        let mut status = node.status();
        let was = status.operator_health();
        let came_up = status.health != Health::Up;
        status.health = Health::Up;
        status.consecutive_failures = 0;
        status.failing_since = None;
        status.last_probe_ok = Some(Instant::now());
        status.last_error = None;
        let now = status.operator_health();
        record_gauges(node, &status, context, series);
        ((was != now).then_some((was, now)), came_up)
    };
    if let Some((was, now)) = health_changed {
        info!(
            from = was.as_str(),
            to = now.as_str(),
            "node health changed"
        );
    }
    if came_up {
        node.socket_retry.notify_one();
    }
    if changed || came_up {
        let _ = context.signals_tx.send(Signal::Wake);
    }
}

fn mark_probe_failed(node: &Node, context: &ActorContext, series: &mut NodeSeries, error: String) {
    series.probe_failures.inc();
    let (changed, lost) = {
        let mut status = node.status();
        let was = status.operator_health();
        status.consecutive_failures += 1;
        let since = *status.failing_since.get_or_insert_with(Instant::now);
        let mut lost = false;
        if since.elapsed() >= context.settings.down_after {
            lost = status.health != Health::Down;
            status.health = Health::Down;
            // Whatever comes back, if anything, starts with nothing loaded as far as we know.
            status.resident = scheduler::ResidentSet::new();
        } else if status.consecutive_failures >= context.settings.suspect_after
            && status.health == Health::Up
        {
            status.health = Health::Suspect;
        }
        status.last_error = Some(error.clone());
        let now = status.operator_health();
        record_gauges(node, &status, context, series);
        ((was != now).then_some((was, now)), lost)
    };
    if let Some((was, now)) = changed {
        warn!(from = was.as_str(), to = now.as_str(), %error, "node health changed");
    } else {
        debug!(%error, "probe failed");
    }
    if lost {
        let _ = context.signals_tx.send(Signal::NodeLost {
            node: node.spec.name.clone(),
        });
    }
}

fn record_gauges(
    node: &Node,
    status: &super::NodeStatus,
    context: &ActorContext,
    series: &mut NodeSeries,
) {
    let health = status.operator_health();
    let fresh = series
        .health_written
        .is_some_and(|(written, at)| written == health && at.elapsed() < HEALTH_SERIES_REFRESH);
    if !fresh {
        context
            .metrics
            .set_node_health(&node.spec.name, health.as_str());
        series.health_written = Some((health, Instant::now()));
    }
    series.vram_total.set(clamp(status.vram_total));
    series.vram_free.set(clamp(status.vram_free));
    series.queue_running.set(i64::from(status.queue_running));
    series.queue_pending.set(i64::from(status.queue_pending));
    series.in_flight.set(node.prompts.len() as i64);
}

fn clamp(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

async fn event_loop(node: Arc<Node>, context: ActorContext) {
    let mut shutdown_rx = context.shutdown_rx.clone();
    let mut stream = match node
        .client
        .events(&node.client_id, context.settings.websocket.clone())
    {
        Ok(stream) => stream,
        Err(error) => {
            warn!(%error, "cannot open the node's event stream");
            return;
        }
    };
    // The prompt the node is executing, for preview frames without metadata (event 1).
    let mut current_prompt: Option<String> = None;
    loop {
        let item = tokio::select! {
            item = stream.next() => item,
            () = node.socket_retry.notified() => {
                stream.retry_now();
                continue;
            }
            _ = shutdown_rx.changed() => break,
        };
        let Some(item) = item else { break };
        match item {
            WsItem::Connected { reconnect } => {
                node.status().socket_connected = true;
                // The node takes jobs again only with its socket up (see `Node::view`).
                let _ = context.signals_tx.send(Signal::Wake);
                if reconnect {
                    // The node may have restarted with empty VRAM: a guess that it still holds
                    // its checkpoints would draw jobs to a node that must load them again.
                    // After a mere network blip this charges one load too many, no more.
                    node.status().resident = scheduler::ResidentSet::new();
                    context
                        .metrics
                        .node_websocket_reconnects
                        .with_label_values(&[&node.spec.name])
                        .inc();
                    info!("event socket reconnected; reconciling our prompts");
                    let _ = context.signals_tx.send(Signal::Reconcile {
                        node: node.spec.name.clone(),
                    });
                }
            }
            WsItem::Event(event) => relay(&node, &context, event, &mut current_prompt),
            WsItem::BadFrame(error) => debug!(%error, "undecodable frame skipped"),
            WsItem::Idle { silent_for } => {
                // Silence is normal for an idle node; with our prompts running it may mean
                // the socket went deaf, so check them over HTTP.
                if !node.prompts.is_empty() {
                    debug!(
                        ?silent_for,
                        "event socket silent while our prompts run; reconciling"
                    );
                    let _ = context.signals_tx.send(Signal::Reconcile {
                        node: node.spec.name.clone(),
                    });
                }
            }
            WsItem::Disconnected { error, retry_in } => {
                node.status().socket_connected = false;
                debug!(%error, ?retry_in, "event socket disconnected");
            }
        }
    }
    stream.close().await;
}

/// Maps one node event to our job, appends it to the job's log, and signals the manager when
/// the job's state changes.
fn relay(node: &Node, context: &ActorContext, event: WsEvent, current_prompt: &mut Option<String>) {
    if let WsEvent::Status(status) = &event {
        // Status broadcasts keep the queue depth fresh between probes.
        let remaining = u32::try_from(status.queue_remaining()).unwrap_or(u32::MAX);
        let mut node_status = node.status();
        node_status.queue_running = remaining.min(1);
        node_status.queue_pending = remaining.saturating_sub(1);
        drop(node_status);
        let _ = context.signals_tx.send(Signal::Wake);
        return;
    }
    let prompt_id = match &event {
        WsEvent::PreviewImage { .. } => current_prompt.clone(),
        other => other.prompt_id().map(str::to_owned),
    };
    let Some(prompt_id) = prompt_id else { return };
    let Some(prompt) = node.prompts.get(&prompt_id) else {
        // Another client's prompt on a shared node, or one of ours already finished.
        return;
    };
    let job = prompt.job;
    node.prompts.touch(&prompt_id);
    let mapped = match event {
        WsEvent::ExecutionStart(_) => {
            *current_prompt = Some(prompt_id.clone());
            if let Some((_, true)) = node.prompts.mark_started(&prompt_id) {
                let _ = context.signals_tx.send(Signal::PromptStarted {
                    node: node.spec.name.clone(),
                    prompt_id: prompt_id.clone(),
                    job,
                });
            }
            Some(JobEvent::Started)
        }
        WsEvent::ExecutionCached(cached) => Some(JobEvent::NodesCached {
            node_ids: cached.nodes,
        }),
        WsEvent::Executing(executing) => match executing.node {
            Some(node_id) => {
                let (class_type, title) = prompt
                    .titles
                    .get(&node_id)
                    .map(|(class, title)| (Some(class.clone()), Some(title.clone())))
                    .unwrap_or((None, None));
                Some(JobEvent::NodeExecuting {
                    node_id,
                    class_type,
                    title,
                })
            }
            None => {
                *current_prompt = None;
                let _ = context.signals_tx.send(Signal::PromptEnded {
                    node: node.spec.name.clone(),
                    prompt_id: prompt_id.clone(),
                    job,
                });
                None
            }
        },
        WsEvent::Progress(progress) => {
            node.prompts.mark_sampling(&prompt_id);
            Some(JobEvent::Progress {
                node_id: progress.node.unwrap_or_default(),
                value: progress.value.max(0.0) as u64,
                max: progress.max.max(0.0) as u64,
            })
        }
        WsEvent::Executed(executed) => Some(JobEvent::NodeExecuted {
            node_id: executed.node,
            outputs: executed
                .output
                .map(ui_dict)
                .unwrap_or(serde_json::Value::Null),
        }),
        WsEvent::PreviewImage { format, image } => Some(JobEvent::PreviewImage {
            node_id: None,
            content_type: if format == 2 {
                "image/png"
            } else {
                "image/jpeg"
            }
            .to_owned(),
            bytes: image,
        }),
        WsEvent::PreviewImageWithMetadata { metadata, image } => Some(JobEvent::PreviewImage {
            node_id: metadata.node_id.clone(),
            content_type: metadata
                .image_type
                .clone()
                .unwrap_or_else(|| "image/jpeg".to_owned()),
            bytes: image,
        }),
        // Outcomes are read from history after the final `executing`, which also covers runs
        // whose events were missed; progress_state repeats what progress already says.
        _ => None,
    };
    if let Some(mapped) = mapped {
        context
            .metrics
            .relay_events
            .with_label_values(&[mapped.kind()])
            .inc();
        if let Some(log) = context.hub.get(job) {
            // A closed log means the job already ended (e.g. cancelled): late events are moot.
            let _ = log.append(mapped);
        }
    }
}

/// Rebuilds ComfyUI's UI dict (`{"images": [...], "text": [...]}`) from a decoded output.
fn ui_dict(output: comfy_api::NodeOutput) -> serde_json::Value {
    let mut map = output.other;
    for (kind, files) in output.files {
        map.insert(kind, serde_json::to_value(files).unwrap_or_default());
    }
    if !output.text.is_empty() {
        map.insert("text".into(), serde_json::json!(output.text));
    }
    if !output.animated.is_empty() {
        map.insert("animated".into(), serde_json::json!(output.animated));
    }
    serde_json::Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_starts_are_rounded_up_to_one_grid() {
        let at = Instant::now() + Duration::from_millis(3);
        let point = tick_after(at);
        assert!(point >= at && point - at < PROBE_TICK);
        // Everything due within the step before a grid point starts on it, and nothing later.
        assert_eq!(tick_after(point), point);
        assert_eq!(tick_after(point - Duration::from_nanos(1)), point);
        assert_eq!(
            tick_after(point - PROBE_TICK + Duration::from_nanos(1)),
            point
        );
        assert_eq!(
            tick_after(point + Duration::from_nanos(1)),
            point + PROBE_TICK
        );
    }
}
