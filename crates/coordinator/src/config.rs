//! The coordinator's configuration.
//!
//! Operators should be able to start the coordinator with no file at all on a laptop, and tune
//! any timeout or limit without reading code. So every key has a default that works locally and
//! is documented on its field; a TOML file overrides the defaults; `COMFYFLEET_*` environment
//! variables override the file; [`Config::validate`] reports every problem at once.
//!
//! # Environment variables
//!
//! Each key maps to `COMFYFLEET_` + its path in upper case, sections and keys joined by `_`:
//! `grpc_listen` is `COMFYFLEET_GRPC_LISTEN`, `[probe] interval` is
//! `COMFYFLEET_PROBE_INTERVAL`, `[limits] max_workflow_bytes` is
//! `COMFYFLEET_LIMITS_MAX_WORKFLOW_BYTES`. Values are written as in TOML without quotes
//! (`COMFYFLEET_PROBE_INTERVAL=500ms`). The node list is `COMFYFLEET_NODES` as comma-separated
//! `name=url` pairs (labels need the file); it replaces the file's list. Likewise the DNS
//! sources are `COMFYFLEET_DISCOVERY_SOURCES` as comma-separated `name=host:port` pairs (the
//! other keys of a source take their defaults; empty or `[]` means none); they replace the
//! file's sources. The mapping is derived from the structure itself, so every key has its
//! variable.
//!
//! Durations are humantime strings: `"1s"`, `"500ms"`, `"7days"`, `"1h 30m"`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

use crate::job::Labels;

/// The prefix of every environment variable the configuration reads.
pub const ENV_PREFIX: &str = "COMFYFLEET_";

/// The whole coordinator configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address of the gRPC API. Default `127.0.0.1:50051`.
    pub grpc_listen: SocketAddr,
    /// Address of the HTTP surface (metrics, health, ComfyUI facade). Default `127.0.0.1:8188`.
    pub http_listen: SocketAddr,
    /// Directory holding the job journal. Default `comfyfleet-data` (relative to the working
    /// directory).
    pub data_dir: PathBuf,
    /// Log output format. Default `text`.
    pub log_format: LogFormat,
    /// How long finished jobs stay in the journal. Default `7days`.
    #[serde(with = "duration_text")]
    pub retention: Duration,
    /// The ComfyUI nodes of the fleet (`[[nodes]]`). Default none.
    pub nodes: Vec<NodeConfig>,
    /// Nodes found in DNS, beside the static list.
    pub discovery: DiscoveryConfig,
    /// Node health probing.
    pub probe: ProbeConfig,
    /// Node WebSocket connections.
    pub websocket: WebSocketConfig,
    /// Dispatching jobs to nodes.
    pub dispatch: DispatchConfig,
    /// Per-job event logs.
    pub events: EventsConfig,
    /// Admission limits.
    pub limits: LimitsConfig,
    /// The placement policy and its settings (`[placement]`, `[placement.expected_finish]`).
    /// Default expected-finish. The `--policy` flag of `serve` and `up` overrides `kind`.
    pub placement: scheduler::PolicyConfig,
}

/// One ComfyUI node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Unique name used in logs, metrics and job records, e.g. `gpu-1`. Required.
    pub name: String,
    /// Base URL of the node's ComfyUI server, e.g. `http://10.0.0.5:8188`. Required.
    pub url: Url,
    /// Labels jobs can require, e.g. `{ gpu = "a100" }`. Default none.
    #[serde(default)]
    pub labels: Labels,
}

/// Nodes found by resolving host names, e.g. the headless Service of a StatefulSet.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiscoveryConfig {
    /// DNS sources (`[[discovery.sources]]`). Default none.
    pub sources: Vec<DnsSourceConfig>,
}

