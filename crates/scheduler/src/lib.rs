//! Placement policy for comfyfleet: which queued job runs on which ComfyUI node.
//!
//! Jobs wait in the coordinator and are bound to a node as late as possible. Each time a node
//! frees a slot (or on a timer), the coordinator copies what placement needs into a
//! [`Snapshot`] of [`JobView`]s and [`NodeView`]s and asks a [`Policy`] for a [`Plan`]. This
//! crate does no I/O, reads no clock and draws randomness only from the RNG passed in, so a
//! plan is a pure function of its inputs and every policy can be compared on the same trace.
//!
//! - [`view`]: the plain data placement reads ([`NodeView`], [`JobView`]).
//! - [`eligibility`]: the filters (down, draining, labels, node classes, model files, GPU size).
//! - [`feasibility()`]: whether any node could ever run a job, and what is missing if none can.
//! - [`Snapshot`]: validated input with nodes in name order and jobs in queue order
//!   (priority, then arrival or fair share across tenants, see [`QueueOrder`]).
//! - [`greedy_plan`]: the shared queue walk that enforces slots, eligibility, no double
//!   placement and no head-of-line blocking.
//! - [`policy`]: [`LeastLoaded`] (default), [`RoundRobin`], [`Random`],
//!   [`LeastLoadedAffinity`] and [`ExpectedFinish`], selectable through [`PolicyConfig`].
//!
//! Typical round:
//!
//! ```
//! use rand::{SeedableRng, rngs::StdRng};
//! use scheduler::{JobView, LeastLoaded, NodeView, Policy, QueueOrder, Snapshot};
//!
//! let nodes = vec![NodeView::new("gpu-1"), NodeView::new("gpu-2")];
//! let jobs = vec![JobView::new("job-1", 1), JobView::new("job-2", 2)];
//! let snapshot = Snapshot::new(jobs, nodes, QueueOrder::Arrival)?;
//! let mut rng = StdRng::seed_from_u64(42);
//! let plan = LeastLoaded.plan(&snapshot, &mut rng);
//! assert_eq!(plan.assignments.len(), 2);
//! assert_ne!(plan.assignments[0].node, plan.assignments[1].node);
//! # Ok::<(), scheduler::SchedulerError>(())
//! ```

pub mod eligibility;
mod error;
mod feasibility;
mod plan;
pub mod policy;
mod resident;
mod snapshot;
pub mod view;

pub use error::SchedulerError;
pub use feasibility::{Feasibility, Infeasibility, feasibility};
pub use plan::{Assignment, Plan, Round, greedy_plan};
pub use policy::{
    ExpectedFinish, ExpectedFinishConfig, LeastLoaded, LeastLoadedAffinity, Policy, PolicyConfig,
    PolicyKind, Random, RoundRobin, UnknownPolicy, build_policy,
};
pub use snapshot::{QueueOrder, Snapshot};
pub use view::{
    DEFAULT_SLOT_LIMIT, DEFAULT_SPEED, Health, JobId, JobView, MAX_RESIDENT, ModelFile, NodeId,
    NodeView, Resident, ResidentSet, Touch,
};
