//! Tests of configuration loading: defaults, TOML, environment overrides and validation.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use coordinator::config::{Config, ConfigError, LogFormat};

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn problems_of(config: &Config) -> Vec<String> {
    match config.validate() {
        Err(ConfigError::Invalid { problems }) => problems,
        other => panic!("expected validation problems, got {other:?}"),
    }
}

#[test]
fn empty_file_gives_documented_defaults() {
    let config = Config::from_toml_str("", Path::new("empty.toml")).expect("parses");
    assert_eq!(config, Config::default());
    assert_eq!(
        config.grpc_listen,
        "127.0.0.1:50051".parse::<SocketAddr>().expect("addr")
    );
    assert_eq!(
        config.http_listen,
        "127.0.0.1:8188".parse::<SocketAddr>().expect("addr")
    );
    assert_eq!(config.probe.interval, Duration::from_secs(1));
    assert_eq!(config.dispatch.slots_per_node, 2);
    assert_eq!(config.dispatch.max_attempts, 3);
    assert_eq!(config.retention, Duration::from_secs(7 * 86_400));
    assert_eq!(config.limits.max_workflow_bytes, 8 * 1024 * 1024);
    config.validate().expect("defaults are valid");
}

#[test]
fn toml_file_sets_nodes_durations_and_limits() {
    let text = r#"
        grpc_listen = "0.0.0.0:6000"
        log_format = "json"
        retention = "3days"

        [probe]
        interval = "500ms"
        jitter = "50ms"

        [limits]
        max_workflow_bytes = 1048576

        [[nodes]]
        name = "gpu-1"
        url = "http://127.0.0.1:8189"
        labels = { gpu = "a100" }

        [[nodes]]
        name = "gpu-2"
        url = "http://127.0.0.1:8190/"
    "#;
    let config = Config::from_toml_str(text, Path::new("fleet.toml")).expect("parses");
    assert_eq!(config.grpc_listen.port(), 6000);
    assert_eq!(config.log_format, LogFormat::Json);
    assert_eq!(config.retention, Duration::from_secs(3 * 86_400));
    assert_eq!(config.probe.interval, Duration::from_millis(500));
    assert_eq!(
        config.probe.timeout,
        Duration::from_secs(2),
        "unset keys keep defaults"
    );
    assert_eq!(config.limits.max_workflow_bytes, 1_048_576);
    assert_eq!(config.nodes.len(), 2);
    assert_eq!(
        config.nodes[0].labels.get("gpu").map(String::as_str),
        Some("a100")
    );
    assert_eq!(config.nodes[1].url.as_str(), "http://127.0.0.1:8190/");
    config.validate().expect("valid");
}

#[test]
fn unknown_keys_and_bad_durations_are_refused_with_their_place() {
    let err = Config::from_toml_str("grpc_listn = \"x\"", Path::new("a.toml")).expect_err("typo");
    assert!(
        err.to_string().contains("grpc_listn"),
        "names the unknown key: {err}"
    );
    let err = Config::from_toml_str("[probe]\ninterval = \"fast\"", Path::new("b.toml"))
        .expect_err("bad duration");
    let text = err.to_string();
    assert!(
        text.starts_with("config b.toml:") && text.contains("fast"),
        "got {text}"
    );
}

#[test]
fn environment_overrides_file_values() {
    let mut config =
        Config::from_toml_str("[probe]\ninterval = \"3s\"", Path::new("f.toml")).expect("parses");
    let unknown = config
        .apply_env(env(&[
            ("COMFYFLEET_GRPC_LISTEN", "127.0.0.1:7000"),
            ("COMFYFLEET_PROBE_INTERVAL", "250ms"),
            ("COMFYFLEET_LIMITS_MAX_QUEUED_JOBS_PER_TENANT", "7"),
            ("COMFYFLEET_LIMITS_MAX_QUEUED_JOBS", "70"),
            ("COMFYFLEET_EVENTS_RETENTION", "1m"),
            ("COMFYFLEET_LOG_FORMAT", "json"),
            (
                "COMFYFLEET_NODES",
                "gpu-1=http://127.0.0.1:9001, gpu-2=http://127.0.0.1:9002",
            ),
            ("COMFYFLEET_SHARED_DIR", "/elsewhere"),
            ("PATH", "/usr/bin"),
        ]))
        .expect("applies");
    assert_eq!(config.grpc_listen.port(), 7000);
    assert_eq!(config.probe.interval, Duration::from_millis(250));
    assert_eq!(config.limits.max_queued_jobs_per_tenant, 7);
    assert_eq!(config.limits.max_queued_jobs, 70);
    assert_eq!(config.events.retention, Duration::from_secs(60));
    assert_eq!(config.log_format, LogFormat::Json);
    let names: Vec<_> = config.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["gpu-1", "gpu-2"]);
    assert_eq!(
        unknown,
        ["COMFYFLEET_SHARED_DIR"],
        "only prefixed, unmatched names are reported"
    );
    config.validate().expect("valid");
}