/// One DNS source: every address its host resolves to is a node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsSourceConfig {
    /// Unique name; a node found here is called `<name>-<address>` with `.` and `:` of the
    /// address written `-`, e.g. `comfyui-10-0-3-7`. Required.
    pub name: String,
    /// Host name to resolve, e.g. `comfyui.gpu.svc.cluster.local`. Required.
    pub host: String,
    /// Port of ComfyUI on every address. Default 8188.
    #[serde(default = "default_comfyui_port")]
    pub port: u16,
    /// `http` or `https`. Default `http`.
    #[serde(default = "default_scheme")]
    pub scheme: String,
    /// Labels of every node found here. Default none.
    #[serde(default)]
    pub labels: Labels,
    /// Time between two resolutions. Default `5s`.
    #[serde(default = "default_discovery_interval", with = "duration_text")]
    pub interval: Duration,
}

fn default_comfyui_port() -> u16 {
    8188
}

fn default_scheme() -> String {
    "http".to_owned()
}

fn default_discovery_interval() -> Duration {
    Duration::from_secs(5)
}

/// Node health probing (`/system_stats`, `/queue`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProbeConfig {
    /// Time between probes of one node. Default `1s`.
    #[serde(with = "duration_text")]
    pub interval: Duration,
    /// Random extra delay added to each interval, up to this much, so probes of many nodes
    /// spread out. Default `100ms`.
    #[serde(with = "duration_text")]
    pub jitter: Duration,
    /// Time a probe may take before it counts as failed. Default `2s`.
    #[serde(with = "duration_text")]
    pub timeout: Duration,
}

/// Node WebSocket connections.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebSocketConfig {
    /// A connection silent for this long is considered dead and reconnected. Default `30s`.
    #[serde(with = "duration_text")]
    pub idle_timeout: Duration,
    /// First delay before reconnecting; doubles per failure. Default `250ms`.
    #[serde(with = "duration_text")]
    pub reconnect_min: Duration,
    /// Largest delay between reconnect attempts. Default `30s`.
    #[serde(with = "duration_text")]
    pub reconnect_max: Duration,
}

/// Dispatching jobs to nodes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DispatchConfig {
    /// Prompts the coordinator keeps on one node at a time (one running plus prefetched).
    /// Default 2.
    pub slots_per_node: u32,
    /// Attempts per job before a retryable failure becomes final. Default 3.
    pub max_attempts: u32,
    /// How long a node may be unreachable before its jobs go back to the queue. Default `10s`.
    #[serde(with = "duration_text")]
    pub node_down_grace: Duration,
    /// A running job with no event for this long is checked against the node's queue and
    /// history (stall watchdog). Default `5m`.
    #[serde(with = "duration_text")]
    pub stall_timeout: Duration,
}

/// Per-job event logs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    /// Events retained per job for resuming watchers. Default 1024.
    pub log_capacity: usize,
    /// How long a finished job's events stay readable. Default `10m`.
    #[serde(with = "duration_text")]
    pub retention: Duration,
}

/// Admission limits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Jobs waiting in the queue, all tenants together. Default 10000.
    pub max_queued_jobs: u64,
    /// Jobs waiting in the queue per tenant. Default 1000.
    pub max_queued_jobs_per_tenant: u64,
    /// Size of one workflow's JSON. Default 8 MiB (8388608).
    pub max_workflow_bytes: u64,
    /// Graph nodes in one workflow. Default 2000.
    pub max_nodes_per_workflow: u64,
    /// Watchers of one job at a time. Default 64.
    pub max_watchers_per_job: usize,
    /// Size of one gRPC message. Default 16 MiB (16777216).
    pub max_grpc_message_bytes: u64,
    /// Size of one HTTP request body. Default 16 MiB (16777216).
    pub max_http_body_bytes: u64,
}

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Errors of loading or checking the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config {path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this structure.
    #[error("config {path}: {message}")]
    Parse {
        /// The file (`<string>` for text).
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// An environment variable could not be applied.
    #[error("environment variable {name}: {message}")]
    Env {
        /// The variable.
        name: String,
        /// Why.
        message: String,
    },
    /// The configuration is well-formed but inconsistent; every problem is listed.
    #[error("config: {}", problems.join("; "))]
    Invalid {
        /// One message per problem.
        problems: Vec<String>,
    },
}

const MIB: u64 = 1024 * 1024;

impl Default for Config {
    fn default() -> Self {
        Self {
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 8188)),
            data_dir: PathBuf::from("comfyfleet-data"),
            log_format: LogFormat::Text,
            retention: Duration::from_secs(7 * 24 * 3600),
            nodes: Vec::new(),
            discovery: DiscoveryConfig::default(),
            probe: ProbeConfig::default(),
            websocket: WebSocketConfig::default(),
            dispatch: DispatchConfig::default(),
            events: EventsConfig::default(),
            limits: LimitsConfig::default(),
            placement: scheduler::PolicyConfig::default(),
        }
    }
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            jitter: Duration::from_millis(100),
            timeout: Duration::from_secs(2),
        }
    }
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(30),
            reconnect_min: Duration::from_millis(250),
            reconnect_max: Duration::from_secs(30),
        }
    }
}

