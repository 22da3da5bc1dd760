#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets/) for a short time with cargo fuzz
# (libFuzzer), after replaying the inputs that once failed (fuzz/regressions).
#
#   ci/fuzz.sh [SECONDS_PER_TARGET]     (default 20; env JANUS_FUZZ_SECONDS)
#   ci/fuzz.sh 3600 guard_yaml          one target for an hour
#
# cargo-fuzz is installed once into /var/cache/janus-tools (crates.io). It runs
# on the pinned stable toolchain: RUSTC_BOOTSTRAP=1 lets it pass its -Z flags,
# and `-s none` needs no sanitizer runtime (the targets are safe Rust; the
# properties each checks are in its header). Instrumented builds are cached in
# /var/cache/janus-fuzz. Each run starts from the committed seeds plus what
# earlier runs on this machine found (kept in the cache, not the repo). A
# failure prints the input's path; copy it into fuzz/regressions/<target>/
# with the fix, so it is replayed on every run. See docs/fuzzing.md.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-${JANUS_FUZZ_SECONDS:-20}}"
only="${2:-}"
TOOLS_DIR="${JANUS_TOOLS_DIR:-/var/cache/janus-tools}"
CACHE="${JANUS_FUZZ_CACHE:-/var/cache/janus-fuzz}"
CARGO_FUZZ_VERSION=0.13.2
log() { echo "fuzz: $*" >&2; }

export PATH="$TOOLS_DIR/bin:$PATH"
if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
    log "installing cargo-fuzz $CARGO_FUZZ_VERSION into $TOOLS_DIR"
    cargo install --locked --quiet --root "$TOOLS_DIR" "cargo-fuzz@$CARGO_FUZZ_VERSION"
fi
export RUSTC_BOOTSTRAP=1
fuzz=(cargo fuzz)
opts=(-s none --target-dir "$CACHE/target")

mkdir -p "$CACHE"
start=$(date +%s)
log "building the targets (instrumented, cached in $CACHE/target)"
"${fuzz[@]}" build "${opts[@]}" >"$CACHE/build.log" 2>&1 || {
    tail -n 60 "$CACHE/build.log" >&2
    log "build failed (whole log: $CACHE/build.log)"
    exit 1
}
log "built in $(( $(date +%s) - start ))s"

targets=$(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^janus-fuzz$')
failed=0
for t in $targets; do
    [ -n "$only" ] && [ "$t" != "$only" ] && continue
    corpus="$CACHE/corpus/$t"
    mkdir -p "$corpus" "$CACHE/artifacts/$t"
    cp -n fuzz/seeds/"$t"/* "$corpus"/ 2>/dev/null || true
    if [ "$t" = guard_yaml ]; then
        for f in deploy/examples/*.yaml ../shared/original-janus/*.yaml; do
            [ -f "$f" ] && cp -n "$f" "$corpus/seed-$(basename "$f")"
        done
    fi
    # Inputs that once failed: each must pass now.
    for r in fuzz/regressions/"$t"/*; do
        [ -f "$r" ] || continue
        if ! "${fuzz[@]}" run "${opts[@]}" "$t" "$r" -- -timeout=10 >"$CACHE/replay.log" 2>&1; then
            tail -n 30 "$CACHE/replay.log" >&2
            log "$t: regression input $r fails again"
            failed=1
        fi
    done
    log "$t: ${seconds}s from $(ls "$corpus" | wc -l) inputs"
    if "${fuzz[@]}" run "${opts[@]}" "$t" "$corpus" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$CACHE/artifacts/$t/" >"$CACHE/run-$t.log" 2>&1; then
        log "$t: $(grep -o 'Done [0-9]* runs in [0-9]* second(s)' "$CACHE/run-$t.log" | tail -n1), corpus $(ls "$corpus" | wc -l)"
    else
        tail -n 40 "$CACHE/run-$t.log" >&2
        log "$t: FAILED; the input is in $CACHE/artifacts/$t/ (add it to fuzz/regressions/$t/ with the fix)"
        failed=1
    fi
done
exit $failed
