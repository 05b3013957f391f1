//! The deployment files agree with the coordinator they deploy.
//!
//! A Grafana panel or an alert that names a metric the coordinator does not export shows an
//! empty graph or never fires, and nothing else notices: Prometheus accepts any name. So this
//! test pulls every metric name out of the PromQL in `deploy/grafana/*.json` and
//! `deploy/prometheus/rules.yml` and checks it against the families that
//! [`Metrics::new`] registers, read back from the rendered exposition's `# TYPE` lines.
//! Histogram series (`_bucket`, `_sum`, `_count`) count as their family.
//!
//! The PromQL is scanned by a small lexer rather than a full parser: it skips strings, label
//! matchers, ranges, Grafana variables and the label lists of `by`/`on`-style clauses, drops
//! keywords and aggregation operators, and treats an identifier followed by `(` as a function.
//! What is left are metric names. The same file also checks that every TOML configuration
//! shipped under `deploy/` loads and validates, since a key renamed in the configuration would
//! otherwise only surface when a pod crash-loops.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use coordinator::config::Config;
use coordinator::metrics::Metrics;
use prometheus::Registry;

/// Keywords, aggregation operators and literals that look like identifiers in PromQL.
const NOT_METRICS: &[&str] = &[
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
    "atan2",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

/// Clauses whose parenthesised argument is a list of label names, not an expression.
const LABEL_LIST_CLAUSES: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Series suffixes that belong to a histogram family.
const HISTOGRAM_SUFFIXES: &[&str] = &["_bucket", "_sum", "_count"];

fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: cannot read: {e}", path.display()))
}

/// The families a fresh coordinator registers, by name, with their type.
///
/// Vector families are only rendered once they have a child, so one child of each is created
/// through the public fields. [`every_family_is_rendered`] checks that this list stays complete.
fn registered_families() -> BTreeMap<String, String> {
    let metrics = Metrics::new(Registry::new()).expect("a fresh registry accepts every family");
    metrics.set_node_health("n", "up");
    metrics.jobs_finished.with_label_values(&["succeeded"]);
    metrics.jobs_retried.with_label_values(&["node_lost"]);
    metrics.jobs_rejected.with_label_values(&["queue_full"]);
    for vec in [
        &metrics.node_vram_total,
        &metrics.node_vram_free,
        &metrics.node_queue_running,
        &metrics.node_queue_pending,
        &metrics.node_in_flight,
    ] {
        vec.with_label_values(&["n"]);
    }
    for vec in [
        &metrics.node_probe_failures,
        &metrics.node_websocket_reconnects,
        &metrics.node_model_loads,
        &metrics.node_dispatches,
    ] {
        vec.with_label_values(&["n"]);
    }
    metrics.node_probe_duration.with_label_values(&["n"]);
    metrics
        .model_load_seconds
        .with_label_values(&["sd_xl_base_1.0.safetensors"]);
    metrics.relay_events.with_label_values(&["progress"]);
    metrics
        .grpc_requests
        .with_label_values(&["SubmitJob", "ok"]);
    metrics
        .grpc_request_duration
        .with_label_values(&["SubmitJob"]);

    metrics
        .render()
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| {
            let (name, kind) = rest.split_once(' ')?;
            Some((name.to_owned(), kind.trim().to_owned()))
        })
        .collect()
}

/// Skips a quoted string starting at `i` (the opening quote); returns the index after it.
fn skip_string(chars: &[char], i: usize) -> usize {
    let quote = chars[i];
    let mut j = i + 1;
    while j < chars.len() && chars[j] != quote {
        // Backquoted strings have no escapes in PromQL.
        if chars[j] == '\\' && quote != '`' {
            j += 1;
        }
        j += 1;
    }
    j + 1
}

/// Skips a bracketed group starting at `i` (the opening bracket), strings included.
fn skip_group(chars: &[char], i: usize, open: char, close: char) -> usize {
    let mut depth = 0usize;
    let mut j = i;
    while j < chars.len() {
        match chars[j] {
            '"' | '\'' | '`' => {
                j = skip_string(chars, j);
                continue;
            }
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return j + 1;
                }
            }
            _ => {}
        }
        j += 1;
    }
    j
}

fn next_non_space(chars: &[char], mut i: usize) -> usize {
    while i < chars.len() && chars[i].is_whitespace() {
        i += 1;
    }
    i
}

