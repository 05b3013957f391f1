//! A load sweep: one scenario replayed at several arrival rates, each policy's end-to-end p95
//! against least-loaded's at every load, as a table and a line chart.
//!
//! A single scenario is one point on a curve. How much a placement policy gains over
//! least-loaded changes with how busy the fleet is, so the sweep shows the curve: the rate
//! scale of each point, the sampler load it offers ([`crate::scenario::Scenario::offered_load`]),
//! each policy's p50 and p95, its p95 over least-loaded's against the target, and the
//! clairvoyant first-come-first-served reference ([`crate::oracle`]) at the same load.

use std::fmt::Write as _;

use serde::Serialize;

use crate::placement::Comparison;
use crate::report::{escape, svg_grid, svg_start};
use crate::scenario::Scenario;
use crate::targets::P95_VS_LEAST_LOADED;

/// One policy at one load.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyPoint {
    /// Policy name.
    pub policy: String,
    /// End-to-end median, milliseconds.
    pub p50_ms: f64,
    /// End-to-end 95th percentile, milliseconds.
    pub p95_ms: f64,
    /// Its p95 over least-loaded's at the same load, when least-loaded ran.
    pub p95_vs_least_loaded: Option<f64>,
    /// Makespan over the run's lower bound.
    pub makespan_over_bound: f64,
    /// Jobs lost.
    pub lost: usize,
}

/// One load of the sweep.
#[derive(Debug, Clone, Serialize)]
pub struct SweepPoint {
    /// The factor the scenario's rate was multiplied by.
    pub rate_scale: f64,
    /// Name of the scaled scenario (its result files carry it).
    pub scenario: String,
    /// Sampler work offered over fleet capacity.
    pub offered_load: f64,
    /// Every policy that ran, in run order.
    pub policies: Vec<PolicyPoint>,
    /// The clairvoyant reference's p95 over least-loaded's.
    pub clairvoyant_vs_least_loaded: Option<f64>,
}

/// A whole sweep of one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Sweep {
    /// The scenario's own name.
    pub scenario: String,
    /// Its description.
    pub description: String,
    /// The loads, in the order they ran.
    pub points: Vec<SweepPoint>,
}

impl Sweep {
    /// An empty sweep of `scenario`.
    pub fn new(scenario: &Scenario) -> Self {
        Self {
            scenario: scenario.name.clone(),
            description: scenario.description.clone(),
            points: Vec::new(),
        }
    }

    /// Adds the comparison of `scaled` (the scenario at `rate_scale` times its rate).
    pub fn push(&mut self, rate_scale: f64, scaled: &Scenario, comparison: &Comparison) {
        let baseline = comparison
            .runs
            .iter()
            .find(|run| run.policy == "least-loaded")
            .map(|run| run.end_to_end.p95_ms)
            .filter(|p95| *p95 > 0.0);
        let policies = comparison
            .runs
            .iter()
            .map(|run| PolicyPoint {
                policy: run.policy.clone(),
                p50_ms: run.end_to_end.p50_ms,
                p95_ms: run.end_to_end.p95_ms,
                p95_vs_least_loaded: baseline.map(|base| run.end_to_end.p95_ms / base),
                makespan_over_bound: run.makespan_over_bound,
                lost: run.lost,
            })
            .collect();
        self.points.push(SweepPoint {
            rate_scale,
            scenario: comparison.scenario.clone(),
            offered_load: scaled.offered_load(),
            policies,
            clairvoyant_vs_least_loaded: comparison
                .clairvoyant
                .as_ref()
                .and_then(|c| c.p95_vs_least_loaded),
        });
    }
}

