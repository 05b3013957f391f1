//! Placement results for people: a Markdown table and a hand-written SVG bar chart.
//!
//! The chart needs no plotting library: for each policy it draws three bars (makespan,
//! end-to-end p50, end-to-end p99, all in wall seconds) and a dashed line at the scenario's
//! lower bound, so the gap to the bound is visible at a glance.

use std::fmt::Write as _;

use crate::placement::Comparison;

/// The comparison as Markdown: one row per policy, then placements by class.
pub fn markdown(comparison: &Comparison) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### {} ({} jobs, {} nodes, time scale {})\n",
        comparison.scenario, comparison.jobs, comparison.nodes, comparison.time_scale
    );
    if !comparison.description.is_empty() {
        let _ = writeln!(out, "{}\n", comparison.description.trim());
    }
    let _ = writeln!(
        out,
        "Lower bound on the makespan: {:.2} s (wall): every prompt took at least {:.2}× its \
         modelled sampler time on the emulated nodes; counting the sampler alone it would be \
         {:.2} s.\n",
        comparison.lower_bound_s, comparison.service_factor, comparison.sampler_bound_s
    );
    out.push_str(
        "| policy | ok/total | lost | retries | makespan s | ×bound | wait p50 ms | wait p99 ms | e2e p50 ms | e2e p95 ms | e2e p99 ms | model loads | busy share min–max | forbidden |\n",
    );
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for run in &comparison.runs {
        let shares = run.busy_share.values().copied();
        let min = shares.clone().fold(f64::INFINITY, f64::min);
        let max = shares.fold(0.0, f64::max);
        let min = if min.is_finite() { min } else { 0.0 };
        let _ = writeln!(
            out,
            "| {} | {}/{} | {} | {} | {:.2} | {:.2} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {:.0}–{:.0}% | {} |",
            run.policy,
            run.outcomes.succeeded,
            run.jobs.len(),
            run.lost,
            run.retries,
            run.makespan_s,
            run.makespan_over_bound,
            run.queue_wait.p50_ms,
            run.queue_wait.p99_ms,
            run.end_to_end.p50_ms,
            run.end_to_end.p95_ms,
            run.end_to_end.p99_ms,
            run.model_loads_total,
            min * 100.0,
            max * 100.0,
            run.forbidden_placements,
        );
    }
    let _ = write!(
        out,
        "\nAchieved vs target (p95 relative to least-loaded; model loads relative to a minimum of {}",
        comparison.min_model_loads
    );
    if let Some(keep_up) = comparison.keep_up_model_loads {
        let _ = write!(
            out,
            ", and to {keep_up} for a schedule that keeps up as demand moves (an estimate)"
        );
    }
    out.push_str("):\n\n");
    out.push_str(&crate::targets::markdown(&comparison.targets));
    if let Some(reference) = &comparison.clairvoyant {
        let _ = write!(
            out,
            "\nClairvoyant reference (first come, first served; each job to the node where it \
             finishes first, every run time known in advance, no model loads): e2e p50 {:.0} ms, \
             p95 {:.0} ms",
            reference.end_to_end.p50_ms, reference.end_to_end.p95_ms
        );
        if let Some(ratio) = reference.p95_vs_least_loaded {
            let _ = write!(out, ", {ratio:.2}× least-loaded's p95");
        }
        out.push_str(".\n");
    }
    out.push_str("\nFinal placements (class: node=jobs):\n\n");
    for run in &comparison.runs {
        let classes: Vec<String> = run
            .placements
            .iter()
            .map(|(class, nodes)| {
                let nodes: Vec<String> = nodes
                    .iter()
                    .map(|(node, count)| format!("{node}={count}"))
                    .collect();
                format!("{class}: {}", nodes.join(" "))
            })
            .collect();
        let _ = writeln!(out, "- {}: {}", run.policy, classes.join("; "));
    }
    out
}

const BAR_COLOURS: [(&str, &str); 3] = [
    ("end-to-end p50", "#55a868"),
    ("end-to-end p95", "#4c72b0"),
    ("end-to-end p99", "#dd8452"),
];

