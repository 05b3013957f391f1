//! What placement is held to, and whether each policy gets there.
//!
//! A table of figures does not say whether a policy is good enough. These targets do, for a
//! placement scenario: end-to-end p95 at most 0.6× least-loaded's (the default policy is the
//! baseline to beat), makespan at most 1.1× the scenario's lower bound, model loads at most
//! 1.2× the fewest any schedule needs, no lost job and no forbidden placement. Where demand
//! moves between checkpoints, loads are also checked against the fewest a schedule that keeps
//! up needs, as a separate line: the plain minimum stays in the table. Each is
//! reported as achieved value, target and whether it is met, in the JSON and Markdown output,
//! so a regression or an unmet goal is visible without reading the numbers.

use std::fmt::Write as _;

use serde::Serialize;

use crate::placement::PolicyRun;

/// Target: end-to-end p95 over least-loaded's.
pub const P95_VS_LEAST_LOADED: f64 = 0.6;
/// Target: makespan over the lower bound.
pub const MAKESPAN_OVER_BOUND: f64 = 1.1;
/// Target: model loads over the minimum.
pub const LOADS_OVER_MIN: f64 = 1.2;

/// One figure against its target.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// What is measured.
    pub name: &'static str,
    /// The achieved value; `None` when it cannot be computed (no baseline run).
    pub achieved: Option<f64>,
    /// The most it may be.
    pub target: f64,
    /// Whether achieved ≤ target.
    pub met: bool,
}

impl Target {
    fn at_most(name: &'static str, achieved: Option<f64>, target: f64) -> Self {
        Self {
            name,
            achieved,
            target,
            met: achieved.is_some_and(|a| a.is_finite() && a <= target),
        }
    }
}

/// One policy's run against every target.
#[derive(Debug, Clone, Serialize)]
pub struct TargetCheck {
    /// Policy name.
    pub policy: String,
    /// The targets, in a fixed order.
    pub targets: Vec<Target>,
}

/// Checks every run; the least-loaded run (if any) is the p95 baseline.
pub fn check(
    runs: &[PolicyRun],
    min_model_loads: usize,
    keep_up_model_loads: Option<usize>,
) -> Vec<TargetCheck> {
    let baseline = runs
        .iter()
        .find(|run| run.policy == "least-loaded")
        .map(|run| run.end_to_end.p95_ms)
        .filter(|p95| *p95 > 0.0);
    runs.iter()
        .map(|run| {
            #[allow(clippy::cast_precision_loss)]
            let loads = (min_model_loads > 0)
                .then(|| run.model_loads_total as f64 / min_model_loads as f64);
            #[allow(clippy::cast_precision_loss)]
            let (lost, forbidden) = (run.lost as f64, run.forbidden_placements as f64);
            let mut targets = vec![
                Target::at_most(
                    "e2e p95 / least-loaded",
                    baseline.map(|b| run.end_to_end.p95_ms / b),
                    P95_VS_LEAST_LOADED,
                ),
                Target::at_most(
                    "makespan / bound",
                    Some(run.makespan_over_bound),
                    MAKESPAN_OVER_BOUND,
                ),
                Target::at_most("model loads / min", loads, LOADS_OVER_MIN),
            ];
            if let Some(keep_up) = keep_up_model_loads.filter(|&n| n > 0) {
                #[allow(clippy::cast_precision_loss)]
                let ratio = run.model_loads_total as f64 / keep_up as f64;
                targets.push(Target::at_most(
                    "model loads / keep-up min",
                    Some(ratio),
                    LOADS_OVER_MIN,
                ));
            }
            targets.push(Target::at_most("lost", Some(lost), 0.0));
            targets.push(Target::at_most("forbidden", Some(forbidden), 0.0));
            TargetCheck {
                policy: run.policy.clone(),
                targets,
            }
        })
        .collect()
}

/// The checks as a Markdown table: one row per policy, `achieved (≤ target) ✓/✗` per cell.
pub fn markdown(checks: &[TargetCheck]) -> String {
    let mut out = String::new();
    let Some(first) = checks.first() else {
        return out;
    };
    out.push_str("| policy |");
    for target in &first.targets {
        let _ = write!(out, " {} (≤ {}) |", target.name, target.target);
    }
    out.push_str("\n|---|");
    out.push_str(&"---:|".repeat(first.targets.len()));
    out.push('\n');
    for check in checks {
        let _ = write!(out, "| {} |", check.policy);
        for target in &check.targets {
            let mark = if target.met { "met" } else { "missed" };
            match target.achieved {
                Some(value) => {
                    let _ = write!(out, " {value:.2} {mark} |");
                }
                None => out.push_str(" n/a |"),
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_is_met_only_for_finite_values_within_the_target() {
        assert!(Target::at_most("x", Some(0.6), 0.6).met);
        assert!(!Target::at_most("x", Some(0.61), 0.6).met);
        assert!(!Target::at_most("x", Some(f64::NAN), 0.6).met);
        assert!(!Target::at_most("x", None, 0.6).met);
    }
}