/// The sweep as Markdown: one row per load and policy, then the clairvoyant reference.
pub fn markdown(sweep: &Sweep) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "### {}: load sweep\n", sweep.scenario);
    if !sweep.description.is_empty() {
        let _ = writeln!(out, "{}\n", sweep.description.trim());
    }
    let _ = writeln!(
        out,
        "Each row replays the same jobs at the scenario's arrival rate times the factor. \
         Sampler load is sampler work offered over the fleet's capacity (the emulator's other \
         per-prompt work adds roughly 10–25%). Target: p95 at most {P95_VS_LEAST_LOADED}× \
         least-loaded's.\n"
    );
    out.push_str(
        "| rate × | sampler load | policy | e2e p50 ms | e2e p95 ms | p95 / least-loaded | target | makespan ×bound | lost |\n",
    );
    out.push_str("|---:|---:|---|---:|---:|---:|---|---:|---:|\n");
    for point in &sweep.points {
        for policy in &point.policies {
            let (ratio, verdict) = match policy.p95_vs_least_loaded {
                Some(ratio) if policy.policy == "least-loaded" => (format!("{ratio:.2}"), "—"),
                Some(ratio) if ratio <= P95_VS_LEAST_LOADED => (format!("{ratio:.2}"), "met"),
                Some(ratio) => (format!("{ratio:.2}"), "missed"),
                None => ("—".to_owned(), "—"),
            };
            let _ = writeln!(
                out,
                "| {} | {:.0}% | {} | {:.0} | {:.0} | {ratio} | {verdict} | {:.2} | {} |",
                crate::scenario::factor_label(point.rate_scale),
                point.offered_load * 100.0,
                policy.policy,
                policy.p50_ms,
                policy.p95_ms,
                policy.makespan_over_bound,
                policy.lost,
            );
        }
        if let Some(ratio) = point.clairvoyant_vs_least_loaded {
            let _ = writeln!(
                out,
                "| {} | {:.0}% | clairvoyant FCFS (reference) | | | {ratio:.2} | | | |",
                crate::scenario::factor_label(point.rate_scale),
                point.offered_load * 100.0,
            );
        }
    }
    out
}

/// The attribute of a dashed line (the reference and the target).
const DASHED: &str = r#" stroke-dasharray="6 4""#;

const LINE_COLOURS: [&str; 6] = [
    "#4c72b0", "#dd8452", "#55a868", "#8172b3", "#937860", "#da8bc3",
];

