//! The banner `comfyfleet up` prints once the fleet is ready.
//!
//! A first-time user copies commands from it into another terminal, so every command must work
//! as pasted: it names the address actually bound (a wildcard listen address becomes loopback,
//! the one a client can dial), adds `--addr` only when the address is not the client default,
//! points at the example workflow by a path that resolves from where the user stands, and says
//! once how to run `comfyfleet` from a source checkout where it is not installed.
//! The text is built by a pure function so its rules are tested without starting anything.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

/// The client's default coordinator address (`--addr`).
pub const DEFAULT_ADDR: &str = "http://127.0.0.1:50051";

/// The example workflow the banner suggests, relative to the workspace root.
const EXAMPLE: &str = "examples/sdxl-portrait.json";

/// Everything the banner says.
#[derive(Debug, Clone)]
pub struct Banner {
    /// The bound gRPC address.
    pub grpc: SocketAddr,
    /// The bound HTTP address.
    pub http: SocketAddr,
    /// Names of the fleet's nodes.
    pub nodes: Vec<String>,
    /// Whether the nodes are simulated GPUs of this process.
    pub simulated: bool,
    /// The journal's folder.
    pub data_dir: PathBuf,
    /// How to name the example workflow from the current directory, if it can be found.
    pub example: Option<String>,
    /// The path of this program when it runs from a build folder rather than an installation.
    pub via_cargo: Option<PathBuf>,
}

impl Banner {
    /// The banner text, ending with a newline.
    pub fn render(&self) -> String {
        let grpc = dialable(self.grpc);
        let http = dialable(self.http);
        let addr = format!("http://{grpc}");
        let addr_flag = if addr == DEFAULT_ADDR {
            String::new()
        } else {
            format!(" --addr {addr}")
        };
        let mut out = String::new();
        let kind = if self.simulated {
            "simulated GPU"
        } else {
            "node"
        };
        let plural = if self.nodes.len() == 1 { "" } else { "s" };
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "comfyfleet is up with {} {kind}{plural}: {}",
            self.nodes.len(),
            self.nodes.join(", ")
        );
        let _ = writeln!(out, "  gRPC API  {addr}");
        let _ = writeln!(
            out,
            "  HTTP      http://{http}  (/metrics, /healthz, /readyz and the ComfyUI API)"
        );
        let _ = writeln!(
            out,
            "  journal   {}",
            self.data_dir.join("journal.sqlite3").display()
        );
        let _ = writeln!(out);
        let _ = writeln!(out, "Try, in another terminal:");
        let _ = writeln!(out, "  comfyfleet nodes{addr_flag}");
        match &self.example {
            Some(example) => {
                let _ = writeln!(
                    out,
                    "  comfyfleet submit {} --wait --out outputs{addr_flag}",
                    shell_quote(example)
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "  comfyfleet submit WORKFLOW.json --wait --out outputs{addr_flag}"
                );
                let _ = writeln!(
                    out,
                    "    (WORKFLOW.json: a workflow saved from ComfyUI with \"Export (API)\")"
                );
            }
        }
        let _ = writeln!(out, "  comfyfleet jobs{addr_flag}");
        let _ = writeln!(
            out,
            "  curl -s http://{http}/metrics | grep ^comfyfleet_jobs"
        );
        if let Some(exe) = &self.via_cargo {
            let _ = writeln!(
                out,
                "Where `comfyfleet` is not installed, type `cargo run --release -p comfyfleet --` \
                 in the source checkout instead, or run {}",
                shell_quote(&exe.display().to_string())
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "Press Ctrl-C to stop.");
        out
    }
}

/// The address a client on this machine dials to reach `addr`: a wildcard listen address
/// (`0.0.0.0`, `::`) accepts loopback connections, but cannot itself be dialled everywhere.
pub fn dialable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port())
        }
        _ => addr,
    }
}

/// The example workflow as the user can name it: relative when it is below the current
/// directory (the usual `cargo run` from the checkout), else the absolute path of the copy in
/// the source tree this program was built from, if that still exists.
pub fn find_example() -> Option<String> {
    if Path::new(EXAMPLE).is_file() {
        return Some(EXAMPLE.to_owned());
    }
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(EXAMPLE);
    built_from
        .canonicalize()
        .ok()
        .filter(|path| path.is_file())
        .map(|path| path.display().to_string())
}

