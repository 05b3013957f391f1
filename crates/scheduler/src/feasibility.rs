//! Feasibility: could any node of the fleet ever run a job, and if not, what is missing?
//!
//! The coordinator asks this at submission and whenever the fleet changes. A job no node could
//! ever run must fail at once with a message naming what is missing, instead of waiting forever
//! in the queue; a job only unavailable nodes could run waits for them. Availability (health,
//! drain, unread inventory) is ignored for the verdict, exactly as
//! [`could_ever_run`](crate::eligibility::could_ever_run) ignores it, so the two never disagree.

use std::collections::BTreeSet;
use std::fmt;

use crate::eligibility::{Ineligibility, could_ever_run, gib, is_available, permanent_reasons};
use crate::view::{JobId, JobView, ModelFile, NodeId, NodeView};

/// The verdict for one job against the whole fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Feasibility {
    /// At least one available node can run the job (whether it has a free slot aside).
    Runnable,
    /// Some nodes could run the job, but none of them is available now (down, suspect,
    /// draining or inventory not read). The job should wait for them.
    OnlyUnavailable {
        /// The nodes that could run it, in name order.
        nodes: Vec<NodeId>,
    },
    /// No node of the fleet could ever run the job.
    Infeasible(Infeasibility),
}

impl Feasibility {
    /// Returns whether some node could ever run the job (runnable now or later).
    pub fn is_feasible(&self) -> bool {
        !matches!(self, Self::Infeasible(_))
    }
}

/// What keeps a job off every node of the fleet. Its [`Display`](fmt::Display) names each
/// missing thing, for the job's failure message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Infeasibility {
    /// The job concerned.
    pub job: JobId,
    /// The fleet has no nodes at all.
    pub no_nodes: bool,
    /// Required labels (key, value) that no node carries.
    pub labels_nowhere: Vec<(String, String)>,
    /// Node classes that no node has.
    pub classes_nowhere: BTreeSet<String>,
    /// Model files that no node has.
    pub models_nowhere: BTreeSet<ModelFile>,
    /// The job's VRAM need and the largest GPU of the fleet, when the need is larger.
    pub vram_short: Option<(u64, u64)>,
    /// The node lacking the fewest things, and what it lacks; this explains jobs whose
    /// requirements each exist somewhere but never together on one node.
    pub closest: Option<(NodeId, Vec<Ineligibility>)>,
}

/// How many items of one kind a message names before it says how many more there are: a
/// workflow of a hundred custom nodes must not turn into a message of kilobytes.
const LISTED: usize = 20;

/// Joins `items` with commas, naming at most [`LISTED`] of them.
fn listed(items: Vec<String>) -> String {
    let total = items.len();
    let mut text = items
        .into_iter()
        .take(LISTED)
        .collect::<Vec<_>>()
        .join(", ");
    if total > LISTED {
        text.push_str(&format!(" and {} more", total - LISTED));
    }
    text
}

impl Infeasibility {
    /// Whether `reason` is already named by the fleet-wide parts of the message.
    fn names_already(&self, reason: &Ineligibility) -> bool {
        match reason {
            Ineligibility::MissingClass(class) => self.classes_nowhere.contains(class),
            Ineligibility::MissingModel(model) => self.models_nowhere.contains(model),
            Ineligibility::LabelMismatch { key, wanted, .. } => self
                .labels_nowhere
                .iter()
                .any(|(k, v)| k == key && v == wanted),
            Ineligibility::GpuTooSmall { .. } => self.vram_short.is_some(),
            _ => false,
        }
    }
}

impl fmt::Display for Infeasibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "job {}: no node of the fleet can run it", self.job)?;
        if self.no_nodes {
            return f.write_str(": the fleet has no nodes");
        }
        if !self.labels_nowhere.is_empty() {
            let labels = self
                .labels_nowhere
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            write!(f, "; no node has label {}", listed(labels))?;
        }
        if !self.classes_nowhere.is_empty() {
            let classes = self.classes_nowhere.iter().cloned().collect();
            write!(f, "; node classes installed nowhere: {}", listed(classes))?;
        }
        if !self.models_nowhere.is_empty() {
            let models = self
                .models_nowhere
                .iter()
                .map(ToString::to_string)
                .collect();
            write!(f, "; model files present nowhere: {}", listed(models))?;
        }
        if let Some((need, largest)) = self.vram_short {
            write!(
                f,
                "; needs {} of VRAM but the largest gpu has {}",
                gib(need),
                gib(largest)
            )?;
        }
        // The closest node matters for what the fleet has, but not on one node together; what
        // no node has is said above already.
        if let Some((node, reasons)) = &self.closest {
            let reasons: Vec<String> = reasons
                .iter()
                .filter(|reason| !self.names_already(reason))
                .map(ToString::to_string)
                .collect();
            if !reasons.is_empty() {
                write!(f, "; closest node {node} lacks: {}", listed(reasons))?;
            }
        }
        Ok(())
    }
}

