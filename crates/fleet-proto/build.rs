//! Compiles `proto/` with `protox`, a pure-Rust protobuf compiler, so no system `protoc` is needed.
//!
//! The same parsed descriptors feed both the code generator (`tonic-prost-build`) and the encoded
//! file descriptor set that gRPC reflection serves, so the two can never disagree.

use std::{env, fs, io, path::PathBuf};

/// Proto files of the contract, relative to the proto root.
const PROTO_FILES: &[&str] = &[
    "comfyfleet/v1/job.proto",
    "comfyfleet/v1/job_service.proto",
    "comfyfleet/v1/fleet_service.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest_dir.join("../../proto");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    // Parse once; keep comments (source info) so generated Rust carries the field docs, and the
    // imported well-known types so reflection clients can resolve every referenced message.
    let mut compiler = protox::Compiler::new([&proto_root])?;
    compiler.include_source_info(true).include_imports(true);
    compiler.open_files(PROTO_FILES)?;
    fs::write(
        out_dir.join("comfyfleet_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .emit_rerun_if_changed(false)
        .compile_fds(compiler.file_descriptor_set())
        .map_err(|e| io::Error::other(format!("proto code generation failed: {e}")))?;

    // Rebuild whenever any proto file changes (emit_rerun_if_changed only works with protoc).
    println!("cargo:rerun-if-changed={}", proto_root.display());
    for file in PROTO_FILES {
        println!("cargo:rerun-if-changed={}", proto_root.join(file).display());
    }
    Ok(())
}
