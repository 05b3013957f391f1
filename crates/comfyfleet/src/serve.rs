//! `comfyfleet serve` and `comfyfleet up`: running the coordinator.
//!
//! Both load the configuration (defaults, file, environment, flags), start logging on stderr
//! and run until SIGINT or SIGTERM. `up` also starts simulated GPUs and prints a banner on
//! stdout with the commands to try; the banner is built by [`crate::banner`] from the
//! addresses actually bound. A listen address that cannot be bound is reported with the flag
//! that changes it, because the first thing a new user usually meets is a port already taken
//! (the HTTP default, 8188, is also ComfyUI's own port).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use coordinator::config::{Config, LogFormat, NodeConfig};
use coordinator::{Coordinator, StartError, StartOptions};
use tracing::{info, warn};

/// Flags shared by `serve` and `up`; each overrides the file and the environment.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A TOML configuration file.
    #[arg(long, env = "COMFYFLEET_CONFIG")]
    pub config: Option<PathBuf>,
    /// A ComfyUI node as NAME=URL; repeatable. Replaces the file's node list.
    #[arg(long = "node", value_parser = parse_node)]
    pub nodes: Vec<(String, String)>,
    /// Address of the gRPC API [default: 127.0.0.1:50051].
    #[arg(long)]
    pub grpc_listen: Option<SocketAddr>,
    /// Address of the HTTP surface: metrics, health, ComfyUI API [default: 127.0.0.1:8188].
    #[arg(long)]
    pub http_listen: Option<SocketAddr>,
    /// Directory for the job journal [default: comfyfleet-data].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Log format: text or json [default: text].
    #[arg(long)]
    pub log_format: Option<String>,
    /// Placement policy: least-loaded, round-robin, random, least-loaded-affinity,
    /// expected-finish [default: `placement.kind` of the configuration, expected-finish].
    #[arg(long)]
    pub policy: Option<String>,
}

/// Flags of `up` only.
#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Number of simulated GPU nodes (ignored when --node is given).
    #[arg(long = "sim", default_value_t = 3)]
    pub num_sims: usize,
    /// Multiplies the simulated GPUs' durations (0.1 runs ten times faster).
    #[arg(long, default_value_t = 1.0)]
    pub time_scale: f64,
}

fn parse_node(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, url)) if !name.is_empty() && !url.is_empty() => {
            Ok((name.to_owned(), url.to_owned()))
        }
        _ => Err(format!(
            "node {text:?} is not NAME=URL (e.g. gpu-0=http://10.0.0.5:8188)"
        )),
    }
}

/// Loads the configuration: defaults, then the file, then `COMFYFLEET_*`, then flags.
/// The loaded configuration, the placement policy and the `COMFYFLEET_*` variables that are
/// not configuration keys (to be warned about once logging runs).
type Loaded = (Config, Option<scheduler::PolicyConfig>, Vec<String>);

fn load_config(args: &ServeArgs) -> Result<Loaded> {
    let (mut config, unknown) =
        Config::load(args.config.as_deref()).context("cannot load the configuration")?;
    // These two are read by the binary itself, not by the configuration.
    // Reported once logging is set up, so that JSON logs stay one object per line.
    let unknown: Vec<String> = unknown
        .into_iter()
        .filter(|name| {
            name != "COMFYFLEET_CONFIG" && name != "COMFYFLEET_LOG" && name != "COMFYFLEET_ADDR"
        })
        .collect();
    if !args.nodes.is_empty() {
        config.nodes = args
            .nodes
            .iter()
            .map(|(name, url)| {
                let url = url
                    .parse()
                    .with_context(|| format!("node {name}: bad URL {url:?}"))?;
                Ok(NodeConfig {
                    name: name.clone(),
                    url,
                    labels: Default::default(),
                })
            })
            .collect::<Result<_>>()?;
    }
    if let Some(addr) = args.grpc_listen {
        config.grpc_listen = addr;
    }
    if let Some(addr) = args.http_listen {
        config.http_listen = addr;
    }
    if let Some(dir) = &args.data_dir {
        config.data_dir = dir.clone();
    }
    if let Some(format) = &args.log_format {
        config.log_format = match format.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => bail!("--log-format {other:?}: expected text or json"),
        };
    }
    // The flag picks the policy; its settings still come from `[placement]`.
    let mut policy = config.placement.clone();
    if let Some(name) = &args.policy {
        policy.kind = name
            .parse()
            .map_err(|error| anyhow::anyhow!("--policy: {error}"))?;
    }
    let policy = Some(policy);
    Ok((config, policy, unknown))
}

