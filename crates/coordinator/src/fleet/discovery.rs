//! Nodes found in DNS: the pods behind a Kubernetes headless Service, or any name with
//! several addresses.
//!
//! A static node list is wrong the moment a StatefulSet scales or a pod is rescheduled to a
//! new address. A headless Service already publishes the ready pods as the A/AAAA records of
//! one name, so each DNS source re-resolves its host every interval (through the system
//! resolver, as any process in the pod would) and reconciles the fleet with the answer:
//!
//! - an address that appears becomes a node named `<source>-<address>` (dots and colons as
//!   dashes), with the source's labels; its actor probes it and it takes jobs once up;
//! - an address that disappears is drained at once (no new jobs) and marked leaving;
//! - a leaving node is removed once it holds none of our prompts. If the pod is really gone
//!   its probes fail, the node-down grace passes and the existing node-lost path requeues its
//!   prompts, which empties it; if it is only unready it finishes its work first;
//! - an address that comes back before its node left is restored.
//!
//! The decision is the pure function [`plan`], so it is tested without sockets or DNS; the
//! resolver sits behind the [`Resolver`] trait so tests can change the answer.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use comfy_api::{ClientConfig, NodeClient};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, info, info_span, warn};

use super::actor::{self, ActorContext, Signal};
use super::{Fleet, Node, NodeSpec};
use crate::config::DnsSourceConfig;

/// Longest wait for one resolution before the round is skipped.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a resolution yields: the addresses of a host, or why there are none.
pub type ResolveFuture<'a> =
    Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send + 'a>>;

/// Turns a host name into addresses.
pub trait Resolver: fmt::Debug + Send + Sync {
    /// Every address `host` resolves to now (`port` is passed through to the system
    /// resolver, which some implementations need).
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> ResolveFuture<'a>;
}

/// The system resolver (`getaddrinfo` through tokio): follows `/etc/resolv.conf` and its
/// search domains, as any program in the pod would. An IP literal resolves to itself.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> ResolveFuture<'a> {
        Box::pin(async move {
            let addresses = tokio::net::lookup_host((host, port)).await?;
            Ok(addresses.map(|address| address.ip()).collect())
        })
    }
}

/// What [`plan`] needs to know about a node a source already added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberState {
    /// Its address left the answer at an earlier round; it takes no new jobs.
    pub leaving: bool,
    /// It holds none of our prompts.
    pub idle: bool,
}

/// One step of reconciling a source's nodes with its latest answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    /// A new address: add a node for it.
    Add(IpAddr),
    /// The address is gone: drain its node.
    Drain(IpAddr),
    /// The address is back while its node was leaving: take jobs again.
    Restore(IpAddr),
    /// The node left the answer earlier and is now idle: remove it.
    Remove(IpAddr),
}

/// Compares a source's nodes with the addresses it resolved to now.
///
/// A node is drained in the round its address disappears and removed at the earliest in the
/// next one, never in the same round: the manager may be dispatching to it from a plan made
/// just before the drain, and a prompt posted then must be seen before the node goes.
pub fn plan(members: &BTreeMap<IpAddr, MemberState>, resolved: &BTreeSet<IpAddr>) -> Vec<Change> {
    let mut changes: Vec<Change> = resolved
        .iter()
        .filter(|address| !members.contains_key(address))
        .map(|&address| Change::Add(address))
        .collect();
    for (&address, state) in members {
        let present = resolved.contains(&address);
        match (present, state.leaving, state.idle) {
            (true, true, _) => changes.push(Change::Restore(address)),
            (true, false, _) => {}
            (false, false, _) => changes.push(Change::Drain(address)),
            (false, true, true) => changes.push(Change::Remove(address)),
            (false, true, false) => {}
        }
    }
    changes
}

/// The fleet name of the node at `address` found by `source`: `comfyui-10-0-3-7`.
pub fn node_name(source: &str, address: IpAddr) -> String {
    let address: String = address
        .to_string()
        .chars()
        .map(|c| if c == '.' || c == ':' { '-' } else { c })
        .collect();
    format!("{source}-{address}")
}