/// The comparison as an SVG bar chart: end-to-end latency per policy (p50, p95, p99, in wall
/// seconds), with each policy's makespan over the lower bound and model loads written under
/// its bars. Latency and makespan differ a hundredfold, so they do not share an axis.
pub fn svg(comparison: &Comparison) -> String {
    let (width, height) = (760.0_f64, 400.0_f64);
    let (left, right, top, bottom) = (60.0, 20.0, 50.0, 90.0);
    let plot_w = width - left - right;
    let plot_h = height - top - bottom;
    let values: Vec<[f64; 3]> = comparison
        .runs
        .iter()
        .map(|run| {
            [
                run.end_to_end.p50_ms / 1e3,
                run.end_to_end.p95_ms / 1e3,
                run.end_to_end.p99_ms / 1e3,
            ]
        })
        .collect();
    let top_value = values
        .iter()
        .flatten()
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max)
        .max(1e-3)
        * 1.1;
    let y = |value: f64| top + plot_h - value / top_value * plot_h;
    let mut out = svg_start(
        width,
        height,
        left,
        &format!(
            "{} — {} jobs, {} nodes: end-to-end latency (wall seconds)",
            comparison.scenario, comparison.jobs, comparison.nodes
        ),
    );
    svg_grid(&mut out, left, plot_w, top_value, &y);
    #[allow(clippy::cast_precision_loss)]
    let group_w = plot_w / values.len().max(1) as f64;
    let bar_w = group_w * 0.8 / 3.0;
    for (index, (run, bars)) in comparison.runs.iter().zip(&values).enumerate() {
        #[allow(clippy::cast_precision_loss)]
        let x0 = left + group_w * index as f64 + group_w * 0.1;
        for (bar, value) in bars.iter().enumerate() {
            #[allow(clippy::cast_precision_loss)]
            let x = x0 + bar_w * bar as f64;
            let by = y(*value);
            let _ = writeln!(
                out,
                r#"<rect x="{x:.1}" y="{by:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{} {}: {value:.2} s</title></rect>"#,
                bar_w - 2.0,
                (top + plot_h - by).max(0.0),
                BAR_COLOURS[bar].1,
                escape(&run.policy),
                BAR_COLOURS[bar].0
            );
        }
        let centre = x0 + group_w * 0.4;
        let _ = writeln!(
            out,
            r#"<text x="{centre:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            top + plot_h + 16.0,
            escape(&run.policy)
        );
        let _ = writeln!(
            out,
            "<text x=\"{centre:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#555\" font-size=\"11\">makespan {:.2}× bound</text>",
            top + plot_h + 31.0,
            run.makespan_over_bound,
        );
        let _ = writeln!(
            out,
            "<text x=\"{centre:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#555\" font-size=\"11\">{} model loads</text>",
            top + plot_h + 44.0,
            run.model_loads_total
        );
        if run.lost > 0 {
            let _ = writeln!(
                out,
                "<text x=\"{centre:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#c00\">{} lost</text>",
                top + plot_h + 57.0,
                run.lost
            );
        }
    }
    let legend_y = height - 12.0;
    for (index, (name, colour)) in BAR_COLOURS.iter().enumerate() {
        #[allow(clippy::cast_precision_loss)]
        let lx = left + 170.0 * index as f64;
        let _ = writeln!(
            out,
            r#"<rect x="{lx:.1}" y="{:.1}" width="12" height="12" fill="{colour}"/><text x="{:.1}" y="{legend_y:.1}">{name}</text>"#,
            legend_y - 10.0,
            lx + 16.0
        );
    }
    out.push_str("</svg>\n");
    out
}

/// Opens an SVG document of `width` × `height` on a white ground, with `title` at `left`.
pub(crate) fn svg_start(width: f64, height: f64, left: f64, title: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{left}" y="22" font-size="15" font-weight="bold">{}</text>"#,
        escape(title)
    );
    out
}

/// Five horizontal grid lines from 0 to `top_value`, labelled on the left; `y` maps a value
/// to its height.
pub(crate) fn svg_grid(
    out: &mut String,
    left: f64,
    plot_w: f64,
    top_value: f64,
    y: &impl Fn(f64) -> f64,
) {
    for step in 0..=4 {
        let value = top_value * f64::from(step) / 4.0;
        let gy = y(value);
        let _ = writeln!(
            out,
            "<line x1=\"{left}\" y1=\"{gy:.1}\" x2=\"{:.1}\" y2=\"{gy:.1}\" stroke=\"#ddd\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{value:.2}</text>",
            left + plot_w,
            left - 6.0,
            gy + 4.0
        );
    }
}

/// Text made safe inside SVG markup and attribute values.
pub(crate) fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