fn init_logging(format: LogFormat, unknown_variables: &[String]) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("COMFYFLEET_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a person at a terminal: escape codes in a log file or collector are noise.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
    for name in unknown_variables {
        warn!(variable = %name, "environment variable is not a configuration key; ignored");
    }
}

/// Starts the coordinator, turning a listen failure into a message that names the address,
/// what it was for and the flag that changes it.
async fn start(config: Config, options: StartOptions) -> Result<Coordinator> {
    let grpc_listen = config.grpc_listen;
    let http_listen = config.http_listen;
    match Coordinator::start(config, options).await {
        Ok(coordinator) => Ok(coordinator),
        Err(StartError::Listen { addr, source }) => {
            let (what, flag) = if addr == grpc_listen {
                ("the gRPC API", "--grpc-listen")
            } else {
                (
                    "the HTTP port (metrics, health, ComfyUI API)",
                    "--http-listen",
                )
            };
            let hint = if source.kind() == std::io::ErrorKind::AddrInUse {
                if addr == http_listen && addr.port() == 8188 {
                    "; another program holds it (a local ComfyUI listens on 8188 too)"
                } else {
                    "; another program (perhaps another comfyfleet) holds it"
                }
            } else {
                ""
            };
            bail!(
                "cannot listen on {addr} for {what}: {source}{hint}. \
                 Choose another address with {flag} ADDR (for example {flag} 127.0.0.1:0 \
                 picks a free port)"
            )
        }
        Err(error) => Err(anyhow::Error::new(error).context("cannot start the coordinator")),
    }
}

/// Descriptors the coordinator needs besides its nodes: listeners, the journal, clients.
const BASE_DESCRIPTORS: u64 = 256;
/// Descriptors per node: a keep-alive HTTP connection, the event WebSocket, and room for a
/// dispatch or output read in parallel.
const DESCRIPTORS_PER_NODE: u64 = 3;

/// Raises the soft limit on open files (`RLIMIT_NOFILE`) to the hard limit and logs it.
///
/// The coordinator keeps at least two sockets open per node (HTTP keep-alive and the event
/// WebSocket) plus one per client, so the soft limit many systems give a login shell (1024)
/// stops a fleet of a few hundred nodes with "too many open files" while the hard limit,
/// which an unprivileged process may raise its soft limit up to, is far higher. Returns the
/// (soft, hard) limits in force afterwards, or `None` when they cannot be read or changed
/// (then the inherited limit stays, with a warning).
pub fn raise_open_file_limit(nodes: usize) -> Option<(u64, u64)> {
    let (soft_before, hard) = match rlimit::Resource::NOFILE.get() {
        Ok(limits) => limits,
        Err(error) => {
            warn!(%error, "cannot read the open-file limit");
            return None;
        }
    };
    let soft = match rlimit::increase_nofile_limit(hard) {
        Ok(soft) => soft,
        Err(error) => {
            warn!(%error, soft = soft_before, hard, "cannot raise the open-file limit");
            soft_before
        }
    };
    let needed = BASE_DESCRIPTORS + DESCRIPTORS_PER_NODE * nodes as u64;
    if soft < needed {
        warn!(
            soft,
            hard,
            nodes,
            needed,
            "the open-file limit is low for this many nodes; raise the hard limit (ulimit -Hn, LimitNOFILE=)"
        );
    } else if soft != soft_before {
        info!(from = soft_before, to = soft, "raised the open-file limit");
    }
    Some((soft, hard))
}