/// This program's path when it was started by `cargo run` or lives in a cargo build folder
/// (`.../target/<profile>/comfyfleet`); `None` for an installed binary.
pub fn run_through_cargo() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let by_cargo_run = std::env::var_os("CARGO_PKG_NAME").is_some_and(|name| name == "comfyfleet");
    let in_target = exe.ancestors().any(|dir| dir.ends_with("target"));
    (by_cargo_run || in_target).then_some(exe)
}

/// Quotes `text` for a POSIX shell when it holds anything but plain path characters.
fn shell_quote(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:=@,".contains(c));
    if plain {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn banner(grpc: &str, http: &str) -> Banner {
        Banner {
            grpc: grpc.parse().expect("grpc address"),
            http: http.parse().expect("http address"),
            nodes: vec!["gpu-4090".into(), "gpu-a4000".into(), "gpu-3060".into()],
            simulated: true,
            data_dir: PathBuf::from("comfyfleet-data"),
            example: Some(EXAMPLE.into()),
            via_cargo: None,
        }
    }

    fn commands(text: &str) -> Vec<&str> {
        text.lines()
            .filter_map(|line| line.strip_prefix("  comfyfleet "))
            .collect()
    }

    #[test]
    fn default_addresses_need_no_addr_flag() {
        let text = banner("127.0.0.1:50051", "127.0.0.1:8188").render();
        assert_eq!(
            commands(&text),
            vec![
                "nodes",
                "submit examples/sdxl-portrait.json --wait --out outputs",
                "jobs"
            ]
        );
        assert!(text.contains("3 simulated GPUs: gpu-4090, gpu-a4000, gpu-3060"));
        assert!(text.contains("curl -s http://127.0.0.1:8188/metrics"));
        assert!(!text.contains("cargo run"));
    }

    #[test]
    fn other_ports_put_the_real_address_in_every_command() {
        let text = banner("127.0.0.1:40001", "127.0.0.1:40002").render();
        let commands = commands(&text);
        assert_eq!(commands.len(), 3);
        for command in commands {
            assert!(
                command.ends_with(" --addr http://127.0.0.1:40001"),
                "{command}"
            );
        }
        assert!(text.contains("http://127.0.0.1:40002/metrics"));
    }

    #[test]
    fn wildcard_listen_addresses_become_loopback() {
        let text = banner("0.0.0.0:50051", "[::]:9000").render();
        assert!(text.contains("  comfyfleet nodes\n"), "{text}");
        assert!(text.contains("http://[::1]:9000/metrics"), "{text}");
        assert!(!text.contains("0.0.0.0"), "{text}");
    }

    #[test]
    fn a_build_from_source_mentions_cargo_run_once() {
        let mut banner = banner("127.0.0.1:50051", "127.0.0.1:8188");
        banner.via_cargo = Some(PathBuf::from("/src/comfyfleet/target/release/comfyfleet"));
        let text = banner.render();
        assert_eq!(
            text.matches("cargo run --release -p comfyfleet --").count(),
            1
        );
        assert!(text.contains("/src/comfyfleet/target/release/comfyfleet"));
    }

    #[test]
    fn paths_with_spaces_are_quoted() {
        let mut banner = banner("127.0.0.1:50051", "127.0.0.1:8188");
        banner.example = Some("/home/me/my work/sdxl.json".into());
        let text = banner.render();
        assert!(
            text.contains("submit '/home/me/my work/sdxl.json' --wait"),
            "{text}"
        );
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn a_missing_example_says_what_to_export() {
        let mut banner = banner("127.0.0.1:50051", "127.0.0.1:8188");
        banner.example = None;
        let text = banner.render();
        assert!(text.contains("Export (API)"), "{text}");
    }

    #[test]
    fn one_node_is_singular() {
        let mut banner = banner("127.0.0.1:50051", "127.0.0.1:8188");
        banner.nodes = vec!["gpu-0".into()];
        banner.simulated = false;
        assert!(banner.render().contains("up with 1 node: gpu-0"));
    }
}
