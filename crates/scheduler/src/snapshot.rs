//! The input of one placement round: queued jobs in queue order and the nodes of the fleet.
//!
//! Policies must not depend on the order in which the coordinator happened to collect its maps,
//! so the snapshot puts nodes in name order and jobs in queue order itself, and rejects
//! duplicates that would let one job be placed twice. Queue order is where priorities and
//! fairness live (the policy only picks nodes): higher priority first, then either plain
//! arrival order or a fair share that interleaves tenants within a priority.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::error::SchedulerError;
use crate::view::{JobView, NodeView};

/// How queued jobs of equal priority are ordered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueOrder {
    /// First come, first served within a priority.
    #[default]
    Arrival,
    /// Within a priority, tenants take turns: each tenant's oldest job first, then each
    /// tenant's second oldest, and so on (ties in arrival order). One tenant's burst cannot
    /// hold everyone else back.
    FairShare,
}

/// Jobs and nodes for one placement round, validated and ordered.
#[derive(Debug, Clone)]
pub struct Snapshot {
    jobs: Vec<JobView>,
    nodes: Vec<NodeView>,
}

impl Snapshot {
    /// Builds a snapshot, sorting nodes by name and jobs into `order`.
    ///
    /// # Errors
    /// [`SchedulerError::DuplicateNode`] or [`SchedulerError::DuplicateJob`] when a name or id
    /// appears twice.
    pub fn new(
        mut jobs: Vec<JobView>,
        mut nodes: Vec<NodeView>,
        order: QueueOrder,
    ) -> Result<Self, SchedulerError> {
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        if let Some(pair) = nodes.windows(2).find(|w| w[0].id == w[1].id) {
            return Err(SchedulerError::DuplicateNode(pair[0].id.clone()));
        }
        let mut seen = HashSet::with_capacity(jobs.len());
        if let Some(dup) = jobs.iter().find(|j| !seen.insert(&j.id)) {
            return Err(SchedulerError::DuplicateJob(dup.id.clone()));
        }
        sort_queue(&mut jobs, order);
        Ok(Self { jobs, nodes })
    }

    /// Returns the queued jobs in queue order (the first is placed first).
    pub fn jobs(&self) -> &[JobView] {
        &self.jobs
    }

    /// Returns the nodes in name order.
    pub fn nodes(&self) -> &[NodeView] {
        &self.nodes
    }
}

/// Sorts jobs into queue order: priority (higher first), then by `order`, then id so that the
/// result never depends on the input order.
fn sort_queue(jobs: &mut Vec<JobView>, order: QueueOrder) {
    match order {
        QueueOrder::Arrival => jobs.sort_by(|a, b| {
            b.priority
                .cmp(&a.priority)
                .then(a.arrival.cmp(&b.arrival))
                .then_with(|| a.id.cmp(&b.id))
        }),
        QueueOrder::FairShare => {
            // Rank of each job within its tenant and priority, by arrival.
            jobs.sort_by(|a, b| a.arrival.cmp(&b.arrival).then_with(|| a.id.cmp(&b.id)));
            let mut next_rank: HashMap<(&str, i32), u64> = HashMap::new();
            let ranks: Vec<u64> = jobs
                .iter()
                .map(|j| {
                    let rank = next_rank
                        .entry((j.tenant.as_str(), j.priority))
                        .or_default();
                    *rank += 1;
                    *rank
                })
                .collect();
            // Move the jobs (no clones) next to their rank, sort, move back.
            let mut keyed: Vec<(u64, JobView)> =
                ranks.into_iter().zip(std::mem::take(jobs)).collect();
            keyed.sort_by(|(ra, a), (rb, b)| {
                b.priority
                    .cmp(&a.priority)
                    .then(ra.cmp(rb))
                    .then(a.arrival.cmp(&b.arrival))
                    .then_with(|| a.id.cmp(&b.id))
            });
            jobs.extend(keyed.into_iter().map(|(_, job)| job));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job_for_test(id: &str, tenant: &str, priority: i32, arrival: u64) -> JobView {
        let mut job = JobView::new(id, arrival);
        job.tenant = tenant.to_owned();
        job.priority = priority;
        job
    }

    fn ids(snapshot: &Snapshot) -> Vec<&str> {
        snapshot.jobs().iter().map(|j| j.id.0.as_str()).collect()
    }

    #[test]
    fn higher_priority_first_then_arrival() {
        let jobs = vec![
            job_for_test("late-low", "t", 0, 5),
            job_for_test("early-low", "t", 0, 1),
            job_for_test("late-high", "t", 5, 9),
        ];
        let snapshot = Snapshot::new(jobs, vec![], QueueOrder::Arrival).expect("valid snapshot");
        assert_eq!(ids(&snapshot), ["late-high", "early-low", "late-low"]);
    }

    #[test]
    fn fair_share_interleaves_tenants_within_a_priority() {
        let jobs = vec![
            job_for_test("a1", "a", 0, 1),
            job_for_test("a2", "a", 0, 2),
            job_for_test("a3", "a", 0, 3),
            job_for_test("b1", "b", 0, 4),
            job_for_test("b2", "b", 0, 5),
            job_for_test("urgent", "a", 1, 6),
        ];
        let snapshot = Snapshot::new(jobs, vec![], QueueOrder::FairShare).expect("valid snapshot");
        assert_eq!(ids(&snapshot), ["urgent", "a1", "b1", "a2", "b2", "a3"]);
    }

    #[test]
    fn nodes_are_sorted_and_duplicates_rejected() {
        let nodes = vec![NodeView::new("b"), NodeView::new("a")];
        let snapshot = Snapshot::new(vec![], nodes, QueueOrder::Arrival).expect("valid snapshot");
        assert_eq!(snapshot.nodes()[0].id.0, "a");

        let err = Snapshot::new(
            vec![],
            vec![NodeView::new("x"), NodeView::new("x")],
            QueueOrder::Arrival,
        )
        .expect_err("two nodes named x");
        assert_eq!(
            err.to_string(),
            "node x: listed twice in the placement snapshot"
        );
        let err = Snapshot::new(
            vec![JobView::new("j", 1), JobView::new("j", 2)],
            vec![],
            QueueOrder::Arrival,
        )
        .expect_err("two jobs with id j");
        assert_eq!(err, SchedulerError::DuplicateJob("j".into()));
    }
}