/// Returns the metric names an expression selects, in order of appearance.
fn metric_names(expr: &str) -> Vec<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => i = skip_string(&chars, i),
            '{' => i = skip_group(&chars, i, '{', '}'),
            '[' => i = skip_group(&chars, i, '[', ']'),
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            // Grafana variables: `$node`, `${node}`, `$__rate_interval`.
            '$' => {
                i += 1;
                if chars.get(i) == Some(&'{') {
                    i = skip_group(&chars, i, '{', '}');
                } else {
                    while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                        i += 1;
                    }
                }
            }
            // Numbers and durations: `0.9`, `5m`, `1e3`, `0x1f`.
            c if c.is_ascii_digit() || c == '.' => {
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let after = next_non_space(&chars, i);
                let lower = word.to_ascii_lowercase();
                if LABEL_LIST_CLAUSES.contains(&lower.as_str()) {
                    if chars.get(after) == Some(&'(') {
                        i = skip_group(&chars, after, '(', ')');
                    }
                } else if NOT_METRICS.contains(&lower.as_str()) || chars.get(after) == Some(&'(') {
                    // A keyword, an aggregation or a function call: not a name.
                } else {
                    names.push(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// Reduces a Grafana template query to the PromQL inside it: `label_values(expr, label)` and
/// `query_result(expr)` hold an expression; `label_values(label)` holds none.
fn template_query_expr(query: &str) -> Option<String> {
    let query = query.trim();
    if let Some(inner) = query
        .strip_prefix("query_result(")
        .and_then(|q| q.strip_suffix(')'))
    {
        return Some(inner.to_owned());
    }
    let inner = query
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))?;
    // The label is the last top-level argument; a selector before it may hold commas.
    let chars: Vec<char> = inner.chars().collect();
    let mut last_comma = None;
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => {
                i = skip_string(&chars, i);
                continue;
            }
            '{' => {
                i = skip_group(&chars, i, '{', '}');
                continue;
            }
            '(' => {
                i = skip_group(&chars, i, '(', ')');
                continue;
            }
            ',' => last_comma = Some(i),
            _ => {}
        }
        i += 1;
    }
    last_comma.map(|at| chars[..at].iter().collect())
}

/// Collects every `expr` string in a Grafana dashboard, and the template queries.
fn dashboard_exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, child) in map {
                match (key.as_str(), child) {
                    ("expr", serde_json::Value::String(expr)) => out.push(expr.clone()),
                    ("templating", templating) => {
                        let list = templating["list"].as_array().cloned().unwrap_or_default();
                        for variable in list.iter().filter(|v| v["type"] == "query") {
                            let query = match &variable["query"] {
                                serde_json::Value::String(text) => text.clone(),
                                other => other["query"].as_str().unwrap_or_default().to_owned(),
                            };
                            out.extend(template_query_expr(&query));
                        }
                    }
                    _ => dashboard_exprs(child, out),
                }
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                dashboard_exprs(item, out);
            }
        }
        _ => {}
    }
}

/// Collects the `expr:` values of a Prometheus rule file, inline or as block scalars.
///
/// NOTE: a line-based reading rather than a YAML parser (the workspace has none); it handles
/// the forms the rule file uses: `expr: text`, quoted text, and `|`/`>` blocks.
fn rule_exprs(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut exprs = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        i += 1;
        let Some(value) = trimmed.strip_prefix("expr:") else {
            continue;
        };
        let value = value.trim();
        if value.starts_with('|') || value.starts_with('>') {
            let indent = line.len() - trimmed.len();
            let mut block = Vec::new();
            while i < lines.len() {
                let next = lines[i];
                let next_indent = next.len() - next.trim_start().len();
                if !next.trim().is_empty() && next_indent <= indent {
                    break;
                }
                block.push(next.trim());
                i += 1;
            }
            exprs.push(block.join("\n"));
        } else {
            exprs.push(value.trim_matches(|c| c == '"' || c == '\'').to_owned());
        }
    }
    exprs
}

/// Returns the names in `exprs` that are not series of a registered family, with their source.
fn unknown_names(
    families: &BTreeMap<String, String>,
    source: &str,
    exprs: &[String],
) -> Vec<String> {
    let mut unknown = BTreeSet::new();
    for expr in exprs {
        for name in metric_names(expr) {
            let is_family = families.contains_key(&name);
            let is_histogram_series = HISTOGRAM_SUFFIXES.iter().any(|suffix| {
                name.strip_suffix(suffix)
                    .and_then(|family| families.get(family))
                    .is_some_and(|kind| kind == "histogram")
            });
            if !is_family && !is_histogram_series {
                unknown.insert(format!("{source}: {name} (in `{}`)", expr.trim()));
            }
        }
    }
    unknown.into_iter().collect()
}

