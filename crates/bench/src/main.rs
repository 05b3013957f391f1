//! `comfyfleet-bench`: runs the benchmarks and prints their figures.
//!
//! Subcommands print Markdown on stdout and write the full result as JSON (and, for
//! placement, an SVG chart). Progress and warnings go to stderr (`COMFYFLEET_BENCH_LOG` sets
//! the filter). `--quick` runs a tiny placement scenario and a 50-job overhead run so an
//! automated check can keep the harness working in well under a minute.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use bench::BenchError;
use bench::overhead::{self, OverheadOptions};
use bench::placement;
use bench::probe::{self, Probe};
use bench::report;
use bench::scale::{self, MemoryOptions, ProbeOptions, ScaleOptions, ThroughputOptions};
use bench::scenario::{Scenario, factor_label};
use bench::sweep::{self, Sweep};
use clap::{Parser, Subcommand};
use scheduler::PolicyKind;

mod soak;

/// The built-in scenario of `--quick`.
const QUICK_SCENARIO: &str = include_str!("../scenarios/quick.toml");

/// Benchmarks of the comfyfleet coordinator against simulated ComfyUI nodes.
#[derive(Debug, Parser)]
#[command(name = "comfyfleet-bench", version)]
struct Cli {
    /// Run the quick smoke benchmark (a tiny scenario under two policies and 50 overhead jobs)
    /// and write `quick.json` into --out.
    #[arg(long)]
    quick: bool,
    /// Output directory of --quick.
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Dispatch overhead and relay latency with zero-work nodes at fixed offered rates.
    Overhead {
        /// Offered jobs per second; repeatable (e.g. --rate 100 --rate 1000).
        #[arg(long = "rate", default_values_t = [100.0, 1000.0])]
        rates: Vec<f64>,
        /// Measured jobs per rate.
        #[arg(long, default_value_t = 2000)]
        jobs: usize,
        /// Simulated nodes.
        #[arg(long, default_value_t = 4)]
        nodes: usize,
        /// Unmeasured warm-up jobs, run one at a time first.
        #[arg(long, default_value_t = 20)]
        warmup: usize,
        /// Seconds allowed per rate.
        #[arg(long, default_value_t = 120)]
        deadline: u64,
        /// Write the full result as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Replays a scenario under each placement policy and compares them.
    Placement {
        /// Scenario files (TOML); repeatable.
        #[arg(long = "scenario", required = true)]
        scenarios: Vec<PathBuf>,
        /// Policies to compare, comma-separated [default: all five].
        #[arg(long, value_delimiter = ',')]
        policies: Vec<String>,
        /// Instead of each scenario as written, replay it with its arrival rate multiplied by
        /// each of these factors (comma-separated or repeated, e.g. `0.5,0.75,1`; 0.01 to 10),
        /// writing NAME-xFACTOR.{json,md,svg} per load and NAME-sweep.{json,md,svg} comparing
        /// them. Needs least-loaded among the policies.
        #[arg(long = "rate-scale", value_delimiter = ',')]
        rate_scales: Vec<f64>,
        /// Directory for NAME.json, NAME.md and NAME.svg.
        #[arg(long, default_value = "bench-results")]
        out: PathBuf,
    },
    /// Probe cost of a large fleet, memory of a deep queue and sustained throughput, on the
    /// `comfyfleet serve` binary as a separate process.
    Scale {
        /// Which part to run.
        #[arg(long, value_enum, default_value_t = ScalePart::All)]
        only: ScalePart,
        /// Emulated nodes of the probe-cost part.
        #[arg(long, default_value_t = 1000)]
        nodes: usize,
        /// The coordinator's probe interval, in seconds.
        #[arg(long, default_value_t = 1.0)]
        probe_interval: f64,
        /// Seconds allowed for every node to come up.
        #[arg(long, default_value_t = 180)]
        ready_timeout: u64,
        /// Seconds between the fleet being up and the measured window.
        #[arg(long, default_value_t = 15)]
        settle: u64,
        /// Seconds of the measured window.
        #[arg(long, default_value_t = 45)]
        window: u64,
        /// Jobs of the queue-memory part.
        #[arg(long, default_value_t = 100_000)]
        jobs: usize,
        /// Submissions in flight at once.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Leave the jobs queued at the end instead of cancelling them.
        #[arg(long)]
        no_cancel: bool,
        /// Zero-work nodes of the throughput part.
        #[arg(long, default_value_t = 8)]
        throughput_nodes: usize,
        /// Clients of the throughput part, one job in flight each.
        #[arg(long, default_value_t = 64)]
        throughput_clients: usize,
        /// Seconds of the throughput part's measured window (after 3 s of warm-up).
        #[arg(long, default_value_t = 10)]
        throughput_window: u64,
        /// The `comfyfleet` binary [default: COMFYFLEET_BIN, else beside this one].
        #[arg(long)]
        coordinator_bin: Option<PathBuf>,
        /// Directory for scale.json, scale.md, the generated configurations and the
        /// coordinators' logs.
        #[arg(long, default_value = "bench-results")]
        out: PathBuf,
    },
    /// Minutes of steady load while nodes and the coordinator fail; checks no job is lost.
    Soak {
        /// Minutes of load (then a drain).
        #[arg(long)]
        minutes: f64,
        /// Simulated nodes.
        #[arg(long, default_value_t = 8)]
        nodes: usize,
        /// Offered jobs per second [default: 70% of the estimated capacity].
        #[arg(long)]
        rate: Option<f64>,
        /// Seed of the load and the faults.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Directory for soak.json and the coordinator's logs.
        #[arg(long, default_value = "bench-results")]
        out: PathBuf,
    },
}

/// The parts of `scale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ScalePart {
    /// Probe cost, then queue memory, then throughput.
    All,
    /// Probe cost only.
    Probe,
    /// Queue memory only.
    Memory,
    /// Sustained throughput only.
    Throughput,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let probe = Probe::new();
    // The soak counts prompt starts across node crashes, so it installs its own subscriber.
    let installed = if matches!(cli.command, Some(Command::Soak { .. })) {
        soak::install_tracing()
    } else {
        probe::install(&probe)
    };
    if !installed {
        eprintln!("error: a tracing subscriber was already installed");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli, probe)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, probe: Probe) -> Result<(), BenchError> {
    if cli.quick {
        if cli.command.is_some() {
            return Err(BenchError::Invalid(
                "--quick runs its own benchmarks; give it without a subcommand".into(),
            ));
        }
        return quick(&cli.out, &probe).await;
    }
    match cli.command {
        None => Err(BenchError::Invalid(
            "give a subcommand (overhead, placement, soak, scale) or --quick; see --help".into(),
        )),
        Some(Command::Overhead {
            rates,
            jobs,
            nodes,
            warmup,
            deadline,
            json,
        }) => {
            let mut reports = Vec::new();
            for rate in rates {
                eprintln!("overhead: {jobs} jobs at {rate} jobs/s on {nodes} zero-work nodes");
                let options = OverheadOptions {
                    rate,
                    jobs,
                    nodes,
                    warmup,
                    deadline: Duration::from_secs(deadline),
                };
                reports.push(overhead::run(&options, &probe).await?);
            }
            println!("{}", overhead::markdown(&reports));
            if let Some(path) = json {
                write(&path, &serde_json::to_vec_pretty(&reports)?)?;
            }
            Ok(())
        }
        Some(Command::Scale {
            only,
            nodes,
            probe_interval,
            ready_timeout,
            settle,
            window,
            jobs,
            concurrency,
            no_cancel,
            throughput_nodes,
            throughput_clients,
            throughput_window,
            coordinator_bin,
            out,
        }) => {
            if !(probe_interval.is_finite() && probe_interval > 0.0) {
                return Err(BenchError::Invalid(
                    "--probe-interval must be a positive number of seconds".into(),
                ));
            }
            let options = ScaleOptions {
                binary: scale::coordinator_binary(coordinator_bin.as_deref())?,
                work_dir: out.clone(),
                probe: matches!(only, ScalePart::All | ScalePart::Probe).then(|| ProbeOptions {
                    nodes,
                    interval: Duration::from_secs_f64(probe_interval),
                    ready_timeout: Duration::from_secs(ready_timeout),
                    settle: Duration::from_secs(settle),
                    window: Duration::from_secs(window),
                }),
                memory: matches!(only, ScalePart::All | ScalePart::Memory).then_some(
                    MemoryOptions {
                        jobs,
                        concurrency,
                        channels: 4,
                        cancel: !no_cancel,
                    },
                ),
                throughput: matches!(only, ScalePart::All | ScalePart::Throughput).then_some(
                    ThroughputOptions {
                        nodes: throughput_nodes,
                        concurrency: throughput_clients,
                        warmup: Duration::from_secs(3),
                        window: Duration::from_secs(throughput_window),
                    },
                ),
            };
            let report = scale::run(&options).await?;
            let markdown = scale::markdown(&report);
            println!("{markdown}");
            write(
                &out.join("scale.json"),
                &serde_json::to_vec_pretty(&report)?,
            )?;
            write(&out.join("scale.md"), markdown.as_bytes())?;
            eprintln!("wrote {}/scale.{{json,md}}", out.display());
            Ok(())
        }
        Some(Command::Soak {
            minutes,
            nodes,
            rate,
            seed,
            out,
        }) => {
            let options = soak::SoakOptions {
                minutes,
                nodes,
                rate,
                seed,
                out,
                drain_timeout: Duration::from_secs(120),
            };
            let report = soak::run(&options).await?;
            println!("{}", soak::markdown(&report));
            if report.lost > 0 || report.prompts_started_twice > 0 {
                return Err(BenchError::Invalid(format!(
                    "soak: {} jobs lost, {} prompts run twice",
                    report.lost, report.prompts_started_twice
                )));
            }
            Ok(())
        }
        Some(Command::Placement {
            scenarios,
            policies,
            rate_scales,
            out,
        }) => {
            let kinds = parse_policies(&policies)?;
            if !rate_scales.is_empty() && !kinds.contains(&PolicyKind::LeastLoaded) {
                return Err(BenchError::Invalid(
                    "--rate-scale compares each policy with least-loaded at every load; \
                     add least-loaded to --policies"
                        .into(),
                ));
            }
            let mut labels: Vec<String> = rate_scales.iter().map(|f| factor_label(*f)).collect();
            labels.sort();
            if let Some(pair) = labels.windows(2).find(|pair| pair[0] == pair[1]) {
                return Err(BenchError::Invalid(format!(
                    "--rate-scale: two factors both read {} (factors keep two decimals)",
                    pair[0]
                )));
            }
            prepare_out(&out)?;
            let scenarios = scenarios
                .iter()
                .map(|path| Scenario::load(path))
                .collect::<Result<Vec<_>, _>>()?;
            // Check every factor against every scenario before the first run, so a bad one
            // does not end a long sweep halfway.
            for scenario in &scenarios {
                for factor in &rate_scales {
                    scenario.with_rate_scale(*factor)?;
                }
            }
            for scenario in &scenarios {
                if rate_scales.is_empty() {
                    let comparison = placement::compare(scenario, &kinds, &probe).await?;
                    write_comparison(&out, &comparison)?;
                    continue;
                }
                let mut sweep = Sweep::new(scenario);
                for factor in &rate_scales {
                    let scaled = scenario.with_rate_scale(*factor)?;
                    let comparison = placement::compare(&scaled, &kinds, &probe).await?;
                    write_comparison(&out, &comparison)?;
                    sweep.push(*factor, &scaled, &comparison);
                }
                let markdown = sweep::markdown(&sweep);
                println!("{markdown}");
                write_report(
                    &out,
                    &format!("{}-sweep", scenario.name),
                    &serde_json::to_vec_pretty(&sweep)?,
                    &markdown,
                    &sweep::svg(&sweep),
                )?;
            }
            Ok(())
        }
    }
}

