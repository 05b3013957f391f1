//! The `comfyfleet` binary: the coordinator (`serve`, `up`) and its command-line client
//! (`submit`, `watch`, `jobs`, `nodes`, `cancel`, `drain`, `undrain`).

mod banner;
mod client;
mod demo;
mod exit;
mod render;
mod serve;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use fleet_proto::v1::JobState;

use crate::client::{FollowOptions, SubmitOptions};
use crate::render::Mode;

/// The coordinator makes many small, short-lived allocations per node and second (requests,
/// answers, decoded probes); mimalloc serves them with less CPU than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// One front door for a fleet of ComfyUI servers.
#[derive(Debug, Parser)]
#[command(name = "comfyfleet", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the coordinator in front of the configured ComfyUI nodes.
    Serve(serve::ServeArgs),
    /// Runs the coordinator with simulated GPU nodes in one process: a fleet with no setup.
    Up(serve::UpArgs),
    /// Submits a workflow (API format) and, with --wait, follows it to the end.
    Submit(SubmitArgs),
    /// Follows a job submitted earlier until it ends.
    Watch(WatchArgs),
    /// Lists jobs.
    Jobs(JobsArgs),
    /// Shows the fleet: health, GPU, VRAM, queue and the models believed in VRAM of every node.
    Nodes(ClientArgs),
    /// Cancels a job, wherever it is (queued, waiting on a node, running).
    Cancel(JobArgs),
    /// Stops placing new jobs on a node; jobs already there finish.
    Drain(NodeArgs),
    /// Lets a drained node take jobs again.
    Undrain(NodeArgs),
}

/// Where the coordinator is and how to print.
#[derive(Debug, Args)]
struct ClientArgs {
    /// The coordinator's gRPC address.
    #[arg(
        long,
        env = "COMFYFLEET_ADDR",
        default_value = "http://127.0.0.1:50051"
    )]
    addr: String,
    /// Prints one JSON object per line instead of human output.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct SubmitArgs {
    /// The workflow file (ComfyUI API format), or `-` for standard input.
    file: PathBuf,
    /// Follows the job until it ends and exits with its outcome.
    #[arg(long)]
    wait: bool,
    /// Saves the outputs into this folder (implies --wait).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Saves preview images into this folder (implies --wait).
    #[arg(long)]
    previews: Option<PathBuf>,
    /// Priority: higher runs first.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    priority: i32,
    /// A label the node must carry, as key=value; repeatable.
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// The tenant the job is accounted to.
    #[arg(long, default_value = "default")]
    tenant: String,
    /// Submitting again with the same key returns the first job instead of a new one.
    #[arg(long, default_value = "")]
    idempotency_key: String,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Args)]
struct WatchArgs {
    /// The job id.
    job: String,
    /// Saves the outputs into this folder.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Saves preview images into this folder.
    #[arg(long)]
    previews: Option<PathBuf>,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum StateArg {
    Queued,
    Dispatched,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

#[derive(Debug, Args)]
struct JobsArgs {
    /// Only jobs in these states (repeatable).
    #[arg(long = "state", value_enum)]
    states: Vec<StateArg>,
    /// Only jobs of this tenant.
    #[arg(long, default_value = "")]
    tenant: String,
    /// At most this many jobs (1 to 1000).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
    limit: u32,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Args)]
struct JobArgs {
    /// The job id.
    job: String,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Args)]
struct NodeArgs {
    /// The node's name.
    node: String,
    #[command(flatten)]
    client: ClientArgs,
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("label {text:?} is not key=value")),
    }
}

fn mode(client: &ClientArgs) -> Mode {
    if client.json { Mode::Json } else { Mode::Live }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("error: {}", client::error_chain(error.as_ref()));
            if error.downcast_ref::<exit::UsageError>().is_some() {
                ExitCode::from(exit::USAGE)
            } else {
                ExitCode::from(exit::UNAVAILABLE)
            }
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Serve(args) => serve::serve(args).await,
        Command::Up(args) => serve::up(args).await,
        Command::Submit(args) => {
            let workflow = client::read_workflow(&args.file).await?;
            let channel = client::connect(&args.client.addr).await?;
            let wait = args.wait || args.out.is_some() || args.previews.is_some();
            let options = SubmitOptions {
                tenant: args.tenant,
                priority: args.priority,
                labels: args.labels.into_iter().collect::<HashMap<_, _>>(),
                idempotency_key: args.idempotency_key,
            };
            let follow = FollowOptions {
                out_dir: args.out,
                previews_dir: args.previews,
                mode: mode(&args.client),
            };
            client::submit(channel, workflow, options, wait, follow).await
        }
        Command::Watch(args) => {
            let channel = client::connect(&args.client.addr).await?;
            let follow = FollowOptions {
                out_dir: args.out,
                previews_dir: args.previews,
                mode: mode(&args.client),
            };
            client::watch(channel, &args.job, follow).await
        }
        Command::Jobs(args) => {
            let channel = client::connect(&args.client.addr).await?;
            let states = args
                .states
                .into_iter()
                .map(|state| match state {
                    StateArg::Queued => JobState::Queued,
                    StateArg::Dispatched => JobState::Dispatched,
                    StateArg::Running => JobState::Running,
                    StateArg::Succeeded => JobState::Succeeded,
                    StateArg::Failed => JobState::Failed,
                    StateArg::Cancelled => JobState::Cancelled,
                })
                .collect();
            client::list_jobs(channel, states, args.tenant, args.limit, mode(&args.client)).await
        }
        Command::Nodes(args) => {
            let channel = client::connect(&args.addr).await?;
            client::nodes(channel, mode(&args)).await
        }
        Command::Cancel(args) => {
            let channel = client::connect(&args.client.addr).await?;
            client::cancel(channel, &args.job, mode(&args.client)).await
        }
        Command::Drain(args) => {
            let channel = client::connect(&args.client.addr).await?;
            client::drain(channel, &args.node, true, mode(&args.client)).await
        }
        Command::Undrain(args) => {
            let channel = client::connect(&args.client.addr).await?;
            client::drain(channel, &args.node, false, mode(&args.client)).await
        }
    }
}