/// Builds node records the same way for configured and discovered nodes.
#[derive(Debug, Clone)]
pub struct NodeFactory {
    /// The coordinator's stable id, part of every WebSocket client id.
    pub coordinator_id: String,
    /// Our prompts one node may hold.
    pub slots_per_node: u32,
}

impl NodeFactory {
    /// A node record for `spec`; nothing is probed until its actor starts.
    pub fn build(&self, spec: NodeSpec) -> Result<Node, comfy_api::Error> {
        let client_config = ClientConfig {
            // History reads and image transfers of large outputs can be slow.
            request_timeout: Duration::from_secs(60),
            ..ClientConfig::default()
        };
        let client = NodeClient::new(spec.name.clone(), spec.url.as_str(), client_config)?;
        // One session id per coordinator and node, stable across restarts, so a restarted
        // coordinator receives the events of prompts it posted before.
        let client_id = format!("comfyfleet-{}-{}", self.coordinator_id, spec.name);
        Ok(Node::new(spec, client, client_id, self.slots_per_node))
    }
}

/// What the discovery tasks share with the rest of the coordinator.
#[derive(Clone)]
pub struct DiscoveryDeps {
    /// The fleet nodes are added to and removed from.
    pub fleet: Arc<Fleet>,
    /// Builds node records.
    pub factory: NodeFactory,
    /// The actor context for new nodes; each node gets its own stop signal in place of
    /// `shutdown_rx`.
    pub actor: ActorContext,
    /// Where addresses come from.
    pub resolver: Arc<dyn Resolver>,
}

/// Resolves every source once and adds what it finds, then starts one task per source for
/// the later rounds; each stops when `shutdown_rx` fires or the task is dropped, and its
/// nodes' actors stop with it.
///
/// The first round is awaited so that jobs recovered from the journal find the discovered
/// node they were running on, instead of being retried elsewhere while still running there.
pub async fn start(
    sources: &[DnsSourceConfig],
    deps: &DiscoveryDeps,
    shutdown_rx: &watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    for source in sources {
        let span = info_span!("discovery", source = %source.name, host = %source.host);
        let mut state = SourceState::default();
        round(source, deps, &mut state)
            .instrument(span.clone())
            .await;
        tasks.push(tokio::spawn(
            run_source(source.clone(), deps.clone(), shutdown_rx.clone(), state).instrument(span),
        ));
    }
    tasks
}

/// A node a source added.
struct Member {
    node: Arc<Node>,
    /// Stops the node's actor (also when dropped).
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// What one source task remembers between rounds.
#[derive(Default)]
struct SourceState {
    members: BTreeMap<IpAddr, Member>,
    /// Addresses whose node name is taken by a configured node; warned about once.
    refused: BTreeSet<IpAddr>,
    /// Whether the last resolution failed, so a failure streak is logged once.
    failing: bool,
}

async fn run_source(
    source: DnsSourceConfig,
    deps: DiscoveryDeps,
    mut shutdown_rx: watch::Receiver<bool>,
    mut state: SourceState,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(source.interval) => {}
            _ = shutdown_rx.changed() => return,
        }
        round(&source, &deps, &mut state).await;
    }
}