impl Default for DispatchConfig {
    fn default() -> Self {
        Self {
            slots_per_node: 2,
            max_attempts: 3,
            node_down_grace: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(300),
        }
    }
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            log_capacity: 1024,
            retention: Duration::from_secs(600),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_queued_jobs: 10_000,
            max_queued_jobs_per_tenant: 1_000,
            max_workflow_bytes: 8 * MIB,
            max_nodes_per_workflow: 2_000,
            max_watchers_per_job: 64,
            max_grpc_message_bytes: 16 * MIB,
            max_http_body_bytes: 16 * MIB,
        }
    }
}

impl Config {
    /// Loads the configuration: defaults, then the file at `path` if given, then the process
    /// environment; then validates. Returns the environment variables with the prefix that
    /// matched no key, for the caller to warn about.
    pub fn load(path: Option<&Path>) -> Result<(Self, Vec<String>), ConfigError> {
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                Self::from_toml_str(&text, path)?
            }
            None => Self::default(),
        };
        let unknown = config.apply_env(std::env::vars())?;
        config.validate()?;
        Ok((config, unknown))
    }

    /// Parses TOML text; `origin` names it in errors. Missing keys take their defaults;
    /// unknown keys are errors. Does not validate.
    pub fn from_toml_str(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            message: e.to_string(),
        })
    }

    /// Applies `COMFYFLEET_*` overrides from `vars` (see the module docs for the naming).
    /// Variables without the prefix are skipped; those with it that name no key are returned.
    /// Does not validate.
    pub fn apply_env(
        &mut self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Vec<String>, ConfigError> {
        let mut tree = toml::Value::try_from(&*self).map_err(|e| ConfigError::Env {
            name: ENV_PREFIX.to_owned(),
            message: format!("cannot represent the configuration: {e}"),
        })?;
        let mut unknown = Vec::new();
        let mut applied = false;
        for (name, value) in vars {
            let Some(key) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let env_err = |message: String| ConfigError::Env {
                name: name.clone(),
                message,
            };
            if key == "NODES" {
                let nodes = parse_nodes(&value).map_err(env_err)?;
                tree.as_table_mut()
                    .map(|t| t.insert("nodes".into(), nodes))
                    .ok_or_else(|| env_err("configuration is not a table".into()))?;
                applied = true;
                continue;
            }
            if key == "DISCOVERY_SOURCES" {
                let sources = parse_sources(&value).map_err(env_err)?;
                tree.as_table_mut()
                    .and_then(|t| t.get_mut("discovery"))
                    .and_then(toml::Value::as_table_mut)
                    .map(|t| t.insert("sources".into(), sources))
                    .ok_or_else(|| env_err("discovery is not a table".into()))?;
                applied = true;
                continue;
            }
            match find_slot(&mut tree, key) {
                Some(slot) => {
                    *slot = typed_like(slot, &value).map_err(env_err)?;
                    applied = true;
                    // Values kept as text (durations, addresses, URLs) are only checked when
                    // the whole tree is read back; do it now so the error names this variable.
                    if let Err(error) = tree.clone().try_into::<Config>() {
                        return Err(env_err(error.message().to_owned()));
                    }
                }
                None => unknown.push(name.clone()),
            }
        }
        if applied {
            *self = tree
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Env {
                    name: ENV_PREFIX.to_owned(),
                    message: e.to_string(),
                })?;
        }
        Ok(unknown)
    }

    /// Checks the configuration for inconsistencies and reports all of them.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let mut names = HashSet::new();
        for node in &self.nodes {
            if !valid_name(&node.name) {
                problems.push(format!(
                    "node {:?}: name must be non-empty ASCII letters, digits, '-', '_' or '.'",
                    node.name
                ));
            }
            if !names.insert(node.name.as_str()) {
                problems.push(format!("node {}: name used more than once", node.name));
            }
            if !matches!(node.url.scheme(), "http" | "https") {
                problems.push(format!("node {}: url must be http or https", node.name));
            }
            if node.url.host().is_none() {
                problems.push(format!("node {}: url has no host", node.name));
            }
            if node.url.query().is_some() || node.url.fragment().is_some() {
                problems.push(format!(
                    "node {}: url must not have a query or fragment",
                    node.name
                ));
            }
        }
        validate_sources(&self.discovery.sources, &mut problems);

        // Every policy's settings are checked, not only the selected one's: `--policy` may pick
        // another at start.
        for kind in scheduler::PolicyKind::ALL {
            let config = scheduler::PolicyConfig {
                kind,
                ..self.placement.clone()
            };
            if let Err(error) = scheduler::build_policy(&config) {
                problems.push(format!("placement: {error}"));
            }
        }

        let positive = [
            ("retention", self.retention),
            ("probe.interval", self.probe.interval),
            ("probe.timeout", self.probe.timeout),
            ("websocket.idle_timeout", self.websocket.idle_timeout),
            ("websocket.reconnect_min", self.websocket.reconnect_min),
            ("dispatch.stall_timeout", self.dispatch.stall_timeout),
            ("events.retention", self.events.retention),
        ];
        for (key, value) in positive {
            if value.is_zero() {
                problems.push(format!("{key}: must be greater than zero"));
            }
        }
        if self.probe.jitter >= self.probe.interval && !self.probe.interval.is_zero() {
            problems.push("probe.jitter: must be smaller than probe.interval".into());
        }
        if self.websocket.reconnect_min > self.websocket.reconnect_max {
            problems.push("websocket.reconnect_min: must not exceed reconnect_max".into());
        }

        let at_least_one = [
            (
                "dispatch.slots_per_node",
                u64::from(self.dispatch.slots_per_node),
            ),
            (
                "dispatch.max_attempts",
                u64::from(self.dispatch.max_attempts),
            ),
            ("events.log_capacity", self.events.log_capacity as u64),
            ("limits.max_queued_jobs", self.limits.max_queued_jobs),
            (
                "limits.max_queued_jobs_per_tenant",
                self.limits.max_queued_jobs_per_tenant,
            ),
            ("limits.max_workflow_bytes", self.limits.max_workflow_bytes),
            (
                "limits.max_nodes_per_workflow",
                self.limits.max_nodes_per_workflow,
            ),
            (
                "limits.max_watchers_per_job",
                self.limits.max_watchers_per_job as u64,
            ),
            (
                "limits.max_grpc_message_bytes",
                self.limits.max_grpc_message_bytes,
            ),
            (
                "limits.max_http_body_bytes",
                self.limits.max_http_body_bytes,
            ),
        ];
        for (key, value) in at_least_one {
            if value == 0 {
                problems.push(format!("{key}: must be at least 1"));
            }
        }
        if self.limits.max_queued_jobs_per_tenant > self.limits.max_queued_jobs {
            problems
                .push("limits.max_queued_jobs_per_tenant: must not exceed max_queued_jobs".into());
        }
        // A workflow must fit in the request that carries it.
        if self.limits.max_workflow_bytes > self.limits.max_grpc_message_bytes {
            problems
                .push("limits.max_workflow_bytes: must not exceed max_grpc_message_bytes".into());
        }
        if self.grpc_listen == self.http_listen && self.grpc_listen.port() != 0 {
            problems.push(format!(
                "grpc_listen and http_listen: both are {}",
                self.grpc_listen
            ));
        }

        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid { problems })
        }
    }
}

