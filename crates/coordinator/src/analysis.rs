//! What the coordinator learns from a workflow at submit, and how placement sees a job.
//!
//! The workflow is parsed once with [`comfy_api::Workflow`] (which keeps its bytes exact),
//! checked structurally, and reduced to what placement needs: node classes, model files by
//! folder, a cost estimate and a VRAM estimate. The bytes forwarded to a node are the caller's
//! bytes, or the exact inner slice when the caller wrapped the graph in a known envelope.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use comfy_api::Workflow;
use comfy_api::workflow::{Envelope, WorkflowError};
use scheduler::{JobView, ModelFile};

use crate::job::{Job, WorkflowAnalysis};

/// Cost units: one sampler step at 512×512 pixels.
const COST_UNIT_PIXEL_STEPS: u128 = 512 * 512;

/// A workflow accepted for queueing.
#[derive(Debug, Clone)]
pub struct Analysed {
    /// The bytes to forward to a node: exactly what the caller sent, or the inner graph's exact
    /// bytes when an envelope was removed.
    pub forward: Bytes,
    /// Which envelope was removed, if any.
    pub envelope: Option<Envelope>,
    /// What placement needs.
    pub analysis: WorkflowAnalysis,
    /// Number of graph nodes.
    pub num_nodes: usize,
}

/// Parses and analyses a submitted workflow.
///
/// # Errors
/// The workflow's own [`WorkflowError`]: invalid JSON with line and column, the editor format,
/// a subgraph blueprint, a node without `class_type`, a dangling link, a cycle, ...
pub fn analyse(bytes: &Bytes) -> Result<Analysed, WorkflowError> {
    let (workflow, envelope) = Workflow::parse_unwrapping(bytes)?;
    let forward = match envelope {
        None => bytes.clone(),
        Some(_) => Bytes::copy_from_slice(workflow.as_str().as_bytes()),
    };
    let required_classes = workflow
        .class_types()
        .into_iter()
        .map(str::to_owned)
        .collect();
    let models = workflow
        .models_by_folder()
        .into_iter()
        .map(|(folder, names)| (folder.to_owned(), names))
        .collect();
    let pixel_steps = workflow.cost().pixel_steps();
    let cost = (pixel_steps / COST_UNIT_PIXEL_STEPS) as f64;
    Ok(Analysed {
        forward,
        envelope,
        analysis: WorkflowAnalysis {
            required_classes,
            models,
            cost,
        },
        num_nodes: workflow.len(),
    })
}

/// The job as placement sees it.
pub fn job_view(job: &Job, arrival: u64) -> JobView {
    let analysis = &job.spec.analysis;
    let mut view = JobView::new(job.id.to_string(), arrival);
    view.priority = job.spec.priority;
    view.tenant = job.spec.tenant.clone();
    view.required_labels = job.spec.required_labels.clone();
    view.required_classes = analysis.required_classes.clone();
    view.required_models = analysis
        .models
        .iter()
        .flat_map(|(folder, names)| {
            names
                .iter()
                .map(move |name| ModelFile::new(folder.clone(), name.clone()))
        })
        .collect::<BTreeSet<_>>();
    view.cost = analysis.cost.max(0.0) as u64;
    view.checkpoint = main_model(analysis);
    view.vram_need = estimate_vram(analysis);
    view
}

/// The model a job loads first: its checkpoint, else its diffusion model.
pub fn main_model(analysis: &WorkflowAnalysis) -> Option<String> {
    ["checkpoints", "diffusion_models"]
        .iter()
        .find_map(|folder| {
            analysis
                .models
                .get(*folder)
                .and_then(|names| names.iter().next().cloned())
        })
}

/// A rough VRAM need in bytes, from the families of the models a job loads.
///
/// NOTE: the coordinator cannot see model file sizes (ComfyUI's `/models` lists names only),
/// so the need is guessed from well-known family names; an unknown family counts as 0
/// (no constraint). A job that still does not fit fails with an out-of-memory error on the
/// node and is retried on a larger GPU.
pub fn estimate_vram(analysis: &WorkflowAnalysis) -> u64 {
    const GIB: u64 = 1 << 30;
    let mut need = 0u64;
    for folder in ["checkpoints", "diffusion_models"] {
        for name in analysis.models.get(folder).into_iter().flatten() {
            let lower = name.to_lowercase();
            let guess =
                if lower.contains("flux") || lower.contains("hunyuan") || lower.contains("wan2") {
                    12 * GIB
                } else if lower.contains("sd3") || lower.contains("sd_3") || lower.contains("ltx") {
                    8 * GIB
                } else if lower.contains("xl") {
                    6 * GIB
                } else {
                    0
                };
            need = need.max(guess);
        }
    }
    need
}

/// Class type and title of each graph node of a workflow, to describe `executing` events.
pub fn titles(workflow: &Bytes) -> Arc<HashMap<String, (String, String)>> {
    let Ok(parsed) = Workflow::parse(workflow) else {
        return Arc::default();
    };
    Arc::new(
        parsed
            .nodes()
            .map(|(id, node)| {
                let title = node
                    .title
                    .clone()
                    .unwrap_or_else(|| node.class_type.clone());
                (id.to_owned(), (node.class_type.clone(), title))
            })
            .collect(),
    )
}