#[test]
fn every_family_is_rendered() {
    // Every family name written in metrics.rs must show up, or a vector family was added
    // without a child above and the checks below would wrongly call its name unknown.
    let source = read(&workspace_root().join("crates/coordinator/src/metrics.rs"));
    let declared: BTreeSet<String> = source
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|literal| {
            literal.starts_with("comfyfleet_")
                && literal
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
        .map(str::to_owned)
        .collect();
    let rendered: BTreeSet<String> = registered_families().into_keys().collect();
    assert!(
        declared.len() >= 20,
        "expected the family names of metrics.rs, found only {declared:?}"
    );
    let missing: Vec<_> = declared.difference(&rendered).collect();
    assert!(
        missing.is_empty(),
        "families declared in metrics.rs but not rendered by this test (create a child for \
         them in registered_families): {missing:?}"
    );
}

#[test]
fn lexer_finds_only_metric_names() {
    let expr = r#"histogram_quantile(0.9, sum by (node, le) (rate(comfyfleet_a_bucket{node=~"$node", x="y{z}"}[$__rate_interval])))
        / on (instance) group_left (node) max without (state) (comfyfleet_b offset 5m) > bool 0.5
        or vector(1) unless comfyfleet_c[5m:1m] and topk(3, comfyfleet_d)"#;
    assert_eq!(
        metric_names(expr),
        [
            "comfyfleet_a_bucket",
            "comfyfleet_b",
            "comfyfleet_c",
            "comfyfleet_d"
        ],
        "only selectors may be reported, never functions, keywords, labels or variables"
    );
    assert_eq!(
        template_query_expr(r#"label_values(comfyfleet_node_up{instance=~"a,b"}, node)"#)
            .as_deref(),
        Some(r#"comfyfleet_node_up{instance=~"a,b"}"#),
        "the label argument of label_values is not part of the expression"
    );
    assert_eq!(template_query_expr("label_values(node)"), None);
}

#[test]
fn unknown_and_misspelt_names_are_reported() {
    let families = registered_families();
    let exprs = vec![
        "rate(comfyfleet_jobs_submited_total[5m])".to_owned(),
        "comfyfleet_jobs_queued_bucket".to_owned(),
        "comfyfleet_job_queue_wait_seconds_count + comfyfleet_node_up".to_owned(),
    ];
    let unknown = unknown_names(&families, "example", &exprs);
    assert_eq!(
        unknown.len(),
        2,
        "a misspelt counter and a _bucket of a gauge must both be refused, the rest accepted: \
         {unknown:#?}"
    );
    assert!(unknown[0].contains("comfyfleet_jobs_queued_bucket"));
    assert!(unknown[1].contains("comfyfleet_jobs_submited_total"));
}

#[test]
fn dashboards_use_only_exported_metrics() {
    let families = registered_families();
    let dir = workspace_root().join("deploy/grafana");
    let mut dashboards: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: cannot list: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    dashboards.sort();
    assert!(
        !dashboards.is_empty(),
        "{}: no dashboard to check",
        dir.display()
    );

    let mut unknown = Vec::new();
    for path in &dashboards {
        let json: serde_json::Value = serde_json::from_str(&read(path))
            .unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()));
        let mut exprs = Vec::new();
        dashboard_exprs(&json, &mut exprs);
        assert!(
            exprs.len() >= 10,
            "{}: expected the panel queries, found {}",
            path.display(),
            exprs.len()
        );
        for expr in &exprs {
            assert!(
                !metric_names(expr).is_empty(),
                "{}: query `{expr}` names no metric; is the lexer skipping it?",
                path.display()
            );
        }
        unknown.extend(unknown_names(
            &families,
            &path.display().to_string(),
            &exprs,
        ));
    }
    assert!(
        unknown.is_empty(),
        "dashboard queries name metrics the coordinator does not export:\n{}",
        unknown.join("\n")
    );
}

#[test]
fn alert_rules_use_only_exported_metrics() {
    let families = registered_families();
    let path = workspace_root().join("deploy/prometheus/rules.yml");
    let text = read(&path);
    let exprs = rule_exprs(&text);
    let num_rules = text
        .lines()
        .filter(|line| {
            let line = line.trim_start();
            line.starts_with("- alert:") || line.starts_with("- record:")
        })
        .count();
    assert!(num_rules > 0, "{}: no rule found", path.display());
    assert_eq!(
        exprs.len(),
        num_rules,
        "{}: every rule must yield exactly one expression",
        path.display()
    );
    for expr in &exprs {
        assert!(
            !metric_names(expr).is_empty(),
            "{}: rule `{expr}` names no metric",
            path.display()
        );
    }
    let unknown = unknown_names(&families, &path.display().to_string(), &exprs);
    assert!(
        unknown.is_empty(),
        "alert rules name metrics the coordinator does not export:\n{}",
        unknown.join("\n")
    );
}

#[test]
fn shipped_configuration_files_load_and_validate() {
    let root = workspace_root().join("deploy");
    let mut files = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: cannot list: {e}", dir.display()))
        {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|ext| ext == "toml") {
                files.push(path);
            }
        }
    }
    files.sort();
    assert!(
        files.len() >= 3,
        "expected the image, base and overlay configurations under {}, found {files:?}",
        root.display()
    );
    for path in &files {
        let config = Config::from_toml_str(&read(path), path)
            .unwrap_or_else(|e| panic!("{}: does not load: {e}", path.display()));
        if let Err(e) = config.validate() {
            panic!("{}: does not validate: {e}", path.display());
        }
        // In a container the listeners must not be bound to loopback, or nothing reaches them.
        assert!(
            config.grpc_listen.ip().is_unspecified() && config.http_listen.ip().is_unspecified(),
            "{}: a deployed coordinator must listen on all interfaces",
            path.display()
        );
        assert_eq!(
            config.data_dir,
            Path::new("/data"),
            "{}: the journal must live on the /data volume",
            path.display()
        );
    }
}
