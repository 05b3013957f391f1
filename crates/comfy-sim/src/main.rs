//! `comfy-sim`: run one simulated ComfyUI node, or a whole fleet from a TOML file.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use comfy_sim::{FleetConfig, GpuConfig, NodeConfig, Profile};

/// A ComfyUI 0.3.64 look-alike with a simulated GPU, for testing schedulers and clients.
#[derive(Parser, Debug)]
#[command(name = "comfy-sim", version)]
struct Args {
    /// Address to listen on (ignored with --config).
    #[arg(long, default_value = "127.0.0.1:8188")]
    listen: SocketAddr,
    /// Fleet file with `[[nodes]]` tables (each with `listen` and node settings); starts them all.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Node name used in logs.
    #[arg(long, default_value = "sim")]
    name: String,
    /// GPU model name shown in /system_stats (e.g. "NVIDIA GeForce RTX 4090").
    #[arg(long)]
    gpu: Option<String>,
    /// Total VRAM in GiB.
    #[arg(long, default_value_t = 24.0)]
    vram_gb: f64,
    /// Reproduce the recorded CPU server (device "cpu", its argv, no model files).
    #[arg(long)]
    cpu: bool,
    /// Seconds per sampler step at 512x512.
    #[arg(long, default_value_t = 0.05)]
    seconds_per_step: f64,
    /// Multiplies every simulated duration (0 = as fast as possible).
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
    /// Add a model file, as FOLDER/NAME (repeatable), e.g. checkpoints/sd_xl_base_1.0.safetensors.
    #[arg(long = "model")]
    models: Vec<String>,
    /// Protocol generation: v0_3_64 or newer.
    #[arg(long, default_value = "v0_3_64")]
    profile: String,
    /// Request body limit in MiB (like --max-upload-size).
    #[arg(long)]
    max_upload_size_mb: Option<f64>,
    /// Sampler preview method (none disables previews, like ComfyUI's default).
    #[arg(long, default_value = "none")]
    preview_method: String,
    /// Folder for input/output/temp files (default: a temporary folder removed on exit).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

fn node_config(args: &Args) -> anyhow::Result<NodeConfig> {
    let mut cfg = if args.cpu {
        NodeConfig::capture_cpu()
    } else {
        NodeConfig::named(&args.name)
    };
    cfg.name = args.name.clone();
    if let Some(gpu) = &args.gpu {
        cfg.gpu = GpuConfig::cuda(gpu, (args.vram_gb * 1_073_741_824.0) as u64);
    } else if !args.cpu {
        cfg.gpu.vram_total = (args.vram_gb * 1_073_741_824.0) as u64;
    }
    cfg.seconds_per_step = args.seconds_per_step;
    cfg.time_scale = args.time_scale;
    for m in &args.models {
        let (folder, name) = m
            .split_once('/')
            .with_context(|| format!("--model {m}: expected FOLDER/NAME"))?;
        cfg = cfg.with_model(folder, comfy_sim::ModelFile::named(name));
    }
    cfg.profile = match args.profile.as_str() {
        "v0_3_64" => Profile::V0_3_64,
        "newer" => Profile::Newer,
        other => anyhow::bail!("--profile {other}: expected v0_3_64 or newer"),
    };
    if let Some(mb) = args.max_upload_size_mb {
        cfg.max_upload_size = (mb * 1_048_576.0).round() as u64;
        cfg.max_upload_size_explicit = true;
    }
    cfg.preview_method = args.preview_method.clone();
    cfg.data_dir = args.data_dir.clone();
    cfg.argv = std::env::args().collect();
    Ok(cfg)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let nodes = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let fleet = FleetConfig::from_toml(&text)
                .with_context(|| format!("parsing {}", path.display()))?;
            comfy_sim::spawn_fleet(fleet).await?
        }
        None => vec![comfy_sim::spawn(node_config(&args)?, args.listen).await?],
    };
    for n in &nodes {
        println!("{} {}", n.name(), n.url());
    }
    tokio::signal::ctrl_c()
        .await
        .context("waiting for ctrl-c")?;
    drop(nodes);
    Ok(())
}