/// The sweep as an SVG line chart: p95 over least-loaded's (y) against sampler load (x), one
/// line per policy, the clairvoyant reference dashed, the target as a red line.
pub fn svg(sweep: &Sweep) -> String {
    let (width, height) = (760.0_f64, 420.0_f64);
    let (left, right, top, bottom) = (60.0, 190.0, 50.0, 50.0);
    let plot_w = width - left - right;
    let plot_h = height - top - bottom;
    let loads: Vec<f64> = sweep.points.iter().map(|p| p.offered_load).collect();
    let x_min = loads.iter().copied().fold(f64::INFINITY, f64::min);
    let x_max = loads.iter().copied().fold(0.0, f64::max);
    let (x_min, x_max) = if x_min.is_finite() && x_max > x_min {
        (x_min, x_max)
    } else {
        (0.0, x_max.max(1.0))
    };
    let y_max = sweep
        .points
        .iter()
        .flat_map(|p| {
            p.policies
                .iter()
                .filter_map(|policy| policy.p95_vs_least_loaded)
                .chain(p.clairvoyant_vs_least_loaded)
        })
        .filter(|v| v.is_finite())
        .fold(1.0, f64::max)
        * 1.1;
    // Round up to a multiple of 0.4, so the four grid steps fall on tenths (and 0.6 on one).
    let y_max = (y_max / 0.4).ceil() * 0.4;
    let x = |load: f64| left + (load - x_min) / (x_max - x_min) * plot_w;
    let y = |ratio: f64| top + plot_h - ratio / y_max * plot_h;

    let mut out = svg_start(
        width,
        height,
        left,
        &format!(
            "{}: end-to-end p95 over least-loaded's, by load",
            sweep.scenario
        ),
    );
    svg_grid(&mut out, left, plot_w, y_max, &y);
    for load in &loads {
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{:.0}%</text>"#,
            x(*load),
            top + plot_h + 18.0,
            load * 100.0
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">sampler load (work offered / fleet capacity)</text>"#,
        left + plot_w / 2.0,
        height - 10.0
    );
    let target_y = y(P95_VS_LEAST_LOADED);
    let _ = writeln!(
        out,
        "<line x1=\"{left}\" y1=\"{target_y:.1}\" x2=\"{:.1}\" y2=\"{target_y:.1}\" stroke=\"#c00\" stroke-dasharray=\"6 4\"/>",
        left + plot_w
    );

    // One series per policy, in first-seen order, then the reference.
    let mut names: Vec<&str> = Vec::new();
    for point in &sweep.points {
        for policy in &point.policies {
            if !names.contains(&policy.policy.as_str()) {
                names.push(&policy.policy);
            }
        }
    }
    let mut legend: Vec<(String, &str, bool)> = Vec::new();
    for (index, name) in names.iter().enumerate() {
        let colour = LINE_COLOURS[index % LINE_COLOURS.len()];
        let series: Vec<(f64, f64)> = sweep
            .points
            .iter()
            .filter_map(|point| {
                point
                    .policies
                    .iter()
                    .find(|p| p.policy == *name)
                    .and_then(|p| p.p95_vs_least_loaded)
                    .map(|ratio| (point.offered_load, ratio))
            })
            .collect();
        line(&mut out, &series, colour, false, name, &x, &y);
        legend.push(((*name).to_owned(), colour, false));
    }
    let reference: Vec<(f64, f64)> = sweep
        .points
        .iter()
        .filter_map(|p| p.clairvoyant_vs_least_loaded.map(|r| (p.offered_load, r)))
        .collect();
    if !reference.is_empty() {
        line(
            &mut out,
            &reference,
            "#333",
            true,
            "clairvoyant FCFS",
            &x,
            &y,
        );
        legend.push(("clairvoyant FCFS".to_owned(), "#333", true));
    }
    legend.push((format!("target {P95_VS_LEAST_LOADED}×"), "#c00", true));
    for (index, (name, colour, dashed)) in legend.iter().enumerate() {
        #[allow(clippy::cast_precision_loss)]
        let ly = top + 10.0 + 20.0 * index as f64;
        let lx = left + plot_w + 16.0;
        let dash = if *dashed { DASHED } else { "" };
        let _ = writeln!(
            out,
            r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="2"{dash}/><text x="{:.1}" y="{:.1}">{}</text>"#,
            lx + 24.0,
            lx + 30.0,
            ly + 4.0,
            escape(name)
        );
    }
    out.push_str("</svg>\n");
    out
}