/// Finds the value that `key` (an environment name without the prefix) addresses in `tree`,
/// matching table keys in upper case, joined by `_`.
fn find_slot<'a>(tree: &'a mut toml::Value, key: &str) -> Option<&'a mut toml::Value> {
    let table = tree.as_table_mut()?;
    // Which table key does `key` start with? Prefer an exact match, then the longest prefix.
    let mut candidates: Vec<String> = table
        .keys()
        .filter(|k| {
            let upper = k.to_ascii_uppercase();
            key == upper || key.starts_with(&format!("{upper}_"))
        })
        .cloned()
        .collect();
    candidates.sort_by_key(|k| std::cmp::Reverse(k.len()));
    for name in candidates {
        let rest = &key[name.len()..];
        let is_leaf = rest.is_empty();
        let child = table.get(&name)?;
        // Arrays of tables (nodes) are not addressable one key at a time.
        let descend = !is_leaf && child.is_table();
        if is_leaf && !child.is_table() && !child.is_array() {
            return table.get_mut(&name);
        }
        if descend {
            return find_slot(table.get_mut(&name)?, &rest[1..]);
        }
    }
    None
}

/// Parses `text` as a value of the same TOML type as `current`.
fn typed_like(current: &toml::Value, text: &str) -> Result<toml::Value, String> {
    match current {
        toml::Value::String(_) => Ok(toml::Value::String(text.to_owned())),
        toml::Value::Integer(_) => text
            .trim()
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|e| format!("expected an integer: {e}")),
        toml::Value::Boolean(_) => text
            .trim()
            .parse::<bool>()
            .map(toml::Value::Boolean)
            .map_err(|e| format!("expected true or false: {e}")),
        toml::Value::Float(_) => text
            .trim()
            .parse::<f64>()
            .map(toml::Value::Float)
            .map_err(|e| format!("expected a number: {e}")),
        _ => Err("this key cannot be set from the environment".into()),
    }
}

