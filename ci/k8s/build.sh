#!/usr/bin/env bash
# Builds a pinned kube-apiserver (module k8s.io/kubernetes), etcd (module
# go.etcd.io/etcd/server/v3) and, unless JANUS_K8S_KUBECTL=0, kubectl from
# source with Go and its module proxy, into a cache outside the repo:
#
#   ${JANUS_K8S_CACHE:-/var/cache/janus-k8s}/<k8s-version>-<etcd-version>/bin/
#
# Idempotent: when the binaries are already there it only prints their path.
# Prints the bin directory as its last line of stdout (progress goes to
# stderr), so callers can do:  bin=$(ci/k8s/build.sh | tail -n1)
#
# Environment (all optional):
#   JANUS_K8S_VERSION       k8s.io/kubernetes version      (default below)
#   JANUS_ETCD_VERSION      go.etcd.io/etcd/server/v3 ver. (default below)
#   JANUS_K8S_CACHE         cache root                     (/var/cache/janus-k8s)
#   JANUS_K8S_KUBECTL       1 = build kubectl too, 0 = not (1)
#   JANUS_K8S_NODE          1 = also build what a node runs (0): kubelet,
#                           kube-controller-manager, kube-scheduler, containerd
#                           (+ shim, ctr), runc (with seccomp: needs
#                           libseccomp-dev and gcc, installed with apt-get when
#                           missing) and the CNI plugins bridge, host-local,
#                           loopback (in bin/cni/) — for ci/k8s/cluster.sh
#   JANUS_CONTAINERD_VERSION, JANUS_RUNC_VERSION, JANUS_CNI_VERSION
#                           their versions (defaults below)
#   JANUS_K8S_BUILD_TIMEOUT seconds allowed per go command (3600)
#   JANUS_K8S_LOCK_TIMEOUT  seconds to wait for another build of the same
#                           cache to finish (3600)
#   GOPROXY, GOTOOLCHAIN    passed to go as usual
set -euo pipefail

K8S_VERSION=${JANUS_K8S_VERSION:-v1.37.2}
ETCD_VERSION=${JANUS_ETCD_VERSION:-v3.7.3}
CACHE_ROOT=${JANUS_K8S_CACHE:-/var/cache/janus-k8s}
BUILD_KUBECTL=${JANUS_K8S_KUBECTL:-1}
BUILD_NODE=${JANUS_K8S_NODE:-0}
CONTAINERD_VERSION=${JANUS_CONTAINERD_VERSION:-v2.4.2}
RUNC_VERSION=${JANUS_RUNC_VERSION:-v1.5.3}
CNI_VERSION=${JANUS_CNI_VERSION:-v1.10.0}
BUILD_TIMEOUT=${JANUS_K8S_BUILD_TIMEOUT:-3600}
LOCK_TIMEOUT=${JANUS_K8S_LOCK_TIMEOUT:-3600}

DEST=$CACHE_ROOT/$K8S_VERSION-$ETCD_VERSION
((BUILD_NODE == 1)) && DEST+=-node-containerd$CONTAINERD_VERSION-runc$RUNC_VERSION-cni$CNI_VERSION
BIN=$DEST/bin
WORK=$DEST/work
LOGS=$DEST/logs

log() { printf '[k8s/build %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
	log "ERROR: $*"
	exit 1
}

for tool in go flock timeout; do
	command -v "$tool" >/dev/null || die "'$tool' not found in PATH"
done
[[ $K8S_VERSION =~ ^v1\.([0-9]+)\.([0-9]+)$ ]] ||
	die "JANUS_K8S_VERSION must look like v1.37.2, got '$K8S_VERSION'"
K8S_MINOR=${BASH_REMATCH[1]}
K8S_PATCH=${BASH_REMATCH[2]}
# The staging modules (k8s.io/api, apimachinery, client-go, apiserver, ...) are
# published as v0.<minor>.<patch> for kubernetes v1.<minor>.<patch>.
STAGING_VERSION=v0.$K8S_MINOR.$K8S_PATCH
[[ $ETCD_VERSION =~ ^v3\.[0-9]+\.[0-9]+$ ]] ||
	die "JANUS_ETCD_VERSION must look like v3.7.3, got '$ETCD_VERSION'"