fn line(
    out: &mut String,
    series: &[(f64, f64)],
    colour: &str,
    dashed: bool,
    name: &str,
    x: &impl Fn(f64) -> f64,
    y: &impl Fn(f64) -> f64,
) {
    if series.is_empty() {
        return;
    }
    let points: Vec<String> = series
        .iter()
        .map(|(load, ratio)| format!("{:.1},{:.1}", x(*load), y(*ratio)))
        .collect();
    let dash = if dashed { DASHED } else { "" };
    let _ = writeln!(
        out,
        r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>"#,
        points.join(" ")
    );
    for (load, ratio) in series {
        let _ = writeln!(
            out,
            r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"><title>{} at {:.0}%: {ratio:.2}</title></circle>"#,
            x(*load),
            y(*ratio),
            escape(name),
            load * 100.0
        );
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::placement::PolicyRun;
    use crate::stats::Summary;

    const SCENARIO: &str = r#"
        name = "slow"
        time_scale = 0.1
        [[nodes]]
        name = "fast"
        count = 3
        gpu = "NVIDIA GeForce RTX 4090"
        vram_gib = 24
        seconds_per_step = 0.03
        checkpoints = ["sd_xl_base_1.0.safetensors"]
        [load]
        jobs = 10
        rate = 1.0
        [[load.mix]]
        class = "draft"
        checkpoint = "sd_xl_base_1.0.safetensors"
        steps = 20
    "#;

    fn run(policy: &str, p95_ms: f64) -> PolicyRun {
        PolicyRun {
            policy: policy.to_owned(),
            outcomes: crate::overhead::Outcomes::default(),
            lost: 0,
            retries: 0,
            makespan_s: 10.0,
            makespan_over_bound: 1.05,
            queue_wait: Summary::default(),
            end_to_end: Summary {
                count: 10,
                p50_ms: p95_ms / 2.0,
                p95_ms,
                ..Summary::default()
            },
            busy_share: Default::default(),
            model_loads: Default::default(),
            model_loads_total: 3,
            placements: Default::default(),
            forbidden_placements: 0,
            service_factor: 1.1,
            jobs: Vec::new(),
        }
    }

    fn comparison(name: &str, runs: Vec<PolicyRun>) -> Comparison {
        Comparison {
            scenario: name.to_owned(),
            description: String::new(),
            jobs: 10,
            nodes: 3,
            time_scale: 0.1,
            lower_bound_s: 9.0,
            sampler_bound_s: 8.0,
            service_factor: 1.1,
            min_model_loads: 3,
            keep_up_model_loads: None,
            clairvoyant: None,
            runs,
            targets: Vec::new(),
        }
    }

    fn sweep() -> Sweep {
        let base = Scenario::parse(SCENARIO, Path::new("<text>")).expect("parses");
        let mut sweep = Sweep::new(&base);
        for (factor, ll, ef) in [(0.5, 2000.0, 800.0), (1.0, 1500.0, 1200.0)] {
            let scaled = base.with_rate_scale(factor).expect("valid");
            let runs = vec![run("least-loaded", ll), run("expected-finish", ef)];
            sweep.push(factor, &scaled, &comparison(&scaled.name, runs));
        }
        sweep
    }

    #[test]
    fn each_load_compares_every_policy_with_least_loaded_at_that_load() {
        let sweep = sweep();
        assert_eq!(sweep.scenario, "slow");
        let loads: Vec<f64> = sweep.points.iter().map(|p| p.offered_load).collect();
        // 20 units per job; three nodes do 100 units per second.
        assert!(
            (loads[0] - 0.1).abs() < 1e-9 && (loads[1] - 0.2).abs() < 1e-9,
            "{loads:?}"
        );
        let ratios: Vec<Option<f64>> = sweep
            .points
            .iter()
            .map(|p| p.policies[1].p95_vs_least_loaded)
            .collect();
        assert_eq!(ratios, vec![Some(0.4), Some(0.8)]);
        assert_eq!(sweep.points[1].scenario, "slow-x1");

        let text = markdown(&sweep);
        assert!(
            text.contains("| 0.5 | 10% | expected-finish | 400 | 800 | 0.40 | met |"),
            "{text}"
        );
        assert!(
            text.contains("| 1 | 20% | expected-finish | 600 | 1200 | 0.80 | missed |"),
            "{text}"
        );
        assert!(
            text.contains("| 1 | 20% | least-loaded | 750 | 1500 | 1.00 | — |"),
            "{text}"
        );
    }

    #[test]
    fn the_chart_draws_a_line_per_policy_and_the_target() {
        let chart = svg(&sweep());
        assert!(chart.starts_with("<svg") && chart.trim_end().ends_with("</svg>"));
        assert_eq!(
            chart.matches("<polyline").count(),
            2,
            "least-loaded and expected-finish"
        );
        assert_eq!(
            chart.matches("<circle").count(),
            4,
            "one mark per policy and load"
        );
        assert!(chart.contains("expected-finish at 10%: 0.40"), "{chart}");
        assert!(chart.contains("target 0.6×"));
        assert!(!chart.contains("NaN") && !chart.contains("inf"), "{chart}");
    }

    #[test]
    fn a_sweep_without_least_loaded_has_no_ratios_and_still_draws() {
        let base = Scenario::parse(SCENARIO, Path::new("<text>")).expect("parses");
        let mut sweep = Sweep::new(&base);
        let scaled = base.with_rate_scale(1.0).expect("valid");
        sweep.push(
            1.0,
            &scaled,
            &comparison(&scaled.name, vec![run("random", 900.0)]),
        );
        assert_eq!(sweep.points[0].policies[0].p95_vs_least_loaded, None);
        assert!(markdown(&sweep).contains("| 1 | 20% | random | 450 | 900 | — | — |"));
        let chart = svg(&sweep);
        assert_eq!(chart.matches("<polyline").count(), 0);
        assert!(!chart.contains("NaN"));
    }
}
