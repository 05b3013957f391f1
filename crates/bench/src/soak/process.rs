//! The `comfyfleet serve` child process: found next to this binary, started with the nodes in
//! its environment, stopped by SIGKILL or SIGTERM and started again on the same ports.
//!
//! A real process, not an in-process coordinator, because only a process can be killed with
//! SIGKILL mid-write and then restarted on the same data directory, which is the fault the
//! coordinator's durability has to survive.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bench::BenchError;
use comfy_sim::SimNode;

/// The `comfyfleet` binary beside this one (`<target>/<profile>/`), built with cargo in the
/// same profile when it is missing; `COMFYFLEET_BIN` overrides.
pub fn binary() -> Result<PathBuf, BenchError> {
    if let Some(path) = std::env::var_os("COMFYFLEET_BIN") {
        return Ok(PathBuf::from(path));
    }
    let dir = bench::scale::profile_dir()?;
    let dir = dir.as_path();
    let binary = dir.join("comfyfleet");
    let release = dir.file_name().is_some_and(|name| name == "release");
    let target = dir.parent().unwrap_or(dir);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = Command::new(cargo);
    command
        .args(["build", "-p", "comfyfleet", "--bin", "comfyfleet"])
        .env("CARGO_TARGET_DIR", target);
    if release {
        command.arg("--release");
    }
    // Always rebuild (a no-op when fresh) so a stale binary is never soaked.
    let status = command
        .status()
        .map_err(|error| BenchError::Invalid(format!("cargo build -p comfyfleet: {error}")))?;
    if !status.success() || !binary.is_file() {
        return Err(BenchError::Invalid(format!(
            "binary {}: cannot build it ({status})",
            binary.display()
        )));
    }
    Ok(binary)
}

fn free_port() -> Result<SocketAddr, BenchError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map_err(|error| BenchError::Invalid(format!("free port on 127.0.0.1: {error}")))
}

/// Resident set of a process in KiB, from `/proc/<pid>/status`.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// A running coordinator and what it takes to start it again.
pub struct Coordinator {
    child: Child,
    binary: PathBuf,
    data_dir: PathBuf,
    log_dir: PathBuf,
    nodes: String,
    runs: usize,
    /// Its gRPC address (kept across restarts).
    pub grpc_addr: SocketAddr,
    http_addr: SocketAddr,
}

impl Coordinator {
    /// Starts it in front of `sims` on fresh ports.
    pub async fn start(
        binary: &Path,
        data_dir: &Path,
        log_dir: &Path,
        sims: &[SimNode],
    ) -> Result<Self, BenchError> {
        let nodes = sims
            .iter()
            .map(|sim| format!("{}={}", sim.name(), sim.url()))
            .collect::<Vec<_>>()
            .join(",");
        let (grpc_addr, http_addr) = (free_port()?, free_port()?);
        let child = spawn(binary, data_dir, log_dir, &nodes, 0, grpc_addr, http_addr)?;
        let mut coordinator = Self {
            child,
            binary: binary.to_path_buf(),
            data_dir: data_dir.to_path_buf(),
            log_dir: log_dir.to_path_buf(),
            nodes,
            runs: 1,
            grpc_addr,
            http_addr,
        };
        coordinator.wait_listening().await?;
        Ok(coordinator)
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops it: SIGTERM when `graceful` (SIGKILL after 20 s), else SIGKILL. Returns
    /// `false` when a SIGTERM was not obeyed in time.
    pub async fn stop(&mut self, graceful: bool) -> bool {
        let mut obeyed = true;
        if graceful {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(self.child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            obeyed = false;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    obeyed = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        obeyed
    }

    /// Starts it again on the same data directory and ports (retrying while the old
    /// listener's port is not yet free).
    pub async fn start_again(mut self) -> Result<Self, BenchError> {
        let mut last = None;
        for _ in 0..5 {
            self.child = spawn(
                &self.binary,
                &self.data_dir,
                &self.log_dir,
                &self.nodes,
                self.runs,
                self.grpc_addr,
                self.http_addr,
            )?;
            self.runs += 1;
            match self.wait_listening().await {
                Ok(()) => return Ok(self),
                Err(error) => {
                    tracing::warn!(%error, "coordinator restart failed; retrying");
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    last = Some(error);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        Err(last.unwrap_or_else(|| BenchError::NotReady("coordinator: no restart".into())))
    }

    async fn wait_listening(&mut self) -> Result<(), BenchError> {
        let deadline = Instant::now() + Duration::from_secs(15);
        while tokio::net::TcpStream::connect(self.grpc_addr)
            .await
            .is_err()
        {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(BenchError::NotReady(format!(
                    "coordinator {}: exited at start ({status}); see {}",
                    self.grpc_addr,
                    self.log_dir.display()
                )));
            }
            if Instant::now() > deadline {
                return Err(BenchError::NotReady(format!(
                    "coordinator {}: not listening after 15 s",
                    self.grpc_addr
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(
    binary: &Path,
    data_dir: &Path,
    log_dir: &Path,
    nodes: &str,
    run: usize,
    grpc: SocketAddr,
    http: SocketAddr,
) -> Result<Child, BenchError> {
    let log_path = log_dir.join(format!("soak-coordinator-{run}.log"));
    let log = std::fs::File::create(&log_path).map_err(|source| BenchError::Output {
        path: log_path.clone(),
        source,
    })?;
    Command::new(binary)
        .arg("serve")
        .args(["--grpc-listen", &grpc.to_string()])
        .args(["--http-listen", &http.to_string()])
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--log-format", "json"])
        .env("COMFYFLEET_NODES", nodes)
        // Fast fault detection, as in the end-to-end restart tests.
        .env("COMFYFLEET_PROBE_INTERVAL", "100ms")
        .env("COMFYFLEET_PROBE_JITTER", "10ms")
        .env("COMFYFLEET_WEBSOCKET_RECONNECT_MIN", "50ms")
        .env("COMFYFLEET_WEBSOCKET_RECONNECT_MAX", "500ms")
        .env("COMFYFLEET_DISPATCH_NODE_DOWN_GRACE", "1s")
        .env("COMFYFLEET_DISPATCH_STALL_TIMEOUT", "5s")
        .env("COMFYFLEET_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|error| {
            BenchError::Invalid(format!(
                "binary {}: cannot start: {error}",
                binary.display()
            ))
        })
}