wanted=(kube-apiserver etcd)
[[ $BUILD_KUBECTL == 1 || $BUILD_NODE == 1 ]] && wanted+=(kubectl)
NODE_K8S=(kubelet kube-controller-manager kube-scheduler kube-proxy)
[[ $BUILD_NODE == 1 ]] && wanted+=("${NODE_K8S[@]}" containerd containerd-shim-runc-v2 ctr runc cni/bridge cni/host-local cni/loopback)

have_all() {
	local b
	for b in "${wanted[@]}"; do
		[[ -x $BIN/$b ]] || return 1
	done
}

if have_all; then
	log "cached: ${wanted[*]} in $BIN (nothing to build)"
	echo "$BIN"
	exit 0
fi

mkdir -p "$DEST" "$LOGS" || die "cannot create $DEST (set JANUS_K8S_CACHE to a writable directory)"
exec 9>"$DEST/.lock"
if ! flock -n 9; then
	log "another build of $DEST is running; waiting up to ${LOCK_TIMEOUT}s for it"
	flock -w "$LOCK_TIMEOUT" 9 || die "timed out after ${LOCK_TIMEOUT}s waiting for the lock $DEST/.lock"
fi
if have_all; then # built by whoever held the lock
	log "cached: ${wanted[*]} in $BIN (built by a concurrent run)"
	echo "$BIN"
	exit 0
fi

