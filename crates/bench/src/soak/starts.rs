//! Counting prompt starts on the nodes from comfy-sim's trace events.
//!
//! A node's own counters die with it when it crashes, but a prompt that started twice is the
//! one thing the soak must never miss; so a tracing layer installed for the whole process
//! counts every "prompt started" event by prompt id, across node incarnations.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// Prompt ids the nodes *started*, with how often: read from comfy-sim's "prompt started"
/// trace events, which survive node crashes (the nodes' own counters do not).
static STARTS: OnceLock<Mutex<HashMap<String, u32>>> = OnceLock::new();

pub(super) fn starts() -> std::sync::MutexGuard<'static, HashMap<String, u32>> {
    STARTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poison| poison.into_inner())
}

struct StartCounter;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for StartCounter {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _context: tracing_subscriber::layer::Context<'_, S>,
    ) {
        #[derive(Default)]
        struct Fields {
            started: bool,
            prompt_id: String,
        }
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                match field.name() {
                    "message" => self.started = format!("{value:?}") == "prompt started",
                    "prompt_id" => self.prompt_id = format!("{value:?}"),
                    _ => {}
                }
            }
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        if fields.started && !fields.prompt_id.is_empty() {
            *starts().entry(fields.prompt_id).or_default() += 1;
        }
    }
}

/// Installs the process-wide subscriber of a soak run: the prompt-start counter on comfy-sim's
/// execution events plus logs on stderr (`COMFYFLEET_BENCH_LOG`, default `warn`). Returns
/// `false` when a subscriber was already installed.
pub fn install_tracing() -> bool {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{EnvFilter, filter::Targets, fmt};
    let logs =
        EnvFilter::try_from_env("COMFYFLEET_BENCH_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    let exec = Targets::new().with_target(bench::probe::SIM_EXEC_TARGET, tracing::Level::DEBUG);
    tracing_subscriber::registry()
        .with(StartCounter.with_filter(exec))
        .with(
            fmt::layer()
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_writer(std::io::stderr)
                .with_filter(logs),
        )
        .try_init()
        .is_ok()
}