#[test]
fn bad_environment_values_name_the_variable() {
    let mut config = Config::default();
    let err = config
        .apply_env(env(&[("COMFYFLEET_DISPATCH_SLOTS_PER_NODE", "two")]))
        .expect_err("not a number");
    assert!(
        err.to_string()
            .contains("COMFYFLEET_DISPATCH_SLOTS_PER_NODE"),
        "got {err}"
    );
    let err = config
        .apply_env(env(&[("COMFYFLEET_PROBE_TIMEOUT", "soon")]))
        .expect_err("not a duration");
    assert!(err.to_string().contains("soon"), "got {err}");
    let err = config
        .apply_env(env(&[("COMFYFLEET_NODES", "gpu-1")]))
        .expect_err("no url");
    assert!(err.to_string().contains("COMFYFLEET_NODES"), "got {err}");
    assert_eq!(
        config,
        Config::default(),
        "a failed override changes nothing"
    );
}

/// Collects `PREFIX_KEY` = value for every scalar under `value`, through nested sections
/// (`[placement.expected_finish]` included); arrays (node lists) are not addressable by key.
fn scalar_variables(prefix: &str, value: &toml::Value, vars: &mut Vec<(String, String)>) {
    match value {
        toml::Value::Table(section) => {
            for (key, inner) in section {
                scalar_variables(&format!("{prefix}_{}", key.to_uppercase()), inner, vars);
            }
        }
        toml::Value::Array(_) => {}
        scalar => vars.push((
            prefix.to_owned(),
            scalar.as_str().map_or(scalar.to_string(), str::to_owned),
        )),
    }
}

#[test]
fn every_scalar_key_has_an_environment_variable() {
    // Derive each key's variable name from the serialised defaults and set it to its own value:
    // every one must be recognised.
    let tree = toml::Value::try_from(Config::default()).expect("serialises");
    let mut vars = Vec::new();
    scalar_variables("COMFYFLEET", &tree, &mut vars);
    assert!(vars.len() >= 20, "found {} keys", vars.len());
    let mut config = Config::default();
    let unknown = config.apply_env(vars).expect("every default value applies");
    assert!(unknown.is_empty(), "variables without a key: {unknown:?}");
    assert_eq!(
        config,
        Config::default(),
        "setting each key to its default changes nothing"
    );
}

#[test]
fn validation_reports_every_problem() {
    let text = r#"
        [probe]
        interval = "1s"
        jitter = "2s"

        [dispatch]
        slots_per_node = 0

        [limits]
        max_queued_jobs = 10
        max_queued_jobs_per_tenant = 20

        [[nodes]]
        name = "gpu-1"
        url = "http://127.0.0.1:8189"

        [[nodes]]
        name = "gpu-1"
        url = "ftp://127.0.0.1:8190"

        [[nodes]]
        name = "bad name"
        url = "http://127.0.0.1:8191/?x=1"
    "#;
    let config = Config::from_toml_str(text, Path::new("bad.toml")).expect("parses");
    let problems = problems_of(&config);
    let expect = [
        "node gpu-1: name used more than once",
        "node gpu-1: url must be http or https",
        "node \"bad name\": name must be",
        "node bad name: url must not have a query",
        "probe.jitter: must be smaller",
        "dispatch.slots_per_node: must be at least 1",
        "limits.max_queued_jobs_per_tenant: must not exceed",
    ];
    for wanted in expect {
        assert!(
            problems.iter().any(|p| p.starts_with(wanted)),
            "missing problem {wanted:?} in {problems:?}"
        );
    }
    assert_eq!(
        problems.len(),
        expect.len(),
        "no extra problems: {problems:?}"
    );
}

#[test]
fn a_url_that_does_not_parse_is_refused_at_load() {
    let text = "[[nodes]]\nname = \"gpu-1\"\nurl = \"not a url\"";
    let err = Config::from_toml_str(text, Path::new("n.toml")).expect_err("bad url");
    assert!(err.to_string().contains("n.toml"), "got {err}");
}

#[test]
fn load_reads_a_file_and_validates_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("coordinator.toml");
    std::fs::write(&path, "[dispatch]\nmax_attempts = 5\n").expect("write");
    let (config, _) = Config::load(Some(&path)).expect("loads");
    assert_eq!(config.dispatch.max_attempts, 5);

    std::fs::write(&path, "[dispatch]\nmax_attempts = 0\n").expect("write");
    assert!(matches!(
        Config::load(Some(&path)),
        Err(ConfigError::Invalid { .. })
    ));
    let missing = dir.path().join("missing.toml");
    assert!(matches!(
        Config::load(Some(&missing)),
        Err(ConfigError::Read { .. })
    ));
}
