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

step "lint"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests (root-only tests included)"
cargo test --workspace --locked -- --include-ignored

step "demo: janusd standalone on deploy/examples/demo-guard.yaml"
ci/demo.sh

step "benchmark: janus-perf quick"
cargo build --release --locked -p janus-perf
./target/release/janus-perf quick --out-dir target/perf

step "no fanotify group left behind"
left=$(ls -l /proc/[0-9]*/fd 2>/dev/null | grep -c 'anon_inode:\[fanotify\]' || true)
echo "fanotify fds held by any process: $left"
