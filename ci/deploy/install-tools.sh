#!/usr/bin/env bash
# Installs the tools the deploy tests (controller/tests/deploy.rs) need:
#   - prometheus + promtool  (Debian package `prometheus`)
#   - helm v3                (not packaged in Debian bookworm: built from the Go module proxy)
#   - with --plot: a venv with matplotlib (PyPI) for ci/deploy/plot-dashboard.py
# Idempotent: does nothing for a tool that is already installed at the wanted version.
# Env: JANUS_TOOLS_DIR (default /var/cache/janus-tools) receives the helm binary;
#      HELM_VERSION (default v3.22.0).
set -euo pipefail

TOOLS_DIR="${JANUS_TOOLS_DIR:-/var/cache/janus-tools}"
HELM_VERSION="${HELM_VERSION:-v3.22.0}"
mkdir -p "$TOOLS_DIR/bin"

log() { echo "install-tools: $*" >&2; }

# --- prometheus / promtool (Debian) ---------------------------------------
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
    log "installing prometheus (apt)"
    start=$(date +%s)
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    # --no-install-recommends: we need only the binaries, not node-exporter & co.
    apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    # The package enables a system service; the tests run their own instance.
    if command -v systemctl >/dev/null 2>&1; then systemctl disable --now prometheus >/dev/null 2>&1 || true; fi
    log "prometheus installed in $(( $(date +%s) - start ))s"
else
    log "prometheus present: $(prometheus --version 2>&1 | head -1)"
fi

# --- helm (Go module proxy) -------------------------------------------------
HELM="$TOOLS_DIR/bin/helm"
if [ -x "$HELM" ] && "$HELM" version --template '{{.Version}}' 2>/dev/null | grep -qx "$HELM_VERSION"; then
    log "helm present: $HELM ($HELM_VERSION)"
else
    if command -v go >/dev/null 2>&1; then GO=go
    elif [ -x /usr/local/go/bin/go ]; then GO=/usr/local/go/bin/go
    else log "go toolchain not found; cannot build helm"; exit 1; fi
    log "building helm $HELM_VERSION with $($GO version)"
    start=$(date +%s)
    GOBIN="$TOOLS_DIR/bin" GOFLAGS=-mod=mod GOPATH="$TOOLS_DIR/gopath" GOCACHE="$TOOLS_DIR/gocache" \
        CGO_ENABLED=0 "$GO" install -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
        "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
    log "helm built in $(( $(date +%s) - start ))s"
fi
# --- matplotlib (PyPI, only with --plot: for ci/deploy/plot-dashboard.py) -----
if [ "${1:-}" = --plot ]; then
    venv="$TOOLS_DIR/plot-venv"
    if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import matplotlib' 2>/dev/null; then
        log "matplotlib present: $venv"
    else
        start=$(date +%s)
        python3 -m venv "$venv" && "$venv/bin/pip" install -q matplotlib
        log "matplotlib installed in $venv in $(( $(date +%s) - start ))s"
    fi
fi

# Make helm findable on PATH for the tests and render.sh.
ln -sf "$HELM" /usr/local/bin/helm 2>/dev/null || true
log "done"