/// Judges whether any node of `nodes` could ever run `job`, and if none can, what is missing.
///
/// Costs one pass over the fleet when the job is runnable; a second, allocating pass only
/// when it is not.
pub fn feasibility(job: &JobView, nodes: &[NodeView]) -> Feasibility {
    let capable: Vec<&NodeView> = nodes.iter().filter(|n| could_ever_run(job, n)).collect();
    if capable.iter().any(|n| is_available(n)) {
        return Feasibility::Runnable;
    }
    if !capable.is_empty() {
        let mut names: Vec<NodeId> = capable.iter().map(|n| n.id.clone()).collect();
        names.sort();
        return Feasibility::OnlyUnavailable { nodes: names };
    }
    Feasibility::Infeasible(explain(job, nodes))
}

/// Builds the explanation for a job no node can run.
fn explain(job: &JobView, nodes: &[NodeView]) -> Infeasibility {
    let labels_nowhere = job
        .required_labels
        .iter()
        .filter(|(k, v)| !nodes.iter().any(|n| n.labels.get(*k) == Some(*v)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // A node whose inventory is unknown might hold any class or model.
    let classes_nowhere = job
        .required_classes
        .iter()
        .filter(|c| {
            !nodes
                .iter()
                .any(|n| !n.inventory_known || n.classes.contains(*c))
        })
        .cloned()
        .collect();
    let models_nowhere = job
        .required_models
        .iter()
        .filter(|m| !nodes.iter().any(|n| !n.inventory_known || n.has_model(m)))
        .cloned()
        .collect();
    // A node not probed yet might have any GPU.
    let largest = nodes.iter().map(|n| n.vram_total).max().unwrap_or(0);
    let vram_short = (job.vram_need > largest
        && !nodes.iter().any(crate::eligibility::size_unknown))
    .then_some((job.vram_need, largest));

    // Fewest reasons wins; the name breaks ties so the message is stable.
    let closest = nodes
        .iter()
        .map(|n| (permanent_reasons(job, n), &n.id))
        .min_by(|a, b| a.0.len().cmp(&b.0.len()).then_with(|| a.1.cmp(b.1)))
        .map(|(reasons, id)| (id.clone(), reasons));

    Infeasibility {
        job: job.id.clone(),
        no_nodes: nodes.is_empty(),
        labels_nowhere,
        classes_nowhere,
        models_nowhere,
        vram_short,
        closest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::Health;
    use std::sync::Arc;

    fn node_for_test(name: &str, classes: &[&str], ckpts: &[&str], vram_gib: u64) -> NodeView {
        let mut node = NodeView::new(name);
        node.classes = Arc::new(classes.iter().map(|c| (*c).to_owned()).collect());
        Arc::make_mut(&mut node.models).insert(
            "checkpoints".into(),
            ckpts.iter().map(|c| (*c).to_owned()).collect(),
        );
        node.vram_total = vram_gib << 30;
        node
    }

    fn job_for_test(classes: &[&str], ckpts: &[&str], vram_gib: u64) -> JobView {
        let mut job = JobView::new("j-7", 1);
        job.required_classes = Arc::new(classes.iter().map(|c| (*c).to_owned()).collect());
        job.required_models = Arc::new(
            ckpts
                .iter()
                .map(|c| ModelFile::new("checkpoints", *c))
                .collect(),
        );
        job.vram_need = vram_gib << 30;
        job
    }

    #[test]
    fn runnable_when_an_up_node_has_everything() {
        let nodes = [
            node_for_test("a", &["K"], &[], 8),
            node_for_test("b", &["K", "S"], &["m"], 24),
        ];
        assert_eq!(
            feasibility(&job_for_test(&["K", "S"], &["m"], 12), &nodes),
            Feasibility::Runnable
        );
    }

    #[test]
    fn only_down_nodes_could_run_it() {
        let mut down = node_for_test("b", &["K"], &["m"], 24);
        down.health = Health::Down;
        let mut draining = node_for_test("c", &["K"], &["m"], 24);
        draining.draining = true;
        let nodes = [node_for_test("a", &["K"], &[], 24), draining, down];
        assert_eq!(
            feasibility(&job_for_test(&["K"], &["m"], 1), &nodes),
            Feasibility::OnlyUnavailable {
                nodes: vec!["b".into(), "c".into()]
            }
        );
    }

    #[test]
    fn infeasible_names_everything_missing_everywhere() {
        let nodes = [
            node_for_test("a", &["K"], &["m"], 8),
            node_for_test("b", &["K"], &[], 24),
        ];
        let mut job = job_for_test(&["K", "Upscale"], &["m", "xl"], 40);
        job.required_labels.insert("gpu".into(), "h100".into());

        let Feasibility::Infeasible(why) = feasibility(&job, &nodes) else {
            panic!("a job needing things nobody has must be infeasible");
        };
        assert_eq!(
            why.labels_nowhere,
            vec![("gpu".to_owned(), "h100".to_owned())]
        );
        assert_eq!(why.classes_nowhere, BTreeSet::from(["Upscale".to_owned()]));
        assert_eq!(
            why.models_nowhere,
            BTreeSet::from([ModelFile::new("checkpoints", "xl")])
        );
        assert_eq!(why.vram_short, Some((40 << 30, 24 << 30)));
        let text = why.to_string();
        for needle in [
            "job j-7",
            "gpu=h100",
            "Upscale",
            "checkpoints/xl",
            "40.0 GiB",
            "24.0 GiB",
        ] {
            assert!(text.contains(needle), "message must name {needle}: {text}");
        }
    }

    #[test]
    fn requirements_split_across_nodes_are_explained_by_the_closest_node() {
        // Each requirement exists somewhere, never together.
        let nodes = [
            node_for_test("a", &["K"], &[], 24),
            node_for_test("b", &[], &["m"], 24),
        ];
        let Feasibility::Infeasible(why) = feasibility(&job_for_test(&["K"], &["m"], 1), &nodes)
        else {
            panic!("no single node has both the class and the model");
        };
        assert!(why.classes_nowhere.is_empty() && why.models_nowhere.is_empty());
        let (closest, reasons) = why.closest.clone().expect("a closest node must be named");
        assert_eq!(closest, NodeId::from("a"), "ties go to the first name");
        assert_eq!(
            reasons,
            vec![Ineligibility::MissingModel(ModelFile::new(
                "checkpoints",
                "m"
            ))]
        );
        assert!(
            why.to_string()
                .contains("closest node a lacks: missing model file checkpoints/m")
        );
    }

    #[test]
    fn a_workflow_of_many_missing_nodes_gets_a_short_message_that_says_each_thing_once() {
        let nodes = [node_for_test("a", &["K"], &["m"], 24)];
        let classes: Vec<String> = (0..100).map(|i| format!("CustomNode{i:03}")).collect();
        let mut wanted: Vec<&str> = classes.iter().map(String::as_str).collect();
        wanted.push("K");
        let job = job_for_test(&wanted, &["m"], 4);
        let Feasibility::Infeasible(why) = feasibility(&job, &nodes) else {
            panic!("a job needing classes nobody has must be infeasible");
        };
        assert_eq!(
            why.classes_nowhere.len(),
            100,
            "the verdict keeps every class"
        );
        let text = why.to_string();
        assert!(text.contains("CustomNode000, CustomNode001"), "{text}");
        assert!(text.contains("CustomNode019 and 80 more"), "{text}");
        assert!(!text.contains("CustomNode020"), "{text}");
        assert_eq!(
            text.matches("CustomNode000").count(),
            1,
            "the closest node does not repeat what no node has: {text}"
        );
        assert!(!text.contains("closest node"), "{text}");
        assert!(text.len() < 500, "{} bytes: {text}", text.len());
    }

    #[test]
    fn empty_fleet_is_infeasible_and_says_so() {
        let Feasibility::Infeasible(why) = feasibility(&job_for_test(&[], &[], 0), &[]) else {
            panic!("nothing runs on an empty fleet");
        };
        assert!(why.to_string().ends_with("the fleet has no nodes"));
    }
}
