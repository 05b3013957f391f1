//! Prometheus metrics for the coordinator.
//!
//! Every family is named `comfyfleet_<subsystem>_<noun>_<unit>`, durations are in seconds, and
//! `_total` appears only on counters. Label values come from small fixed sets (outcome, reason,
//! event type, gRPC method and code) or from the configured node names; a job id is never a
//! label, so the number of series stays bounded however many jobs run.
//!
//! [`Metrics`] registers into a [`Registry`] it is handed, so a test can build a fresh registry,
//! drive the coordinator and read exact values back without global state.

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Buckets for job-level durations (queue wait, execution, end to end): 50 ms to about 30 min.
const JOB_SECONDS_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
];

/// Buckets for short request-level durations (probes, gRPC calls): 0.5 ms to 10 s.
const REQUEST_SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// The health states a node can be in, as exported by `comfyfleet_node_health`.
pub const NODE_HEALTH_STATES: &[&str] = &["up", "suspect", "down", "draining"];

/// All metric families of one coordinator.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,

    /// Jobs accepted at submit (replays of an idempotency key are not counted again).
    pub jobs_submitted: IntCounter,
    /// Jobs that reached a terminal state, by `outcome` (succeeded, failed, cancelled).
    pub jobs_finished: IntCounterVec,
    /// Submissions refused, by `reason` (invalid, infeasible, queue_full, idempotency_conflict).
    pub jobs_rejected: IntCounterVec,
    /// Attempts that were given up and requeued, by `reason`.
    pub jobs_retried: IntCounterVec,
    /// Jobs waiting in the coordinator's queue now.
    pub jobs_queued: IntGauge,
    /// Jobs dispatched to a node and not yet finished.
    pub jobs_running: IntGauge,
    /// Time from submit to the first dispatch.
    pub job_queue_wait: Histogram,
    /// Time from dispatch to the terminal state of the attempt that finished the job.
    pub job_execution: Histogram,
    /// Time from submit to the terminal state.
    pub job_end_to_end: Histogram,

    /// 1 when the node answers its probes, 0 otherwise, by `node`.
    pub node_up: IntGaugeVec,
    /// 1 for the node's current health state and 0 for the others, by `node` and `state`.
    pub node_health: IntGaugeVec,
    /// Total VRAM the node reports, by `node`.
    pub node_vram_total: IntGaugeVec,
    /// Free VRAM the node reports, by `node`.
    pub node_vram_free: IntGaugeVec,
    /// Prompts running on the node (ours or not), by `node`.
    pub node_queue_running: IntGaugeVec,
    /// Prompts pending on the node (ours or not), by `node`.
    pub node_queue_pending: IntGaugeVec,
    /// Our prompts the node holds (sent and not yet finished), by `node`.
    pub node_in_flight: IntGaugeVec,
    /// Duration of one probe round (`/system_stats` and `/queue`), by `node`.
    pub node_probe_duration: HistogramVec,
    /// Probes that failed or timed out, by `node`.
    pub node_probe_failures: IntCounterVec,
    /// WebSocket reconnects, by `node`.
    pub node_websocket_reconnects: IntCounterVec,
    /// Model loads inferred from a job whose checkpoint was not believed resident on the node
    /// (see [`scheduler::ResidentSet`]), by `node`.
    pub node_model_loads: IntCounterVec,
    /// Learnt seconds a load of the model takes, from cold starts, by `model` (checkpoint or
    /// diffusion-model file name; bounded by the fleet's model inventory, since a job whose
    /// model no node has is refused).
    pub model_load_seconds: GaugeVec,
    /// Prompts posted to the node, by `node`.
    pub node_dispatches: IntCounterVec,

    /// Node events relayed to jobs, by event `type`.
    pub relay_events: IntCounterVec,
    /// Watch streams open now.
    pub relay_watchers: IntGauge,

    /// gRPC requests, by `method` and status `code`.
    pub grpc_requests: IntCounterVec,
    /// gRPC request latency (until the response headers for streams), by `method`.
    pub grpc_request_duration: HistogramVec,
}