/// One resolution of `source` and what follows from it.
async fn round(source: &DnsSourceConfig, deps: &DiscoveryDeps, state: &mut SourceState) {
    let resolved = tokio::time::timeout(
        RESOLVE_TIMEOUT,
        deps.resolver.resolve(&source.host, source.port),
    )
    .await;
    match resolved {
        Ok(Ok(addresses)) => {
            if state.failing {
                info!(num_addresses = addresses.len(), "host resolves again");
                state.failing = false;
            }
            sweep(source, deps, state, addresses.into_iter().collect());
        }
        // NOTE: a failed resolution keeps the nodes of the last answer. A host that stops
        // existing (all pods gone; some DNS servers then answer NXDOMAIN) thus keeps its nodes
        // listed, down, until it resolves again; their prompts still go back to the queue
        // through the node-down grace.
        Ok(Err(error)) => {
            if !state.failing {
                warn!(%error, "cannot resolve the host; keeping the nodes found before");
            }
            state.failing = true;
        }
        Err(_) => {
            if !state.failing {
                warn!(
                    timeout = ?RESOLVE_TIMEOUT,
                    "resolving the host timed out; keeping the nodes found before"
                );
            }
            state.failing = true;
        }
    }
}

/// Applies one answer of `source` to the fleet.
fn sweep(
    source: &DnsSourceConfig,
    deps: &DiscoveryDeps,
    state: &mut SourceState,
    resolved: BTreeSet<IpAddr>,
) {
    state.refused.retain(|address| resolved.contains(address));
    let members: BTreeMap<IpAddr, MemberState> = state
        .members
        .iter()
        .map(|(&address, member)| {
            let leaving = member.node.status().leaving;
            let idle = member.node.prompts.is_empty();
            (address, MemberState { leaving, idle })
        })
        .collect();
    let candidates: BTreeSet<IpAddr> = resolved
        .iter()
        .filter(|address| !state.refused.contains(address))
        .copied()
        .collect();
    let changes = plan(&members, &candidates);
    if changes.is_empty() {
        debug!(
            num_addresses = resolved.len(),
            "no change in the host's addresses"
        );
        return;
    }
    for change in changes {
        match change {
            Change::Add(address) => add(source, deps, state, address),
            Change::Drain(address) => set_leaving(deps, state, address, true),
            Change::Restore(address) => set_leaving(deps, state, address, false),
            Change::Remove(address) => remove(deps, state, address),
        }
    }
    // Placement depends on the node set: plan again with it.
    let _ = deps.actor.signals_tx.send(Signal::Wake);
}

fn add(source: &DnsSourceConfig, deps: &DiscoveryDeps, state: &mut SourceState, address: IpAddr) {
    let name = node_name(&source.name, address);
    let spec = NodeSpec {
        name: name.clone(),
        url: format!(
            "{}://{}",
            source.scheme,
            SocketAddr::new(address, source.port)
        ),
        labels: source.labels.clone(),
        simulated: false,
    };
    let url = spec.url.clone();
    let node = match deps.factory.build(spec) {
        Ok(node) => Arc::new(node),
        Err(error) => {
            warn!(node = %name, %address, %error, "cannot make a client for the found address");
            state.refused.insert(address);
            return;
        }
    };
    if !deps.fleet.insert(node.clone()) {
        warn!(
            node = %name,
            %address,
            "a configured node already has this name; the found address is ignored"
        );
        state.refused.insert(address);
        return;
    }
    let (stop, stop_rx) = watch::channel(false);
    let context = ActorContext {
        shutdown_rx: stop_rx,
        ..deps.actor.clone()
    };
    let health = node.status().operator_health();
    deps.actor.metrics.set_node_health(&name, health.as_str());
    let tasks = actor::spawn(node.clone(), context);
    info!(node = %name, %address, %url, "address found; node added to the fleet");
    state.members.insert(address, Member { node, stop, tasks });
}

fn set_leaving(deps: &DiscoveryDeps, state: &SourceState, address: IpAddr, leaving: bool) {
    let Some(member) = state.members.get(&address) else {
        return;
    };
    let name = &member.node.spec.name;
    let health = {
        let mut status = member.node.status();
        status.leaving = leaving;
        status.operator_health()
    };
    deps.actor.metrics.set_node_health(name, health.as_str());
    if leaving {
        info!(
            node = %name,
            %address,
            num_prompts = member.node.prompts.len(),
            "address no longer resolves; node draining before it leaves"
        );
    } else {
        info!(node = %name, %address, "address resolves again; node kept");
    }
}

