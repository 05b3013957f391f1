//! Filters: whether one node can run one job, and if not, every reason why.
//!
//! Two questions share one function. "Could this node *ever* run the job?" looks only at what
//! is installed (labels, node classes, model files, GPU size). "Can it run it *now*?" adds
//! health, drain and whether its inventory was read. Feasibility asks the first across the fleet;
//! placement asks the second. Deriving both from one list of reasons keeps them consistent.

use std::fmt;

use crate::view::{Health, JobView, ModelFile, NodeView};

/// One reason a node cannot run a job.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Ineligibility {
    /// The node is not [`Health::Up`].
    NotUp(Health),
    /// An operator drained the node.
    Draining,
    /// The node's classes and models were not read yet.
    InventoryUnknown,
    /// The node lacks a required label, or has it with another value.
    LabelMismatch {
        /// Label key.
        key: String,
        /// Value the job requires.
        wanted: String,
        /// Value the node has, if any.
        found: Option<String>,
    },
    /// The node lacks a node class the workflow uses.
    MissingClass(String),
    /// The node lacks a model file the workflow loads.
    MissingModel(ModelFile),
    /// The node's GPU is smaller than the job's estimated need.
    GpuTooSmall {
        /// Estimated need in bytes.
        need: u64,
        /// The node's total VRAM in bytes.
        total: u64,
    },
}

impl Ineligibility {
    /// Returns whether the reason is temporary (health, drain, unknown inventory) rather than
    /// something missing from the node.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::NotUp(_) | Self::Draining | Self::InventoryUnknown
        )
    }
}

impl fmt::Display for Ineligibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotUp(health) => write!(f, "node is {health}"),
            Self::Draining => f.write_str("node is draining"),
            Self::InventoryUnknown => f.write_str("node classes and models not read yet"),
            Self::LabelMismatch {
                key,
                wanted,
                found: Some(found),
            } => {
                write!(f, "label {key}={found}, job needs {key}={wanted}")
            }
            Self::LabelMismatch {
                key,
                wanted,
                found: None,
            } => {
                write!(f, "no label {key}, job needs {key}={wanted}")
            }
            Self::MissingClass(class) => write!(f, "missing node class {class}"),
            Self::MissingModel(model) => write!(f, "missing model file {model}"),
            Self::GpuTooSmall { need, total } => {
                write!(f, "gpu has {} but job needs {}", gib(*total), gib(*need))
            }
        }
    }
}

/// Formats bytes as GiB with one decimal, for messages.
pub(crate) fn gib(bytes: u64) -> String {
    // Precision loss above 2^53 bytes is irrelevant for a message.
    #[allow(clippy::cast_precision_loss)]
    let value = bytes as f64 / (1024.0 * 1024.0 * 1024.0);
    format!("{value:.1} GiB")
}

/// Lists every reason `node` could never run `job` (what is installed), ignoring health,
/// drain and whether the inventory is known. Empty means it could.
pub fn permanent_reasons(job: &JobView, node: &NodeView) -> Vec<Ineligibility> {
    let mut reasons = Vec::new();
    for (key, wanted) in &job.required_labels {
        let found = node.labels.get(key);
        if found != Some(wanted) {
            reasons.push(Ineligibility::LabelMismatch {
                key: key.clone(),
                wanted: wanted.clone(),
                found: found.cloned(),
            });
        }
    }
    // A node whose inventory is unknown might have anything: only labels count.
    if node.inventory_known {
        reasons.extend(
            job.required_classes
                .iter()
                .filter(|class| !node.classes.contains(*class))
                .map(|class| Ineligibility::MissingClass(class.clone())),
        );
        reasons.extend(
            job.required_models
                .iter()
                .filter(|model| !node.has_model(model))
                .map(|model| Ineligibility::MissingModel(model.clone())),
        );
    }
    if !size_unknown(node) && job.vram_need > node.vram_total {
        reasons.push(Ineligibility::GpuTooSmall {
            need: job.vram_need,
            total: node.vram_total,
        });
    }
    reasons
}

/// Lists the temporary reasons `node` cannot take any job now (health, drain, unknown
/// inventory). Empty means it is available.
pub fn transient_reasons(node: &NodeView) -> Vec<Ineligibility> {
    let mut reasons = Vec::new();
    if node.health != Health::Up {
        reasons.push(Ineligibility::NotUp(node.health));
    }
    if node.draining {
        reasons.push(Ineligibility::Draining);
    }
    if !node.inventory_known {
        reasons.push(Ineligibility::InventoryUnknown);
    }
    reasons
}

/// Returns whether `node` is available for new jobs at all (up, not draining, inventory known).
pub fn is_available(node: &NodeView) -> bool {
    node.health == Health::Up && !node.draining && node.inventory_known
}

