#!/usr/bin/env bash
# The one test command for comfyfleet (README "Running the tests", and what CI runs).
#
# It installs what the tests need beyond the Rust toolchain, then checks formatting and lints
# and runs every test in the workspace. Safe to run again: installs are skipped when present.
set -euo pipefail
cd "$(dirname "$0")/.."

# Independent real clients used by the tests (Python `requests`, `websocket-client`, `grpcio`, `grpcio-tools`).
if ! python3 -c 'import requests, websocket, grpc, grpc_tools' >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check -r tests/python-requirements.txt
fi

# Prometheus's own tools check the metrics exposition (promtool, and a real server scraping).
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

# Deployment files: Dockerfile lint, Kubernetes render and schema validation, promtool rules and tests.
bash deploy/check.sh

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
