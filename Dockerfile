# syntax=docker/dockerfile:1
#
# Container image of the comfyfleet coordinator.
#
# Two stages: a full Rust toolchain builds the release binary from the locked dependency graph,
# and a distroless runtime (glibc, libgcc, CA certificates, no shell, no package manager) runs
# it as the unprivileged `nonroot` user. SQLite is compiled into the binary (rusqlite's bundled
# feature) and the gRPC contract is compiled by protox at build time, so the runtime image needs
# no extra libraries and the builder needs no protoc.
#
#   docker build -t comfyfleet .
#   docker run -p 50051:50051 -p 8188:8188 -v comfyfleet-data:/data \
#     -e COMFYFLEET_NODES=gpu-0=http://gpu-0.example:8188 comfyfleet
#
# The default configuration (deploy/docker/comfyfleet.toml) listens on all interfaces and keeps
# the journal in /data; mount your own file over /etc/comfyfleet/comfyfleet.toml to change it,
# or override single keys with COMFYFLEET_* variables.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
# The whole workspace is needed: cargo resolves every member (including the end-to-end test
# crate) before building one package. .dockerignore keeps target/ and .git/ out of the context.
COPY . .
# The cache mounts keep the registry and the build directory between builds on one machine;
# the binary is copied out because a cache mount is not part of the image layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p comfyfleet \
    && install -D -m 0755 target/release/comfyfleet /out/usr/local/bin/comfyfleet \
    && install -d -m 0750 /out/data

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="comfyfleet" \
      org.opencontainers.image.description="One front door for a fleet of ComfyUI servers" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/usr/local/bin/comfyfleet /usr/local/bin/comfyfleet
COPY --from=build --chown=65532:65532 /out/data /data
COPY deploy/docker/comfyfleet.toml /etc/comfyfleet/comfyfleet.toml
# 65532 is distroless's `nonroot`; numeric so Kubernetes can verify runAsNonRoot.
USER 65532:65532
WORKDIR /data
VOLUME ["/data"]
# gRPC API, then HTTP (/metrics, /healthz, /readyz, ComfyUI-compatible API).
EXPOSE 50051 8188
# SIGTERM makes the coordinator stop accepting and exit; jobs already on nodes keep running
# there and are reattached from the journal at the next start.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/comfyfleet"]
CMD ["serve", "--config", "/etc/comfyfleet/comfyfleet.toml"]