/// Prints one comparison and writes its JSON, Markdown and SVG under `out`.
fn write_comparison(out: &Path, comparison: &placement::Comparison) -> Result<(), BenchError> {
    let markdown = report::markdown(comparison);
    println!("{markdown}");
    write_report(
        out,
        &comparison.scenario,
        &serde_json::to_vec_pretty(comparison)?,
        &markdown,
        &report::svg(comparison),
    )
}

/// Writes `NAME.json`, `NAME.md` and `NAME.svg` under `out`. The name is joined, not given an
/// extension: `slow-gpu-x0.5` must not lose its `.5`.
fn write_report(
    out: &Path,
    name: &str,
    json: &[u8],
    markdown: &str,
    svg: &str,
) -> Result<(), BenchError> {
    write(&out.join(format!("{name}.json")), json)?;
    write(&out.join(format!("{name}.md")), markdown.as_bytes())?;
    write(&out.join(format!("{name}.svg")), svg.as_bytes())?;
    eprintln!("wrote {}.{{json,md,svg}}", out.join(name).display());
    Ok(())
}

/// Makes `out` and checks that files can be written there, before the first run rather than
/// after minutes of it.
fn prepare_out(out: &Path) -> Result<(), BenchError> {
    let failed = |why: String| BenchError::Invalid(format!("--out {}: {why}", out.display()));
    if out.exists() && !out.is_dir() {
        return Err(failed("exists and is not a directory".into()));
    }
    std::fs::create_dir_all(out).map_err(|e| failed(format!("cannot create it: {e}")))?;
    let probe = out.join(format!(".comfyfleet-bench-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|e| failed(format!("cannot write in it: {e}")))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

fn parse_policies(names: &[String]) -> Result<Vec<PolicyKind>, BenchError> {
    if names.is_empty() {
        return Ok(PolicyKind::ALL.to_vec());
    }
    let mut kinds: Vec<PolicyKind> = Vec::with_capacity(names.len());
    for name in names {
        let kind = name
            .parse::<PolicyKind>()
            .map_err(|error| BenchError::Invalid(format!("--policies: {error}")))?;
        if kinds.contains(&kind) {
            return Err(BenchError::Invalid(format!(
                "--policies: {name} is named twice"
            )));
        }
        kinds.push(kind);
    }
    Ok(kinds)
}

async fn quick(out: &Path, probe: &Probe) -> Result<(), BenchError> {
    let scenario = Scenario::parse(QUICK_SCENARIO, Path::new("scenarios/quick.toml"))?;
    let comparison = placement::compare(
        &scenario,
        &[PolicyKind::LeastLoaded, PolicyKind::LeastLoadedAffinity],
        probe,
    )
    .await?;
    println!("{}", report::markdown(&comparison));
    let options = OverheadOptions {
        rate: 100.0,
        jobs: 50,
        nodes: 2,
        warmup: 2,
        deadline: Duration::from_secs(30),
    };
    let overhead = overhead::run(&options, probe).await?;
    println!("{}", overhead::markdown(std::slice::from_ref(&overhead)));
    let result = serde_json::json!({"placement": comparison, "overhead": overhead});
    write(
        &out.join("quick.json"),
        &serde_json::to_vec_pretty(&result)?,
    )?;
    write(&out.join("quick.svg"), report::svg(&comparison).as_bytes())?;
    Ok(())
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), BenchError> {
    if let Some(parent) = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent).map_err(|source| BenchError::Output {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    std::fs::write(path, bytes).map_err(|source| BenchError::Output {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["comfyfleet-bench", "overhead", "--rate", "100"])
            .expect("overhead parses");
        assert!(
            matches!(cli.command, Some(Command::Overhead { ref rates, .. }) if rates == &[100.0])
        );
    }

    #[test]
    fn scale_parses_its_parts_and_defaults_to_the_targets() {
        let cli = Cli::try_parse_from(["comfyfleet-bench", "scale", "--only", "memory"])
            .expect("scale parses");
        assert!(matches!(
            cli.command,
            Some(Command::Scale {
                only: ScalePart::Memory,
                nodes: 1000,
                jobs: 100_000,
                ..
            })
        ));
        assert!(Cli::try_parse_from(["comfyfleet-bench", "scale", "--only", "cpu"]).is_err());
        let cli = Cli::try_parse_from(["comfyfleet-bench", "scale", "--only", "throughput"])
            .expect("scale parses");
        assert!(matches!(
            cli.command,
            Some(Command::Scale {
                only: ScalePart::Throughput,
                throughput_nodes: 8,
                throughput_clients: 64,
                ..
            })
        ));
    }

    #[test]
    fn placement_takes_rate_scales_comma_separated_or_repeated() {
        let cli = Cli::try_parse_from([
            "comfyfleet-bench",
            "placement",
            "--scenario",
            "s.toml",
            "--rate-scale",
            "0.5,0.75",
            "--rate-scale",
            "1",
        ])
        .expect("placement parses");
        assert!(matches!(
            cli.command,
            Some(Command::Placement { ref rate_scales, .. }) if rate_scales == &[0.5, 0.75, 1.0]
        ));
        let cli = Cli::try_parse_from(["comfyfleet-bench", "placement", "--scenario", "s.toml"])
            .expect("placement parses");
        assert!(matches!(
            cli.command,
            Some(Command::Placement { ref rate_scales, .. }) if rate_scales.is_empty()
        ));
        assert!(
            Cli::try_parse_from([
                "comfyfleet-bench",
                "placement",
                "--scenario",
                "s.toml",
                "--rate-scale",
                "half",
            ])
            .is_err()
        );
    }

    #[test]
    fn policies_parse_by_name_and_default_to_all() {
        assert_eq!(
            parse_policies(&[]).expect("default"),
            PolicyKind::ALL.to_vec()
        );
        let picked = parse_policies(&["round-robin".into()]).expect("known name");
        assert_eq!(picked, vec![PolicyKind::RoundRobin]);
        assert!(parse_policies(&["fastest".into()]).is_err());
        let twice = parse_policies(&["least-loaded".into(), "least-loaded".into()])
            .expect_err("a policy named twice");
        assert!(twice.to_string().contains("named twice"), "{twice}");
    }

    #[test]
    fn quick_scenario_is_valid() {
        let scenario = Scenario::parse(QUICK_SCENARIO, Path::new("quick.toml")).expect("valid");
        assert!(scenario.total_jobs() <= 20, "the quick scenario stays tiny");
    }
}
