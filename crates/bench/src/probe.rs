//! Node-side timestamps, read from the simulated nodes' own trace events.
//!
//! Dispatch overhead and relay latency are about instants the client cannot see: when a node
//! starts a prompt, when it loads a model. comfy-sim already emits `debug` trace events at
//! those instants ("prompt started", "prompt finished", "model loaded", with `node`,
//! `prompt_id` and `model` fields). The node, the coordinator and the benchmark client all run
//! in this one process, so a [`tracing_subscriber::Layer`] that stamps those events with
//! [`Instant::now`] gives node-side times on the same monotonic clock the client uses, with
//! no change to the emulator and no clock skew.
//!
//! NOTE: the stamps are taken when the event is emitted, which for "prompt started" is a few
//! microseconds after the node's worker took the prompt from its queue and just before it
//! sends `execution_start`; for an idle node that is also within microseconds of the
//! `POST /prompt` being accepted. On a busy node it includes the node-side queue wait.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// The trace target (module path prefix) of comfy-sim's execution worker.
pub const SIM_EXEC_TARGET: &str = "comfy_sim::exec";

/// One model load a node performed.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelLoad {
    /// The node.
    pub node: String,
    /// The model file.
    pub model: String,
    /// When it was loaded.
    pub at: Instant,
}

/// One node-side instant of a prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct Stamp {
    /// The node that emitted it.
    pub node: String,
    /// When.
    pub at: Instant,
}

/// What the probe has seen since it was last drained.
#[derive(Debug, Default, Clone)]
pub struct Observed {
    /// Prompt id → when and where the node started it.
    pub started: HashMap<String, Stamp>,
    /// Prompt id → when and where the node finished it.
    pub finished: HashMap<String, Stamp>,
    /// Model loads in order.
    pub loads: Vec<ModelLoad>,
}

/// The shared record the layer writes into; cheap to clone.
#[derive(Debug, Default, Clone)]
pub struct Probe {
    inner: Arc<Mutex<Observed>>,
}

impl Probe {
    /// A fresh, empty probe.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes everything recorded so far, leaving the probe empty (one run's worth).
    pub fn drain(&self) -> Observed {
        std::mem::take(&mut *self.lock())
    }

    /// A copy of what was recorded so far.
    pub fn peek(&self) -> Observed {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Observed> {
        // A panic while holding the lock leaves plain maps behind; they are still usable.
        self.inner
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// The layer feeding this probe; install it in the process's subscriber.
    pub fn layer(&self) -> ProbeLayer {
        ProbeLayer {
            probe: self.clone(),
        }
    }
}

/// The [`Layer`] that stamps comfy-sim's execution events.
#[derive(Debug, Clone)]
pub struct ProbeLayer {
    probe: Probe,
}

#[derive(Default)]
struct Fields {
    message: String,
    node: String,
    prompt_id: String,
    model: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.set(field, value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.set(field, format!("{value:?}"));
    }
}

impl Fields {
    fn set(&mut self, field: &Field, value: String) {
        match field.name() {
            "message" => self.message = value,
            "node" => self.node = value,
            "prompt_id" => self.prompt_id = value,
            "model" => self.model = value,
            _ => {}
        }
    }
}

impl<S: Subscriber> Layer<S> for ProbeLayer {
    fn on_event(&self, event: &Event<'_>, _context: Context<'_, S>) {
        // The execution worker may be split into submodules (`comfy_sim::exec::gpu`, ...).
        if !event.metadata().target().starts_with(SIM_EXEC_TARGET) {
            return;
        }
        let at = Instant::now();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut observed = self.probe.lock();
        match fields.message.as_str() {
            "prompt started" => {
                let stamp = Stamp {
                    node: fields.node,
                    at,
                };
                observed.started.insert(fields.prompt_id, stamp);
            }
            "prompt finished" => {
                let stamp = Stamp {
                    node: fields.node,
                    at,
                };
                observed.finished.insert(fields.prompt_id, stamp);
            }
            "model loaded" => observed.loads.push(ModelLoad {
                node: fields.node,
                model: fields.model,
                at,
            }),
            _ => {}
        }
    }
}

/// Installs the process-wide subscriber: the probe (comfy-sim execution events at `debug`)
/// plus human-readable logs on stderr filtered by `COMFYFLEET_BENCH_LOG` (default `warn`).
///
/// Returns `false` when a subscriber was already installed (then the probe sees nothing).
pub fn install(probe: &Probe) -> bool {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{EnvFilter, filter::Targets, fmt};

    let logs =
        EnvFilter::try_from_env("COMFYFLEET_BENCH_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    let probe_filter = Targets::new().with_target(SIM_EXEC_TARGET, tracing::Level::DEBUG);
    tracing_subscriber::registry()
        .with(probe.layer().with_filter(probe_filter))
        .with(
            fmt::layer()
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_writer(std::io::stderr)
                .with_filter(logs),
        )
        .try_init()
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::prelude::*;

    #[test]
    fn records_only_simulator_execution_events() {
        let probe = Probe::new();
        let subscriber = tracing_subscriber::registry().with(probe.layer());
        tracing::subscriber::with_default(subscriber, || {
            tracing::debug!(target: "comfy_sim::exec", node = %"gpu-1", prompt_id = %"p-1", "prompt started");
            tracing::debug!(target: "comfy_sim::exec::models", node = %"gpu-1", model = %"a.safetensors", evicted = ?Vec::<String>::new(), "model loaded");
            tracing::debug!(target: "comfy_sim::exec", node = %"gpu-1", prompt_id = %"p-1", status = "success", "prompt finished");
            tracing::debug!(target: "elsewhere", prompt_id = %"p-2", "prompt started");
        });
        let observed = probe.drain();
        assert_eq!(observed.started.keys().collect::<Vec<_>>(), vec!["p-1"]);
        assert!(observed.finished["p-1"].at >= observed.started["p-1"].at);
        assert_eq!(observed.started["p-1"].node, "gpu-1");
        assert_eq!(observed.loads.len(), 1);
        assert_eq!(observed.loads[0].node, "gpu-1");
        assert_eq!(observed.loads[0].model, "a.safetensors");
        assert!(probe.peek().started.is_empty(), "drain empties the probe");
    }
}