/// Parses `name=url,name=url` into a TOML array of node tables.
fn parse_nodes(text: &str) -> Result<toml::Value, String> {
    let mut nodes = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, url) = entry
            .split_once('=')
            .ok_or_else(|| format!("node entry {entry:?}: expected name=url"))?;
        let mut table = toml::Table::new();
        table.insert("name".into(), toml::Value::String(name.trim().to_owned()));
        table.insert("url".into(), toml::Value::String(url.trim().to_owned()));
        table.insert("labels".into(), toml::Value::Table(toml::Table::new()));
        nodes.push(toml::Value::Table(table));
    }
    Ok(toml::Value::Array(nodes))
}

/// Whether `name` may name a node or a source: ASCII letters, digits, `-`, `_`, `.`.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn validate_sources(sources: &[DnsSourceConfig], problems: &mut Vec<String>) {
    let mut names = HashSet::new();
    for source in sources {
        let who = format!("discovery source {:?}", source.name);
        if !valid_name(&source.name) {
            problems.push(format!(
                "{who}: name must be non-empty ASCII letters, digits, '-', '_' or '.'"
            ));
        }
        if !names.insert(source.name.as_str()) {
            problems.push(format!("{who}: name used more than once"));
        }
        // The host is put into a URL authority and handed to the resolver as is.
        let host_ok = !source.host.is_empty()
            && source
                .host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
        if !host_ok {
            problems.push(format!(
                "{who}: host must be a DNS name or an IP address, got {:?}",
                source.host
            ));
        }
        if source.port == 0 {
            problems.push(format!("{who}: port must not be 0"));
        }
        if !matches!(source.scheme.as_str(), "http" | "https") {
            problems.push(format!("{who}: scheme must be http or https"));
        }
        if source.interval.is_zero() {
            problems.push(format!("{who}: interval must be greater than zero"));
        }
    }
}

