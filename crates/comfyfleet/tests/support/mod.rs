//! Running the real `comfyfleet` binary in tests.
//!
//! [`Up`] starts `comfyfleet up` on free loopback ports with a temporary data folder and reads
//! the addresses from the banner it prints, exactly as a person would; [`Up::run`] runs a
//! client command against it and captures its exit code and output. Every wait is bounded so
//! a hung process fails the test with what it printed instead of hanging the run.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_comfyfleet");

/// The shared folder of recorded traffic and workflows; panics with a clear message when absent.
pub fn shared_dir() -> PathBuf {
    let dir = std::env::var_os("COMFYFLEET_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared")));
    assert!(
        dir.join("workflows").is_dir(),
        "the shared folder {} is missing: set COMFYFLEET_SHARED_DIR to the folder holding \
         workflows/ and comfyui-captures/",
        dir.display()
    );
    dir
}

/// The workspace's example workflows.
pub fn example(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples")).join(name)
}

/// What a finished command did.
#[derive(Debug)]
pub struct Output {
    /// Exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Output {
    /// Both streams, for assertion messages.
    pub fn both(&self) -> String {
        format!(
            "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// A running `comfyfleet up`.
pub struct Up {
    child: Child,
    /// The temporary folder: the process's working directory, with the journal in `data/`.
    pub dir: tempfile::TempDir,
    /// `http://host:port` of the gRPC API, as the banner printed it.
    pub grpc: String,
    /// `host:port` of the HTTP surface.
    pub http: String,
    /// The banner as printed on stdout.
    pub banner: String,
    stderr_path: PathBuf,
}

impl Up {
    /// Starts `comfyfleet up` with `extra` flags and waits until every node is up.
    pub fn start(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temporary folder");
        let stderr_path = dir.path().join("up.stderr");
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        let mut child = Command::new(BIN)
            .arg("up")
            .args([
                "--grpc-listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
            ])
            .args(["--data-dir", "data"])
            .args(extra)
            .current_dir(dir.path())
            .env_remove("COMFYFLEET_ADDR")
            .env_remove("COMFYFLEET_CONFIG")
            .env_remove("COMFYFLEET_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawn comfyfleet up");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut banner = String::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    banner.push_str(&line);
                    banner.push('\n');
                    if line.starts_with("Press Ctrl-C") {
                        break;
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                    panic!("comfyfleet up printed no banner\nstdout:\n{banner}\nstderr:\n{stderr}");
                }
            }
        }
        let field = |label: &str| {
            banner
                .lines()
                .find_map(|line| line.trim_start().strip_prefix(label))
                .map(|rest| {
                    rest.split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned()
                })
                .unwrap_or_else(|| panic!("no {label} line in the banner:\n{banner}"))
        };
        let grpc = field("gRPC API");
        let http = field("HTTP").trim_start_matches("http://").to_owned();
        let up = Self {
            child,
            dir,
            grpc,
            http,
            banner,
            stderr_path,
        };
        up.wait_for_nodes(3);
        up
    }

    /// What the process wrote on stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Waits until `count` nodes report `up`.
    fn wait_for_nodes(&self, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = self.run(&["nodes", "--json"]);
            let up = out
                .stdout
                .lines()
                .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
                .filter(|node| node["health"] == "up")
                .count();
            if up >= count {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nodes never came up: {}\nserver stderr:\n{}",
                out.both(),
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs a client command against this coordinator, from its folder.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--addr", &self.grpc]);
        run_in(self.dir.path(), &all)
    }

    /// Starts a client command without waiting for it.
    pub fn spawn(&self, args: &[&str]) -> Child {
        Command::new(BIN)
            .args(args)
            .args(["--addr", &self.grpc])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn comfyfleet")
    }

    /// `GET path` on the HTTP port; the body.
    pub fn http_get(&self, path: &str) -> String {
        let mut stream = TcpStream::connect(&self.http).expect("connect to the HTTP port");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.http
        )
        .expect("send request");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read response");
        let (head, body) = response
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no HTTP header end in {response:?}"));
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_owned()
        }
    }

    /// The Prometheus samples on `/metrics`, by `name{labels}` as printed.
    pub fn metrics(&self) -> HashMap<String, f64> {
        self.http_get("/metrics")
            .lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .filter_map(|line| {
                let (key, value) = line.rsplit_once(' ')?;
                Some((key.to_owned(), value.parse().ok()?))
            })
            .collect()
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `comfyfleet ARGS` in `dir` with a time limit.
pub fn run_in(dir: &Path, args: &[&str]) -> Output {
    let child = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("COMFYFLEET_ADDR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn comfyfleet");
    wait_output(child, Duration::from_secs(60))
}

/// Waits for a spawned command, killing it after `limit`.
pub fn wait_output(mut child: Child, limit: Duration) -> Output {
    // A test may have closed stdout already, to see the command meet a closed pipe.
    let stdout = child.stdout.take();
    let mut stderr = child.stderr.take().expect("stderr piped");
    let out_thread = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut stdout) = stdout {
            let _ = stdout.read_to_string(&mut text);
        }
        text
    });
    let err_thread = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "command ran past {limit:?}; stdout so far: {}",
                out_thread.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        code: status.code(),
        stdout: out_thread.join().unwrap_or_default(),
        stderr: err_thread.join().unwrap_or_default(),
    }
}

/// Decodes an HTTP/1.1 chunked body.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let Some((size, rest)) = body.split_once("\r\n") else {
            return out;
        };
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            return out;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
}

/// The sum of every sample of `family` whose labels contain all of `labels` (`k="v"` pairs).
pub fn sum(metrics: &HashMap<String, f64>, family: &str, labels: &[&str]) -> f64 {
    metrics
        .iter()
        .filter(|(key, _)| {
            let (name, rest) = key.split_once('{').unwrap_or((key, ""));
            name == family && labels.iter().all(|label| rest.contains(label))
        })
        .map(|(_, value)| value)
        .sum()
}

/// A copy of an example workflow with its sampler's steps and seed changed, written into `dir`.
pub fn variant(dir: &Path, name: &str, steps: u64, seed: u64, sampler: &str) -> PathBuf {
    let mut graph: serde_json::Value =
        serde_json::from_slice(&std::fs::read(example("sd15-landscape.json")).expect("example"))
            .expect("example is JSON");
    let sampler_node = graph
        .as_object_mut()
        .expect("graph object")
        .values_mut()
        .find(|node| node["class_type"] == "KSampler")
        .expect("a KSampler");
    sampler_node["inputs"]["steps"] = steps.into();
    sampler_node["inputs"]["seed"] = seed.into();
    sampler_node["inputs"]["sampler_name"] = sampler.into();
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec(&graph).expect("JSON")).expect("write workflow");
    path
}