/// Returns whether the node's GPU size is not known yet: nothing has been learnt from it (no
/// inventory, no VRAM figure), as before its first probe answers. Such a node might have any
/// GPU, so its size refuses nothing; it takes no job until its inventory is known anyway.
pub fn size_unknown(node: &NodeView) -> bool {
    !node.inventory_known && node.vram_total == 0
}

/// Returns whether `node` could ever run `job`, ignoring availability.
pub fn could_ever_run(job: &JobView, node: &NodeView) -> bool {
    // Same rules as `permanent_reasons`, without allocating.
    job.required_labels
        .iter()
        .all(|(key, wanted)| node.labels.get(key) == Some(wanted))
        && (size_unknown(node) || job.vram_need <= node.vram_total)
        && (!node.inventory_known
            || (job
                .required_classes
                .iter()
                .all(|c| node.classes.contains(c))
                && job.required_models.iter().all(|m| node.has_model(m))))
}

/// Returns whether `node` may be given `job` now, slots aside: available and able to run it.
pub fn can_run_now(job: &JobView, node: &NodeView) -> bool {
    is_available(node) && could_ever_run(job, node)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn gpu_for_test() -> NodeView {
        let mut node = NodeView::new("gpu-1");
        node.labels.insert("pool".into(), "a".into());
        Arc::make_mut(&mut node.classes).extend(["KSampler".to_owned(), "SaveImage".to_owned()]);
        Arc::make_mut(&mut node.models)
            .entry("checkpoints".into())
            .or_default()
            .insert("sd15.safetensors".into());
        node.vram_total = 8 << 30;
        node
    }

    fn job_for_test() -> JobView {
        let mut job = JobView::new("j-1", 1);
        job.required_labels.insert("pool".into(), "a".into());
        Arc::make_mut(&mut job.required_classes).insert("KSampler".into());
        Arc::make_mut(&mut job.required_models)
            .insert(ModelFile::new("checkpoints", "sd15.safetensors"));
        job.vram_need = 4 << 30;
        job
    }

    #[test]
    fn node_with_everything_can_run_the_job() {
        let (job, node) = (job_for_test(), gpu_for_test());
        assert!(permanent_reasons(&job, &node).is_empty());
        assert!(could_ever_run(&job, &node));
        assert!(can_run_now(&job, &node));
    }

    #[test]
    fn every_missing_thing_is_reported() {
        let mut job = job_for_test();
        job.required_labels.insert("zone".into(), "eu".into());
        Arc::make_mut(&mut job.required_classes).insert("Upscale".into());
        Arc::make_mut(&mut job.required_models).insert(ModelFile::new("loras", "x.safetensors"));
        job.vram_need = 16 << 30;
        let mut node = gpu_for_test();
        node.labels.insert("zone".into(), "us".into());

        let reasons = permanent_reasons(&job, &node);
        assert_eq!(
            reasons,
            vec![
                Ineligibility::LabelMismatch {
                    key: "zone".into(),
                    wanted: "eu".into(),
                    found: Some("us".into())
                },
                Ineligibility::MissingClass("Upscale".into()),
                Ineligibility::MissingModel(ModelFile::new("loras", "x.safetensors")),
                Ineligibility::GpuTooSmall {
                    need: 16 << 30,
                    total: 8 << 30
                },
            ]
        );
        assert!(!could_ever_run(&job, &node));
        assert_eq!(
            reasons[3].to_string(),
            "gpu has 8.0 GiB but job needs 16.0 GiB"
        );
    }

    #[test]
    fn down_or_draining_node_could_run_later_but_not_now() {
        let job = job_for_test();
        for change in [
            |n: &mut NodeView| n.health = Health::Down,
            |n: &mut NodeView| n.health = Health::Suspect,
            |n: &mut NodeView| n.draining = true,
        ] {
            let mut node = gpu_for_test();
            change(&mut node);
            assert!(
                could_ever_run(&job, &node),
                "availability must not affect feasibility"
            );
            assert!(
                !can_run_now(&job, &node),
                "an unavailable node must not be a candidate"
            );
            assert!(
                transient_reasons(&node)
                    .iter()
                    .all(Ineligibility::is_transient)
            );
        }
    }

    #[test]
    fn unknown_inventory_might_have_any_class_but_not_a_bigger_gpu() {
        let mut job = job_for_test();
        Arc::make_mut(&mut job.required_classes).insert("Exotic".into());
        let mut node = gpu_for_test();
        node.inventory_known = false;
        assert!(could_ever_run(&job, &node));
        assert!(!can_run_now(&job, &node));
        job.vram_need = 64 << 30;
        assert!(
            !could_ever_run(&job, &node),
            "gpu size is known from system stats"
        );
        // Before the first probe answers nothing is known, size included.
        node.vram_total = 0;
        assert!(could_ever_run(&job, &node));
        assert!(permanent_reasons(&job, &node).is_empty());
    }
}