# Go settings: own module and build caches under the cache root, so a build
# never depends on (or pollutes) whatever else the machine has, and the size is
# easy to see. GOFLAGS is replaced, not extended: -mod=mod lets go get/build
# update the wrapper modules' go.mod.
export GOMODCACHE=$CACHE_ROOT/go/mod
export GOCACHE=$CACHE_ROOT/go/build
export GOFLAGS="-mod=mod -buildvcs=false"
export CGO_ENABLED=0
export GOTOOLCHAIN=${GOTOOLCHAIN:-local}
export GOPROXY=${GOPROXY:-https://proxy.golang.org,direct}
export GOWORK=off
mkdir -p "$GOMODCACHE" "$GOCACHE" "$BIN" "$WORK"

log "go: $(go version) (GOTOOLCHAIN=$GOTOOLCHAIN)"
log "target: kube-apiserver $K8S_VERSION (staging modules $STAGING_VERSION), etcd $ETCD_VERSION$([[ $BUILD_KUBECTL == 1 ]] && echo ", kubectl $K8S_VERSION")"
log "cache: $DEST (Go module cache $GOMODCACHE, build cache $GOCACHE)"
T0=$SECONDS

# run_go LOGFILE WHAT ARGS...: runs go with a timeout, output to LOGFILE,
# printing a heartbeat every 30s and the tail of the log on failure.
run_go() {
	local logfile=$1 what=$2
	shift 2
	local start=$SECONDS rc=0 pid
	log "$what: go $*"
	timeout --kill-after=30 "$BUILD_TIMEOUT" go "$@" >"$logfile" 2>&1 &
	pid=$!
	while kill -0 "$pid" 2>/dev/null; do
		# sleep in short steps so a fast command returns quickly
		for _ in $(seq 30); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 1
		done
		if kill -0 "$pid" 2>/dev/null; then
			log "$what: still running after $((SECONDS - start))s ($(wc -l <"$logfile") log lines; $logfile)"
		fi
	done
	wait "$pid" || rc=$?
	if ((rc != 0)); then
		if ((rc == 124 || rc == 137)); then
			log "$what: timed out after ${BUILD_TIMEOUT}s (JANUS_K8S_BUILD_TIMEOUT)"
		fi
		log "$what: FAILED (exit $rc) after $((SECONDS - start))s; last lines of $logfile:"
		tail -n 40 "$logfile" >&2
		exit 1
	fi
	log "$what: done in $((SECONDS - start))s"
}

# ---- kube-apiserver (+ kubectl) -------------------------------------------
# `go install k8s.io/kubernetes/cmd/kube-apiserver@vX` is refused: the
# kubernetes go.mod replaces its staging modules with ./staging/src/k8s.io/*
# (and requires them at v0.0.0). A wrapper module requiring k8s.io/kubernetes
# and replacing each staging module with its published v0.Y.Z does build.
k8s_build() {
	local mod=$WORK/kubernetes
	mkdir -p "$mod"
	log "kubernetes: reading k8s.io/kubernetes@$K8S_VERSION go.mod for its staging modules"
	local json gomod
	json=$(cd "$mod" && timeout 600 go mod download -json "k8s.io/kubernetes@$K8S_VERSION" 2>&1) ||
		die "go mod download k8s.io/kubernetes@$K8S_VERSION failed:
$json"
	gomod=$(sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p' <<<"$json" | head -n1)
	[[ -n $gomod && -f $gomod ]] || die "no GoMod path in go mod download output:
$json"
	local staging
	staging=$(sed -n 's#^[[:space:]]*\(k8s\.io/[^[:space:]]*\) => \./staging/.*#\1#p' "$gomod" | sort -u)
	[[ -n $staging ]] || die "found no staging replace directives in $gomod"
	log "kubernetes: pinning $(wc -w <<<"$staging") staging modules to $STAGING_VERSION"
	{
		echo "// Generated by ci/k8s/build.sh: builds k8s.io/kubernetes commands."
		echo "module janus.local/k8s-build/kubernetes"
		echo
		echo "go $(sed -n 's/^go \([0-9.]*\).*/\1/p' "$gomod")"
		echo
		echo "require k8s.io/kubernetes $K8S_VERSION"
		echo
		echo "replace ("
		local m
		for m in $staging; do
			echo "	$m => $m $STAGING_VERSION"
		done
		echo ")"
	} >"$mod/go.mod"
	rm -f "$mod/go.sum"

	local pkgs=(k8s.io/kubernetes/cmd/kube-apiserver)
	[[ $BUILD_KUBECTL == 1 || $BUILD_NODE == 1 ]] && pkgs+=(k8s.io/kubernetes/cmd/kubectl)
	if [[ $BUILD_NODE == 1 ]]; then
		local c
		for c in "${NODE_K8S[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
	fi
	(cd "$mod" && run_go "$LOGS/kubernetes-get.log" "kubernetes: resolve+download modules" \
		get "${pkgs[@]/%/@$K8S_VERSION}")

	# Version stamping as the kubernetes release build does (hack/lib/version.sh),
	# so /version and --version report the real version.
	local vpkg=k8s.io/component-base/version
	local ldflags="-s -w"
	ldflags+=" -X $vpkg.gitVersion=$K8S_VERSION -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=$K8S_MINOR"
	ldflags+=" -X $vpkg.gitTreeState=clean -X $vpkg.buildDate=1970-01-01T00:00:00Z"
	ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$K8S_MINOR"

	local p name
	for p in "${pkgs[@]}"; do
		name=${p##*/}
		[[ -x $BIN/$name ]] && {
			log "$name: cached"
			continue
		}
		(cd "$mod" && run_go "$LOGS/$name-build.log" "$name: compile+link" \
			build -v -trimpath -tags=providerless,dockerless -ldflags="$ldflags" -o "$BIN/.$name.tmp" "$p")
		mv -f "$BIN/.$name.tmp" "$BIN/$name"
	done
}

# ---- etcd ----------------------------------------------------------------
# go.etcd.io/etcd/server/v3 is the etcd main package (server/main.go); its
# go.mod replaces sibling modules with ../api etc., so `go install` is refused
# too. Its requirements are real versions, so a wrapper module needs no replace.
etcd_build() {
	[[ -x $BIN/etcd ]] && {
		log "etcd: cached"
		return
	}
	local mod=$WORK/etcd
	mkdir -p "$mod"
	printf '// Generated by ci/k8s/build.sh: builds etcd.\nmodule janus.local/k8s-build/etcd\n\ngo 1.26.0\n\nrequire go.etcd.io/etcd/server/v3 %s\n' \
		"$ETCD_VERSION" >"$mod/go.mod"
	rm -f "$mod/go.sum"
	(cd "$mod" && run_go "$LOGS/etcd-get.log" "etcd: resolve+download modules" \
		get "go.etcd.io/etcd/server/v3@$ETCD_VERSION")
	# The release build stamps the git SHA only; the version is a constant.
	(cd "$mod" && run_go "$LOGS/etcd-build.log" "etcd: compile+link" \
		build -v -trimpath -ldflags="-s -w" -o "$BIN/.etcd.tmp" go.etcd.io/etcd/server/v3)
	mv -f "$BIN/.etcd.tmp" "$BIN/etcd"
}

# ---- node: containerd, runc, CNI plugins -----------------------------------
# containerd and the CNI plugins have no replace directives: `go install
# module/cmd@version` builds them. runc needs cgo (its nsexec is C) and
# libseccomp for seccomp profiles.
node_build() {
	[[ $BUILD_NODE == 1 ]] || return 0
	local c
	if [[ ! -x $BIN/containerd || ! -x $BIN/containerd-shim-runc-v2 || ! -x $BIN/ctr ]]; then
		local cpkgs=()
		for c in containerd containerd-shim-runc-v2 ctr; do
			cpkgs+=("github.com/containerd/containerd/v2/cmd/$c@$CONTAINERD_VERSION")
		done
		(cd "$WORK" && export GOBIN=$BIN && run_go "$LOGS/containerd-build.log" "containerd $CONTAINERD_VERSION" \
			install -trimpath -tags no_btrfs -ldflags="-s -w" "${cpkgs[@]}")
	fi
	if [[ ! -x $BIN/cni/bridge || ! -x $BIN/cni/host-local || ! -x $BIN/cni/loopback ]]; then
		mkdir -p "$BIN/cni"
		(cd "$WORK" && export GOBIN=$BIN/cni && run_go "$LOGS/cni-build.log" "CNI plugins $CNI_VERSION" \
			install -trimpath -ldflags="-s -w" \
			"github.com/containernetworking/plugins/plugins/main/bridge@$CNI_VERSION" \
			"github.com/containernetworking/plugins/plugins/ipam/host-local@$CNI_VERSION" \
			"github.com/containernetworking/plugins/plugins/main/loopback@$CNI_VERSION")
	fi
	if [[ ! -x $BIN/runc ]]; then
		if [[ ! -f /usr/include/seccomp.h ]] || ! command -v gcc >/dev/null; then
			log "runc needs gcc and libseccomp-dev: apt-get install -y gcc libc6-dev libseccomp-dev"
			{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q gcc libc6-dev libseccomp-dev; } >"$LOGS/apt-runc.log" 2>&1 ||
				die "apt-get install gcc libc6-dev libseccomp-dev failed (log $LOGS/apt-runc.log)"
		fi
		(cd "$WORK" && export CGO_ENABLED=1 GOBIN=$BIN && run_go "$LOGS/runc-build.log" "runc $RUNC_VERSION" \
			install -trimpath -tags seccomp -ldflags="-s -w" "github.com/opencontainers/runc@$RUNC_VERSION")
	fi
}

k8s_build
etcd_build
node_build

have_all || die "build finished but not all of ${wanted[*]} are in $BIN"
log "built ${wanted[*]} in $((SECONDS - T0))s:"
for b in "${wanted[@]}"; do
	log "  $BIN/$b ($(du -h "$BIN/$b" | cut -f1))"
done
log "versions: $("$BIN/kube-apiserver" --version 2>&1 | head -n1); etcd $("$BIN/etcd" --version 2>&1 | sed -n 's/^etcd Version: //p')"
log "Go caches: $(du -sh "$GOMODCACHE" | cut -f1) modules, $(du -sh "$GOCACHE" | cut -f1) build cache (under $CACHE_ROOT/go; safe to delete with: GOMODCACHE=$GOMODCACHE go clean -modcache; rm -rf $GOCACHE)"
echo "$BIN"
