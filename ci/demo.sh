#!/usr/bin/env bash
# Builds janusd, creates /tmp/janus-demo, enforces deploy/examples/demo-guard.yaml
# with `janusd standalone`, and shows what another process may and may not
# open, with the audit lines janusd prints. Needs root (fanotify).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
	echo "ci/demo.sh: needs root (fanotify permission events need CAP_SYS_ADMIN); run: sudo $0" >&2
	exit 1
fi
echo "== building janusd (release)"
cargo build --release -p janus-agent --bin janusd
demo=/tmp/janus-demo
umount -R -l "$demo" 2>/dev/null || true
rm -rf "$demo"
mkdir -p "$demo"
# janusd marks the whole mount holding a guarded tree (so files created in
# new directories are decided too): give the demo a mount of its own rather
# than marking this machine's root filesystem.
mount --bind "$demo" "$demo"
mkdir -p "$demo"/secrets/public "$demo"/app "$demo"/bin "$demo"/logs
echo "db-password" >"$demo"/secrets/db
echo "welcome" >"$demo"/secrets/public/readme
echo "-----BEGIN KEY-----" >"$demo"/app/server.key
echo "config" >"$demo"/app/config
echo "log line" >"$demo"/logs/app.log
cp /bin/true "$demo"/bin/tool

audit=$(mktemp)
./target/release/janusd standalone -f deploy/examples/demo-guard.yaml >"$audit" 2>"$audit.log" &
pid=$!
cleanup() {
	kill -TERM "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	rm -f "$audit" "$audit.log"
	umount -R -l "$demo" 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 100); do
	grep -q "standalone ready" "$audit.log" 2>/dev/null && break
	kill -0 "$pid" 2>/dev/null || { cat "$audit.log"; echo "janusd exited early" >&2; exit 1; }
	sleep 0.1
done
grep -q "standalone ready" "$audit.log" || { cat "$audit.log"; echo "janusd did not become ready" >&2; exit 1; }
sed 's/^/  janusd: /' "$audit.log"

fails=0
try() { # expect command...
	local expect=$1; shift
	if "$@" >/dev/null 2>&1; then got=allowed; else got=denied; fi
	printf '  %-8s %-45s (expected %s)\n' "$got" "$*" "$expect"
	[ "$got" = "$expect" ] || fails=$((fails + 1))
}
echo "== another process opens files under $demo"
try denied  cat "$demo"/secrets/db
try allowed cat "$demo"/secrets/public/readme
try denied  cat "$demo"/app/server.key
try allowed cat "$demo"/app/config
try allowed cat "$demo"/bin/tool
try denied  "$demo"/bin/tool
# The dynamic loader running it is an exec too.
[ -e /lib64/ld-linux-x86-64.so.2 ] && try denied /lib64/ld-linux-x86-64.so.2 "$demo"/bin/tool
try allowed cat "$demo"/logs/app.log
# A key file created while janusd runs: even the creating open(O_CREAT) is
# decided like any other open, so the shell's redirection is refused.
try denied  sh -c "echo new >$demo/app/created-later.key"
try denied  cat "$demo"/app/created-later.key
# A file in a directory made an instant before: decided on its first open.
try denied  sh -c "mkdir $demo/secrets/new $demo/secrets/new/deeper && echo x >$demo/secrets/new/deeper/f"
sleep 0.3
echo "== audit records (JSON lines on janusd's stdout)"
cat "$audit"
kill -TERM "$pid"
wait "$pid" && echo "== janusd stopped cleanly (exit 0); every mark released"
trap - EXIT
rm -f "$audit" "$audit.log"
try allowed cat "$demo"/secrets/db
umount -R -l "$demo"
if [ "$fails" != 0 ]; then
	echo "demo: $fails result(s) differ from what the guard says" >&2
	exit 1
fi
echo "demo: all results as expected"