impl Metrics {
    /// Creates every family and registers it into `registry`.
    ///
    /// # Errors
    /// Fails when a family of the same name is already registered there.
    pub fn new(registry: Registry) -> prometheus::Result<Self> {
        let counter = |name: &str, help: &str| -> prometheus::Result<IntCounter> {
            let metric = IntCounter::new(name, help)?;
            registry.register(Box::new(metric.clone()))?;
            Ok(metric)
        };
        let counter_vec =
            |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<IntCounterVec> {
                let metric = IntCounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(metric.clone()))?;
                Ok(metric)
            };
        let gauge = |name: &str, help: &str| -> prometheus::Result<IntGauge> {
            let metric = IntGauge::new(name, help)?;
            registry.register(Box::new(metric.clone()))?;
            Ok(metric)
        };
        let gauge_vec =
            |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<IntGaugeVec> {
                let metric = IntGaugeVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(metric.clone()))?;
                Ok(metric)
            };
        let histogram = |name: &str, help: &str| -> prometheus::Result<Histogram> {
            let opts = HistogramOpts::new(name, help).buckets(JOB_SECONDS_BUCKETS.to_vec());
            let metric = Histogram::with_opts(opts)?;
            registry.register(Box::new(metric.clone()))?;
            Ok(metric)
        };
        let histogram_vec =
            |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<HistogramVec> {
                let opts = HistogramOpts::new(name, help).buckets(REQUEST_SECONDS_BUCKETS.to_vec());
                let metric = HistogramVec::new(opts, labels)?;
                registry.register(Box::new(metric.clone()))?;
                Ok(metric)
            };

        let node = &["node"];
        Ok(Self {
            jobs_submitted: counter(
                "comfyfleet_jobs_submitted_total",
                "Jobs accepted at submit.",
            )?,
            jobs_finished: counter_vec(
                "comfyfleet_jobs_finished_total",
                "Jobs that reached a terminal state, by outcome.",
                &["outcome"],
            )?,
            jobs_rejected: counter_vec(
                "comfyfleet_jobs_rejected_total",
                "Submissions refused, by reason: invalid, infeasible, queue_full, idempotency_conflict.",
                &["reason"],
            )?,
            jobs_retried: counter_vec(
                "comfyfleet_jobs_retried_total",
                "Job attempts given up and requeued, by reason.",
                &["reason"],
            )?,
            jobs_queued: gauge(
                "comfyfleet_jobs_queued",
                "Jobs waiting in the coordinator's queue.",
            )?,
            jobs_running: gauge(
                "comfyfleet_jobs_running",
                "Jobs dispatched to a node and not yet finished.",
            )?,
            job_queue_wait: histogram(
                "comfyfleet_job_queue_wait_seconds",
                "Time from submit to first dispatch.",
            )?,
            job_execution: histogram(
                "comfyfleet_job_execution_seconds",
                "Time from dispatch to the end of the attempt that finished the job.",
            )?,
            job_end_to_end: histogram(
                "comfyfleet_job_end_to_end_seconds",
                "Time from submit to the terminal state.",
            )?,
            node_up: gauge_vec(
                "comfyfleet_node_up",
                "1 when the node answers its probes, 0 otherwise.",
                node,
            )?,
            node_health: gauge_vec(
                "comfyfleet_node_health",
                "1 for the node's current health state (up, suspect, down, draining), else 0.",
                &["node", "state"],
            )?,
            node_vram_total: gauge_vec(
                "comfyfleet_node_vram_total_bytes",
                "Total VRAM reported by the node.",
                node,
            )?,
            node_vram_free: gauge_vec(
                "comfyfleet_node_vram_free_bytes",
                "Free VRAM reported by the node.",
                node,
            )?,
            node_queue_running: gauge_vec(
                "comfyfleet_node_queue_running",
                "Prompts running on the node, from its last probe.",
                node,
            )?,
            node_queue_pending: gauge_vec(
                "comfyfleet_node_queue_pending",
                "Prompts pending on the node, from its last probe.",
                node,
            )?,
            node_in_flight: gauge_vec(
                "comfyfleet_node_in_flight_prompts",
                "Prompts of this coordinator that the node holds.",
                node,
            )?,
            node_probe_duration: histogram_vec(
                "comfyfleet_node_probe_duration_seconds",
                "Duration of one probe round of a node.",
                node,
            )?,
            node_probe_failures: counter_vec(
                "comfyfleet_node_probe_failures_total",
                "Probes that failed or timed out.",
                node,
            )?,
            node_websocket_reconnects: counter_vec(
                "comfyfleet_node_websocket_reconnects_total",
                "WebSocket reconnects to the node.",
                node,
            )?,
            node_model_loads: counter_vec(
                "comfyfleet_node_model_loads_total",
                "Checkpoint loads inferred from jobs whose model was not believed resident.",
                node,
            )?,
            model_load_seconds: {
                let metric = GaugeVec::new(
                    Opts::new(
                        "comfyfleet_model_load_seconds",
                        "Learnt time a node takes to load the model, from cold starts.",
                    ),
                    &["model"],
                )?;
                registry.register(Box::new(metric.clone()))?;
                metric
            },
            node_dispatches: counter_vec(
                "comfyfleet_node_dispatches_total",
                "Prompts posted to the node.",
                node,
            )?,
            relay_events: counter_vec(
                "comfyfleet_relay_events_total",
                "Node events relayed to jobs, by type.",
                &["type"],
            )?,
            relay_watchers: gauge("comfyfleet_relay_watchers", "Watch streams open now.")?,
            grpc_requests: counter_vec(
                "comfyfleet_grpc_requests_total",
                "gRPC requests by method and status code.",
                &["method", "code"],
            )?,
            grpc_request_duration: histogram_vec(
                "comfyfleet_grpc_request_duration_seconds",
                "gRPC request latency by method.",
                &["method"],
            )?,
            registry,
        })
    }

    /// Sets the node's health gauges so that exactly `state` reads 1.
    ///
    /// Also creates the node's counters at 0 if they do not exist yet: every node gets a
    /// health the moment it is added, and a counter that only appears with its first increment
    /// makes `rate()` and `increase()` miss that increment and alerts on it never fire.
    pub fn set_node_health(&self, node: &str, state: &str) {
        for counter in [
            &self.node_probe_failures,
            &self.node_websocket_reconnects,
            &self.node_model_loads,
            &self.node_dispatches,
        ] {
            counter.with_label_values(&[node]);
        }
        for candidate in NODE_HEALTH_STATES {
            let value = i64::from(*candidate == state);
            self.node_health
                .with_label_values(&[node, candidate])
                .set(value);
        }
        self.node_up
            .with_label_values(&[node])
            .set(i64::from(state != "down"));
    }

    /// Removes every series labelled with `node`, for a node that left the fleet.
    pub fn forget_node(&self, node: &str) {
        let labels = [node];
        for vec in [
            &self.node_up,
            &self.node_vram_total,
            &self.node_vram_free,
            &self.node_queue_running,
            &self.node_queue_pending,
            &self.node_in_flight,
        ] {
            let _ = vec.remove_label_values(&labels);
        }
        for vec in [
            &self.node_probe_failures,
            &self.node_websocket_reconnects,
            &self.node_model_loads,
            &self.node_dispatches,
        ] {
            let _ = vec.remove_label_values(&labels);
        }
        let _ = self.node_probe_duration.remove_label_values(&labels);
        for state in NODE_HEALTH_STATES {
            let _ = self.node_health.remove_label_values(&[node, state]);
        }
    }

    /// Renders every family in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        // Encoding into a Vec cannot fail for the text format: it only fails on I/O errors
        // or on families without metrics, which the text encoder skips.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8(buffer).unwrap_or_default()
    }

    /// The content type of [`Metrics::render`]'s output.
    pub fn content_type() -> &'static str {
        "text/plain; version=0.0.4; charset=utf-8"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_render_with_help_and_type_lines() {
        let metrics = Metrics::new(Registry::new()).expect("fresh registry");
        metrics.jobs_submitted.inc();
        metrics
            .jobs_finished
            .with_label_values(&["succeeded"])
            .inc();
        metrics.set_node_health("gpu-a", "up");
        let text = metrics.render();
        assert!(text.contains("# HELP comfyfleet_jobs_submitted_total Jobs accepted at submit."));
        assert!(text.contains("# TYPE comfyfleet_jobs_submitted_total counter"));
        assert!(text.contains("comfyfleet_jobs_finished_total{outcome=\"succeeded\"} 1"));
        assert!(text.contains("comfyfleet_node_health{node=\"gpu-a\",state=\"up\"} 1"));
        assert!(text.contains("comfyfleet_node_health{node=\"gpu-a\",state=\"down\"} 0"));
        assert!(text.contains("comfyfleet_node_up{node=\"gpu-a\"} 1"));
    }

    #[test]
    fn a_node_counters_exist_at_zero_once_it_has_a_health() {
        let metrics = Metrics::new(Registry::new()).expect("fresh registry");
        metrics.set_node_health("gpu-a", "suspect");
        let text = metrics.render();
        for family in [
            "comfyfleet_node_probe_failures_total",
            "comfyfleet_node_websocket_reconnects_total",
            "comfyfleet_node_model_loads_total",
            "comfyfleet_node_dispatches_total",
        ] {
            assert!(
                text.contains(&format!("{family}{{node=\"gpu-a\"}} 0")),
                "{family} missing in {text}"
            );
        }
        metrics.node_dispatches.with_label_values(&["gpu-a"]).inc();
        metrics.set_node_health("gpu-a", "up");
        assert_eq!(
            metrics.node_dispatches.with_label_values(&["gpu-a"]).get(),
            1,
            "a later health change keeps the count"
        );
    }

    #[test]
    fn health_switch_leaves_exactly_one_state_set() {
        let metrics = Metrics::new(Registry::new()).expect("fresh registry");
        metrics.set_node_health("n", "up");
        metrics.set_node_health("n", "down");
        let set: Vec<_> = NODE_HEALTH_STATES
            .iter()
            .filter(|state| metrics.node_health.with_label_values(&["n", state]).get() == 1)
            .collect();
        assert_eq!(set, vec![&"down"], "only the latest state may read 1");
        assert_eq!(metrics.node_up.with_label_values(&["n"]).get(), 0);
    }

    #[test]
    fn forgetting_a_node_drops_its_series() {
        let metrics = Metrics::new(Registry::new()).expect("fresh registry");
        metrics.set_node_health("gone", "up");
        metrics.node_dispatches.with_label_values(&["gone"]).inc();
        metrics.forget_node("gone");
        assert!(
            !metrics.render().contains("node=\"gone\""),
            "no series of a removed node"
        );
    }

    #[test]
    fn registering_twice_in_one_registry_fails() {
        let registry = Registry::new();
        let _first = Metrics::new(registry.clone()).expect("fresh registry");
        assert!(
            Metrics::new(registry).is_err(),
            "duplicate families must be refused"
        );
    }
}
