//! The real `comfyfleet serve` binary as a child process, for tests that kill it.
//!
//! A coordinator inside the test process cannot be killed with `SIGKILL` without killing the
//! test, so restart tests spawn the binary (built on demand with the same cargo and target
//! directory) with a data directory the test keeps across restarts. Ports are picked free by
//! the OS each start; the configuration is passed through `COMFYFLEET_*` variables.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use comfy_sim::SimNode;
use fleet_proto::v1::fleet_service_client::FleetServiceClient;
use fleet_proto::v1::job_service_client::JobServiceClient;
use tonic::transport::Channel;

/// Path of the `comfyfleet` binary, built first if needed.
///
/// # Panics
/// When it cannot be built.
pub fn comfyfleet_binary() -> PathBuf {
    // The test binary lives in <target>/<profile>/deps/.
    let exe = std::env::current_exe().expect("the test's own path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binaries live in <target>/<profile>/deps");
    let binary = profile_dir.join("comfyfleet");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let target_dir = profile_dir
        .parent()
        .expect("<target>/<profile> has a parent");
    let status = Command::new(cargo)
        .args(["build", "-p", "comfyfleet", "--bin", "comfyfleet"])
        .env("CARGO_TARGET_DIR", target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo build -p comfyfleet");
    assert!(
        status.success() && binary.is_file(),
        "cannot build {}: {status}",
        binary.display()
    );
    binary
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port on 127.0.0.1")
}

/// A `comfyfleet serve` child process.
pub struct CoordinatorProcess {
    child: Child,
    /// Its gRPC address.
    pub grpc_addr: SocketAddr,
    /// Its HTTP address.
    pub http_addr: SocketAddr,
    /// Where its JSON logs (stderr) go.
    pub log_path: PathBuf,
}

impl CoordinatorProcess {
    /// Starts the binary in front of `sims` with `data_dir`, test timings, and `extra`
    /// environment variables; waits until its gRPC port answers.
    ///
    /// # Panics
    /// When it does not start within ten seconds.
    pub async fn start(
        binary: &Path,
        data_dir: &Path,
        sims: &[SimNode],
        extra: &[(&str, &str)],
    ) -> Self {
        Self::start_at(binary, data_dir, sims, extra, free_port(), free_port()).await
    }

    /// Like [`CoordinatorProcess::start`], listening on the given addresses: a restart that
    /// clients must find where they left it.
    ///
    /// # Panics
    /// When it does not start within ten seconds.
    pub async fn start_at(
        binary: &Path,
        data_dir: &Path,
        sims: &[SimNode],
        extra: &[(&str, &str)],
        grpc_addr: SocketAddr,
        http_addr: SocketAddr,
    ) -> Self {
        let nodes = sims
            .iter()
            .map(|sim| format!("{}={}", sim.name(), sim.url()))
            .collect::<Vec<_>>()
            .join(",");
        let run = std::fs::read_dir(data_dir).map_or(0, Iterator::count);
        let log_path = data_dir.join(format!("coordinator-{run}.log"));
        let log = std::fs::File::create(&log_path).expect("create the coordinator's log file");
        let mut command = Command::new(binary);
        command
            .arg("serve")
            .arg("--grpc-listen")
            .arg(grpc_addr.to_string())
            .arg("--http-listen")
            .arg(http_addr.to_string())
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--log-format")
            .arg("json")
            .env("COMFYFLEET_NODES", nodes)
            .env("COMFYFLEET_PROBE_INTERVAL", "100ms")
            .env("COMFYFLEET_PROBE_JITTER", "10ms")
            .env("COMFYFLEET_WEBSOCKET_RECONNECT_MIN", "50ms")
            .env("COMFYFLEET_WEBSOCKET_RECONNECT_MAX", "500ms")
            .env("COMFYFLEET_DISPATCH_NODE_DOWN_GRACE", "1s")
            .env("COMFYFLEET_DISPATCH_STALL_TIMEOUT", "2s")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        for (key, value) in extra {
            command.env(key, value);
        }
        let child = command.spawn().expect("spawn comfyfleet serve");
        let process = Self {
            child,
            grpc_addr,
            http_addr,
            log_path,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(grpc_addr).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "comfyfleet serve did not listen on {grpc_addr}; log: {}",
                std::fs::read_to_string(&process.log_path).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        process
    }

    /// A job client to it.
    ///
    /// # Panics
    /// When it cannot connect.
    pub async fn jobs(&self) -> JobServiceClient<Channel> {
        JobServiceClient::new(self.channel().await)
    }

    /// A fleet client to it.
    ///
    /// # Panics
    /// When it cannot connect.
    pub async fn fleet(&self) -> FleetServiceClient<Channel> {
        FleetServiceClient::new(self.channel().await)
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.grpc_addr))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect to the coordinator process")
    }

    /// Kills it with SIGKILL and reaps it.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM; returns its exit status and how long it took, or `None` if it did not
    /// exit within `limit` (it is then killed).
    pub fn terminate(mut self, limit: Duration) -> Option<(ExitStatus, Duration)> {
        let started = Instant::now();
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        while started.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some((status, started.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}

impl Drop for CoordinatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