/// `comfyfleet serve`.
pub async fn serve(args: ServeArgs) -> Result<u8> {
    let (config, policy, unknown) = load_config(&args)?;
    init_logging(config.log_format, &unknown);
    let shutdown = ShutdownSignal::listen();
    raise_open_file_limit(config.nodes.len());
    if config.nodes.is_empty() && config.discovery.sources.is_empty() {
        warn!(
            "no nodes configured: jobs will be refused until nodes are added (--node NAME=URL, [[nodes]] or [[discovery.sources]])"
        );
    }
    let coordinator = start(
        config,
        StartOptions {
            policy,
            ..StartOptions::default()
        },
    )
    .await?;
    shutdown.wait().await;
    coordinator.shutdown().await;
    Ok(0)
}

/// `comfyfleet up`: the coordinator plus simulated nodes in one process.
pub async fn up(args: UpArgs) -> Result<u8> {
    let (mut config, policy, unknown) = load_config(&args.serve)?;
    init_logging(config.log_format, &unknown);
    let shutdown = ShutdownSignal::listen();
    raise_open_file_limit(config.nodes.len().max(args.num_sims));
    let mut sims = Vec::new();
    let mut simulated = Vec::new();
    if args.serve.nodes.is_empty() {
        if args.num_sims == 0 {
            bail!("--sim 0 leaves the fleet empty; give --sim N or --node NAME=URL");
        }
        if !(args.time_scale.is_finite() && args.time_scale >= 0.0) {
            bail!("--time-scale must be a finite number of at least 0");
        }
        config.nodes.clear();
        for node in crate::demo::fleet(args.num_sims, args.time_scale) {
            let name = node.name.clone();
            let sim = comfy_sim::spawn(node, "127.0.0.1:0".parse()?)
                .await
                .with_context(|| format!("cannot start simulated node {name}"))?;
            info!(node = %name, url = %sim.url(), simulated = true, "simulated node started");
            config.nodes.push(NodeConfig {
                name: name.clone(),
                url: sim.url().parse()?,
                labels: Default::default(),
            });
            simulated.push(name);
            sims.push(sim);
        }
    }
    let data_dir = config.data_dir.clone();
    let coordinator = start(
        config,
        StartOptions {
            policy,
            simulated: simulated.clone(),
            ..StartOptions::default()
        },
    )
    .await?;
    let grpc = coordinator.grpc_addr();
    let http = coordinator.http_addr();
    let banner = crate::banner::Banner {
        grpc,
        http,
        nodes: coordinator
            .fleet()
            .nodes()
            .iter()
            .map(|node| node.spec.name.clone())
            .collect(),
        simulated: !simulated.is_empty(),
        data_dir,
        example: crate::banner::find_example(),
        via_cargo: crate::banner::run_through_cargo(),
    };
    print!("{}", banner.render());
    // Scripts and tests read the banner through a pipe; make sure it leaves now.
    let _ = std::io::Write::flush(&mut std::io::stdout());
    shutdown.wait().await;
    coordinator.shutdown().await;
    for sim in sims {
        sim.shutdown();
    }
    Ok(0)
}

/// SIGTERM and Ctrl-C, listened for from the moment this is created.
///
/// It is created before the coordinator starts: its listeners accept connections while the
/// rest of start-up finishes, and a SIGTERM arriving in that window must shut down cleanly
/// rather than kill the process with the signal's default action.
struct ShutdownSignal {
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignal {
    fn listen() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let terminate = signal(SignalKind::terminate())
                .inspect_err(|error| warn!(%error, "cannot listen for SIGTERM; Ctrl-C still stops"))
                .ok();
            Self { terminate }
        }
        #[cfg(not(unix))]
        {
            Self {}
        }
    }

    async fn wait(self) {
        #[cfg(unix)]
        {
            match self.terminate {
                Some(mut terminate) => {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = terminate.recv() => {}
                    }
                }
                None => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        info!("shutting down");
    }
}