/// Parses `name=host:port,...` into a TOML array of DNS source tables; an empty value or
/// `[]` (as the defaults print) means no sources.
fn parse_sources(text: &str) -> Result<toml::Value, String> {
    let mut sources = Vec::new();
    if text.trim() == "[]" {
        return Ok(toml::Value::Array(sources));
    }
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, address) = entry
            .split_once('=')
            .ok_or_else(|| format!("source entry {entry:?}: expected name=host:port"))?;
        let (host, port) = address
            .trim()
            .rsplit_once(':')
            .ok_or_else(|| format!("source entry {entry:?}: expected name=host:port"))?;
        let port: u16 = port
            .parse()
            .map_err(|e| format!("source entry {entry:?}: port: {e}"))?;
        // An IPv6 literal is written in brackets, as in a URL.
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let mut table = toml::Table::new();
        table.insert("name".into(), toml::Value::String(name.trim().to_owned()));
        table.insert("host".into(), toml::Value::String(host.to_owned()));
        table.insert("port".into(), toml::Value::Integer(i64::from(port)));
        sources.push(toml::Value::Table(table));
    }
    Ok(toml::Value::Array(sources))
}

/// Serde helpers for durations written as humantime strings (`"1s"`, `"500ms"`).
mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*value))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "duration {text:?}: {e} (write e.g. \"1s\", \"500ms\")"
            ))
        })
    }
}

#[cfg(test)]
mod env_tests {
    use super::*;

    #[test]
    fn a_bad_duration_names_its_variable() {
        let mut config = Config::default();
        let vars = [
            ("COMFYFLEET_PROBE_TIMEOUT".to_owned(), "3s".to_owned()),
            ("COMFYFLEET_PROBE_INTERVAL".to_owned(), "abc".to_owned()),
        ];
        let error = config.apply_env(vars).expect_err("not a duration");
        let text = error.to_string();
        assert!(
            text.starts_with("environment variable COMFYFLEET_PROBE_INTERVAL: ")
                && text.contains("abc"),
            "{text}"
        );
        assert_eq!(
            config,
            Config::default(),
            "a failed override changes nothing"
        );
    }

    #[test]
    fn placement_is_read_from_the_file_and_the_environment_and_checked() {
        let text = r#"
            [placement]
            kind = "expected-finish"
            [placement.expected_finish]
            model_load_secs = 8.0
            hold_ratio = 0.9
        "#;
        let mut config = Config::from_toml_str(text, Path::new("<text>")).expect("parses");
        assert_eq!(config.placement.kind, scheduler::PolicyKind::ExpectedFinish);
        assert_eq!(config.placement.expected_finish.model_load_secs, 8.0);
        assert_eq!(
            config.placement.expected_finish.max_holds, 64,
            "unset keys keep defaults"
        );
        config.validate().expect("valid settings");

        let vars = [
            (
                "COMFYFLEET_PLACEMENT_KIND".to_owned(),
                "round-robin".to_owned(),
            ),
            (
                "COMFYFLEET_PLACEMENT_EXPECTED_FINISH_DEMAND_WINDOW".to_owned(),
                "16".to_owned(),
            ),
        ];
        assert!(config.apply_env(vars).expect("applies").is_empty());
        assert_eq!(config.placement.kind, scheduler::PolicyKind::RoundRobin);
        assert_eq!(config.placement.expected_finish.demand_window, 16);

        config.placement.expected_finish.hold_ratio = 2.0;
        let error = config.validate().expect_err("ratio above 1").to_string();
        assert!(
            error.contains("placement") && error.contains("hold_ratio"),
            "{error}"
        );

        let unknown =
            Config::from_toml_str("[placement]\nkind = \"fastest\"\n", Path::new("<text>"))
                .expect_err("no such policy")
                .to_string();
        assert!(unknown.contains("fastest"), "{unknown}");
    }
}
