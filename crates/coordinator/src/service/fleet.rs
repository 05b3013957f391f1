//! `FleetService`: the nodes, and draining them.

use std::sync::Arc;

use fleet_proto::v1 as pb;
use fleet_proto::v1::fleet_service_server::FleetService;
use tonic::{Request, Response, Status};

use crate::fleet::{Fleet, Node, NodeHealth};
use crate::journal::JobStore;
use crate::manager::ManagerHandle;
use crate::metrics::Metrics;

/// The fleet service.
#[derive(Clone)]
pub struct FleetApi {
    fleet: Arc<Fleet>,
    manager: ManagerHandle,
    store: Arc<dyn JobStore>,
    metrics: Metrics,
}

impl FleetApi {
    /// Creates the service; drains are recorded in `store` so they outlive a restart.
    pub fn new(
        fleet: Arc<Fleet>,
        manager: ManagerHandle,
        store: Arc<dyn JobStore>,
        metrics: Metrics,
    ) -> Self {
        Self {
            fleet,
            manager,
            store,
            metrics,
        }
    }

    async fn set_draining(&self, name: &str, draining: bool) -> Result<pb::Node, Status> {
        let node = self.fleet.get(name).ok_or_else(|| {
            Status::not_found(format!("node {:?} is not in the fleet", super::echo(name)))
        })?;
        if !draining && node.status().leaving {
            // Its address is gone from discovery: jobs sent there now would be lost when it
            // leaves, so it stays drained until it leaves or reappears.
            return Err(Status::failed_precondition(format!(
                "node {name}: its address left discovery; it cannot be undrained"
            )));
        }
        // Durable first: an answered drain holds across a restart.
        self.store
            .set_drained(name.to_owned(), draining)
            .await
            .map_err(super::status_of)?;
        let node = self.fleet.set_drained(name, draining).unwrap_or(node);
        let health = node.status().operator_health();
        self.metrics.set_node_health(name, health.as_str());
        tracing::info!(node = name, draining, "drain changed by an operator");
        self.manager.wake();
        Ok(node_message(&node))
    }
}

/// The protobuf view of a node.
pub fn node_message(node: &Node) -> pb::Node {
    let status = node.status().clone();
    let health = match status.operator_health() {
        NodeHealth::Up => pb::NodeHealth::Up,
        NodeHealth::Suspect => pb::NodeHealth::Suspect,
        NodeHealth::Down => pb::NodeHealth::Down,
        NodeHealth::Draining => pb::NodeHealth::Draining,
    };
    pb::Node {
        name: node.spec.name.clone(),
        url: node.spec.url.clone(),
        health: health as i32,
        labels: node.spec.labels.clone().into_iter().collect(),
        gpu_name: status.gpu_name.clone(),
        vram_total: status.vram_total,
        vram_free: status.vram_free,
        queue_running: status.queue_running,
        queue_pending: status.queue_pending,
        in_flight: node.prompts.len() as u32,
        last_model: status.resident.most_recent().unwrap_or_default().to_owned(),
        resident_models: status
            .resident
            .iter()
            .map(|m| m.checkpoint.clone())
            .collect(),
        jobs_done: status.jobs_done,
        jobs_failed: status.jobs_failed,
        last_probe_age: status.last_probe_ok.map(|at| {
            let age = at.elapsed();
            prost_types::Duration {
                seconds: age.as_secs() as i64,
                nanos: age.subsec_nanos() as i32,
            }
        }),
        simulated: node.spec.simulated,
        draining: status.draining,
        last_error: status.last_error.clone().unwrap_or_default(),
    }
}

#[tonic::async_trait]
impl FleetService for FleetApi {
    async fn list_nodes(
        &self,
        _request: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        let started = std::time::Instant::now();
        let nodes = self
            .fleet
            .nodes()
            .iter()
            .map(|node| node_message(node))
            .collect();
        let result = Ok(pb::ListNodesResponse { nodes });
        super::observe(&self.metrics, "ListNodes", started, &result);
        result.map(Response::new)
    }

    async fn drain_node(
        &self,
        request: Request<pb::DrainNodeRequest>,
    ) -> Result<Response<pb::DrainNodeResponse>, Status> {
        let started = std::time::Instant::now();
        let result = self
            .set_draining(&request.into_inner().name, true)
            .await
            .map(|node| pb::DrainNodeResponse { node: Some(node) });
        super::observe(&self.metrics, "DrainNode", started, &result);
        result.map(Response::new)
    }

    async fn undrain_node(
        &self,
        request: Request<pb::UndrainNodeRequest>,
    ) -> Result<Response<pb::UndrainNodeResponse>, Status> {
        let started = std::time::Instant::now();
        let result = self
            .set_draining(&request.into_inner().name, false)
            .await
            .map(|node| pb::UndrainNodeResponse { node: Some(node) });
        super::observe(&self.metrics, "UndrainNode", started, &result);
        result.map(Response::new)
    }
}