fn remove(deps: &DiscoveryDeps, state: &mut SourceState, address: IpAddr) {
    let Some(member) = state.members.remove(&address) else {
        return;
    };
    let name = member.node.spec.name.clone();
    deps.fleet.remove(&name);
    let _ = member.stop.send(true);
    info!(node = %name, %address, "node removed from the fleet");
    // The actor may be in the middle of a probe that would write its gauges again; forget
    // the node's series only once both loops have ended.
    // NOTE: if the same address returns within that moment (at most a probe timeout), the new
    // node's gauges are cleared too and its counters restart; the gauges come back with its
    // next probe, its health series within 30 s (the actor rewrites them only on a change or
    // after that long).
    let metrics = deps.actor.metrics.clone();
    tokio::spawn(async move {
        for task in member.tasks {
            let _ = task.await;
        }
        metrics.forget_node(&name);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    fn member(leaving: bool, idle: bool) -> MemberState {
        MemberState { leaving, idle }
    }

    fn sorted(mut changes: Vec<Change>) -> Vec<Change> {
        changes.sort();
        changes
    }

    #[test]
    fn new_addresses_are_added_and_known_ones_left_alone() {
        let members = BTreeMap::from([(ip(1), member(false, false))]);
        let resolved = BTreeSet::from([ip(1), ip(2), ip(3)]);
        assert_eq!(
            sorted(plan(&members, &resolved)),
            vec![Change::Add(ip(2)), Change::Add(ip(3))]
        );
    }

    #[test]
    fn a_vanished_address_is_drained_first_even_when_idle() {
        let members = BTreeMap::from([(ip(1), member(false, true)), (ip(2), member(false, false))]);
        let resolved = BTreeSet::from([ip(2)]);
        assert_eq!(plan(&members, &resolved), vec![Change::Drain(ip(1))]);
    }

    #[test]
    fn a_leaving_node_is_removed_only_once_idle() {
        let busy = BTreeMap::from([(ip(1), member(true, false))]);
        assert_eq!(plan(&busy, &BTreeSet::new()), vec![]);
        let idle = BTreeMap::from([(ip(1), member(true, true))]);
        assert_eq!(plan(&idle, &BTreeSet::new()), vec![Change::Remove(ip(1))]);
    }

    #[test]
    fn a_returning_address_restores_its_leaving_node() {
        let members = BTreeMap::from([(ip(1), member(true, false)), (ip(2), member(true, true))]);
        let resolved = BTreeSet::from([ip(1), ip(2)]);
        assert_eq!(
            sorted(plan(&members, &resolved)),
            vec![Change::Restore(ip(1)), Change::Restore(ip(2))]
        );
    }

    #[test]
    fn an_empty_answer_drains_everything_and_adds_nothing() {
        let members = BTreeMap::from([(ip(1), member(false, false)), (ip(2), member(false, true))]);
        assert_eq!(
            sorted(plan(&members, &BTreeSet::new())),
            vec![Change::Drain(ip(1)), Change::Drain(ip(2))]
        );
        assert_eq!(plan(&BTreeMap::new(), &BTreeSet::new()), vec![]);
    }

    #[test]
    fn a_replaced_pod_drains_the_old_address_and_adds_the_new() {
        // A StatefulSet pod rescheduled: same pod name, new address.
        let members = BTreeMap::from([(ip(7), member(false, false))]);
        let resolved = BTreeSet::from([ip(9)]);
        assert_eq!(
            sorted(plan(&members, &resolved)),
            vec![Change::Add(ip(9)), Change::Drain(ip(7))]
        );
    }

    #[test]
    fn node_names_write_address_separators_as_dashes() {
        assert_eq!(node_name("comfyui", ip(7)), "comfyui-10-0-0-7");
        let v6: IpAddr = "fd00::1:2".parse().expect("address");
        assert_eq!(node_name("gpu", v6), "gpu-fd00--1-2");
    }
}
