#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls this and nothing else).
# Needs root: the engine tests use real fanotify permission events.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
	echo "ci/test.sh: needs root (fanotify permission events need CAP_SYS_ADMIN); run: sudo $0" >&2
	exit 1
fi
export CARGO_TERM_COLOR=never
step() { printf '\n==== %s\n' "$*"; }

step "toolchain"
rustc --version
cargo --version

step "format"
cargo fmt --all --check
cargo fmt --manifest-path fuzz/Cargo.toml --check

step "lint"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "deploy tools: prometheus + promtool (apt), helm (built from the Go module proxy, cached)"
ci/deploy/install-tools.sh

step "kube-apiserver and etcd for the controller's end-to-end tests (built once, cached)"
ci/k8s/build.sh
k8s_dir=$(mktemp -d /tmp/janus-ci-k8s.XXXXXX)
export JANUS_CLUSTER_DIR=/tmp/janus-ci-cluster
cleanup_k8s() {
	ci/k8s/stop.sh --purge "$k8s_dir" >/dev/null 2>&1 || true
	ci/k8s/cluster.sh down >/dev/null 2>&1 || true
}
trap cleanup_k8s EXIT
ci/k8s/start.sh "$k8s_dir"
export JANUS_K8S_ENV="$k8s_dir/env"

step "a real one-node cluster: kubelet, kube-controller-manager, kube-scheduler, containerd, runc, CNI (built once, cached), images built here"
ci/k8s/cluster.sh up
export JANUS_NODE_ENV="$JANUS_CLUSTER_DIR/env"

step "tests (root-only and API-server tests included)"
cargo build --workspace --bins --locked
cargo test --workspace --locked -- --include-ignored
ci/k8s/stop.sh --purge "$k8s_dir" >/dev/null 2>&1 || true

step "the real cluster goes down without a trace"
ci/k8s/cluster.sh down

step "fuzz: every target for 20 s after replaying past failures (cargo fuzz, libFuzzer; docs/fuzzing.md)"
ci/fuzz.sh 20

step "demo: janusd standalone on deploy/examples/demo-guard.yaml"
ci/demo.sh

step "benchmark: janus-perf quick"
cargo build --release --locked -p janus-perf
./target/release/janus-perf quick --out-dir target/perf

step "no fanotify group left behind"
left=$(ls -l /proc/[0-9]*/fd 2>/dev/null | grep -c 'anon_inode:\[fanotify\]' || true)
echo "fanotify fds held by any process: $left"
