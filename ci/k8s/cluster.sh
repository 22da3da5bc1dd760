#!/usr/bin/env bash
# ci/k8s/cluster.sh up|down|status
#
# A real one-node Kubernetes cluster on this machine, everything built from
# source (ci/k8s/build.sh with JANUS_K8S_NODE=1) and every image built here
# (ci/k8s/images.sh, and the Janus images from the shipped Dockerfiles by
# deploy/docker/build.sh): etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, containerd 2 with runc and the CNI bridge plugins, and a
# kubelet (cgroupfs driver, cgroup v1 allowed: PID 1 here is not systemd).
#
#   up      starts it (or leaves a healthy one running), waits until the node
#           is Ready, writes DIR/env (the API server's env from start.sh plus
#           JANUS_NODE_NAME, JANUS_CLUSTER_DIR, JANUS_NODE_IP; the tests read
#           it through JANUS_NODE_ENV), and prints the admin kubeconfig path
#           as its last line
#   down    stops it and removes every trace: pods and containers, their
#           mounts, network namespaces, the CNI bridge and veths, the
#           kubepods cgroups, and the state directory; then checks that none
#           is left and fails, listing them, if any is
#   status  says whether it runs
#
# State lives in ${JANUS_CLUSTER_DIR:-/tmp/janus-cluster} (logs: *.log there),
# except kubelet's root, which is where every kubelet has it (/var/lib/kubelet,
# JANUS_KUBELET_ROOT) so that charts find seccomp profiles where they would on
# any node; `up` refuses one it did not make, `down` removes it.
# The Janus images are imported as ghcr.io/clustergarage/{janusd,janus-controller}
# tagged with the chart's appVersion (the chart's defaults; rebuilt from this
# checkout on every `up`), so `helm install` needs no image values.
# Environment (optional): JANUS_CLUSTER_DIR, JANUS_CLUSTER_TIMEOUT (seconds to
# wait for the node, 240), JANUS_NODE_NAME (janus-node), JANUS_POD_CIDR
# (10.88.0.0/16), JANUS_NODE_IP (default: the source address of the default
# route).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DIR=${JANUS_CLUSTER_DIR:-/tmp/janus-cluster}
TIMEOUT=${JANUS_CLUSTER_TIMEOUT:-240}
NODE=${JANUS_NODE_NAME:-janus-node}
POD_CIDR=${JANUS_POD_CIDR:-10.88.0.0/16}
BRIDGE=janus0
SANDBOX_IMAGE=janus.local/pause:1
CGROUP_ROOT=janus-node
KUBELET_ROOT=${JANUS_KUBELET_ROOT:-/var/lib/kubelet}
# Marks a kubelet root as this script's and names the cluster's DIR (down
# removes only such a one, and only for its own DIR).
KUBELET_MARK=.janus-test-cluster
# The agent's state directory when the chart runs with its defaults
# (agent.stateDir, a hostPath): the cluster's too when `up` made it.
AGENT_STATE=/var/lib/janus
ROOT=$(cd "$HERE/../.." && pwd)

log() { printf '[k8s/cluster %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
	log "ERROR: $*"
	exit 1
}
[[ $(id -u) == 0 ]] || die "needs root (containers, mounts, cgroups)"

pid_alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# stop_pidfile FILE: TERM, then KILL after 10 s.
stop_pidfile() {
	local f=$1 pid
	[[ -f $f ]] || return 0
	pid=$(cat "$f")
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		for _ in $(seq 100); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$f"
}

# The cluster whose kubelet root this is (its DIR, in the marker), if any.
kubelet_root_owner() { cat "$KUBELET_ROOT/$KUBELET_MARK" 2>/dev/null || true; }

down() {
	# One node, one cluster: kubelet's root, the bridge and the iptables
	# chains are the machine's. Never tear down another DIR's cluster.
	local owner
	owner=$(kubelet_root_owner)
	if [[ -n $owner && $owner != "$DIR" && -d $owner ]]; then
		die "this machine's cluster lives in $owner, not $DIR: JANUS_CLUSTER_DIR=$owner $0 down"
	fi
	log "stopping the cluster in $DIR"
	stop_pidfile "$DIR/kubelet.pid"
	if [[ -S $DIR/containerd/containerd.sock ]] && pid_alive "$DIR/containerd.pid"; then
		local ctr=("$DIR/bin/ctr" --address "$DIR/containerd/containerd.sock" -n k8s.io)
		local c
		for c in $("${ctr[@]}" tasks ls -q 2>/dev/null); do
			"${ctr[@]}" tasks kill -s KILL "$c" >/dev/null 2>&1 || true
		done
		sleep 1
		for c in $("${ctr[@]}" tasks ls -q 2>/dev/null); do
			"${ctr[@]}" tasks delete -f "$c" >/dev/null 2>&1 || true
		done
		for c in $("${ctr[@]}" containers ls -q 2>/dev/null); do
			"${ctr[@]}" containers delete "$c" >/dev/null 2>&1 || true
		done
	fi
	stop_pidfile "$DIR/containerd.pid"
	# Shims outlive containerd by design; they belong to this cluster when
	# they serve its state directory.
	local p
	for p in $(pgrep -f "containerd-shim-runc-v2 .*-address $DIR/" 2>/dev/null || true); do
		kill -KILL "$p" 2>/dev/null || true
	done
	stop_pidfile "$DIR/kube-proxy.pid"
	stop_pidfile "$DIR/kube-scheduler.pid"
	stop_pidfile "$DIR/kube-controller-manager.pid"
	if [[ -d $DIR/api ]]; then
		"$HERE/stop.sh" "$DIR/api" >/dev/null 2>&1 || true
	fi
	# Mounts under the state dir and kubelet's root (overlay roots, shm,
	# tmpfs and projected volumes), deepest first.
	local m
	# (kubelet bind-mounts its root on itself to make it shared.)
	for m in $(awk -v d="$DIR/" -v k="$KUBELET_ROOT" 'index($2, d) == 1 || $2 == k || index($2, k "/") == 1 {print $2}' /proc/self/mounts | sort -r); do
		umount -l "$m" 2>/dev/null || true
	done
	if [[ -e $KUBELET_ROOT/$KUBELET_MARK ]]; then
		rm -rf "$KUBELET_ROOT"
	fi
	if [[ -e $AGENT_STATE/$KUBELET_MARK ]]; then
		rm -rf "$AGENT_STATE"
	fi
	# Network: the namespaces CNI made, the bridge (its veths go with the namespaces).
	for m in $(awk '$2 ~ "^/(var/)?run/netns/cni-" {print $2}' /proc/self/mounts); do
		umount -l "$m" 2>/dev/null || true
		rm -f "$m"
	done
	ip link delete "$BRIDGE" 2>/dev/null || true
	# cgroups kubelet made (cgroupfs driver): every hierarchy's tree under
	# the cgroup root.
	local h
	for h in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
		[[ -d $h$CGROUP_ROOT ]] || continue
		find "$h$CGROUP_ROOT" -depth -type d -exec rmdir {} + 2>/dev/null || true
	done
	rm -rf "$DIR"
	# kube-proxy's and kubelet's iptables chains (KUBE-*) outlive them: drop
	# every rule and chain naming KUBE-, keep the rest of each table. Last,
	# when nothing that writes them runs any more; again if one reappears
	# (a process still exiting).
	# (Saved to a variable first: `save | grep -q` fails under pipefail when
	# grep exits before save has written everything.)
	local ipt try rules
	for try in 1 2 3 4 5; do
		for ipt in iptables ip6tables; do
			command -v "$ipt-save" >/dev/null || continue
			rules=$("$ipt-save" 2>/dev/null) || continue
			if [[ $rules == *KUBE-* ]]; then
				grep -v 'KUBE-' <<<"$rules" | "$ipt-restore" || log "could not remove the KUBE-* $ipt rules (try $try)"
			fi
		done
		[[ $(iptables-save 2>/dev/null; ip6tables-save 2>/dev/null) == *KUBE-* ]] || break
		sleep 1
	done
	local left
	left=$(leftovers)
	[[ -z $left ]] || die "down left traces behind:
$left"
	log "down: nothing of the cluster is left"
}

# What of a cluster is still on the machine (empty when nothing).
leftovers() {
	awk -v d="$DIR/" -v k="$KUBELET_ROOT" 'index($2, d) == 1 || $2 == k || index($2, k "/") == 1 {print "mount " $2}' /proc/self/mounts
	awk '$2 ~ "^/(var/)?run/netns/cni-" {print "netns " $2}' /proc/self/mounts
	# Any process still using the state directory (components, shims).
	pgrep -af -- "$DIR/" | grep -v "^$$ " | sed 's/^/process /' || true
	ip link show "$BRIDGE" >/dev/null 2>&1 && echo "bridge $BRIDGE"
	local ipt rules
	for ipt in iptables ip6tables; do
		rules=$("$ipt-save" 2>/dev/null) || continue
		grep 'KUBE-' <<<"$rules" | head -n 5 | sed "s/^/$ipt /" || true
	done
	local h
	for h in /sys/fs/cgroup/*/$CGROUP_ROOT /sys/fs/cgroup/$CGROUP_ROOT; do
		[[ -d $h ]] && echo "cgroup $h"
	done
	[[ -e $DIR ]] && echo "directory $DIR"
	[[ -e $KUBELET_ROOT/$KUBELET_MARK ]] && echo "directory $KUBELET_ROOT"
	[[ -e $AGENT_STATE/$KUBELET_MARK ]] && echo "directory $AGENT_STATE"
	return 0
}

status() {
	if pid_alive "$DIR/kubelet.pid" && pid_alive "$DIR/containerd.pid" && [[ -f $DIR/admin.kubeconfig ]]; then
		echo "running ($DIR)"
	else
		echo "not running"
		return 1
	fi
}

# Every component started so far is still running, or die with its log.
alive() {
	local f name
	for f in "$DIR"/*.pid; do
		[[ -e $f ]] || continue
		name=$(basename "$f" .pid)
		if ! kill -0 "$(cat "$f")" 2>/dev/null; then
			grep -v 'FLAG:' "$DIR/$name.log" 2>/dev/null | tail -n 20 >&2 || true
			die "$name exited (log $DIR/$name.log)"
		fi
	done
}

wait_for() { # WHAT CMD...
	local what=$1 deadline=$((SECONDS + TIMEOUT))
	shift
	until "$@" >/dev/null 2>&1; do
		alive
		((SECONDS < deadline)) || die "$what not true after ${TIMEOUT}s (logs: $DIR/*.log)"
		sleep 1
	done
}

up() {
	if status >/dev/null 2>&1; then
		log "already running"
		echo "$DIR/admin.kubeconfig"
		return 0
	fi
	local owner
	owner=$(kubelet_root_owner)
	if [[ -n $owner && $owner != "$DIR" && -d $owner ]]; then
		die "a cluster from $owner runs on this machine (one per machine): JANUS_CLUSTER_DIR=$owner $0 down first"
	fi
	[[ -d $DIR || -e $KUBELET_ROOT/$KUBELET_MARK ]] && down
	# (device-plugins/ is made by any kubelet, whatever its root: the path is
	# fixed in kubelet.)
	local other
	other=$(find "$KUBELET_ROOT" -mindepth 1 -maxdepth 1 ! -name device-plugins 2>/dev/null | head -n 3 || true)
	[[ -z $other ]] || die "$KUBELET_ROOT holds files this script did not make ($other ...): a kubelet runs or ran here; set JANUS_KUBELET_ROOT to another directory"
	local need=()
	command -v iptables-restore >/dev/null || need+=(iptables)
	command -v ip >/dev/null || need+=(iproute2)
	command -v pgrep >/dev/null || need+=(procps)
	if ((${#need[@]})); then
		log "installing ${need[*]} (apt-get)"
		{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"; } >&2 ||
			die "apt-get install ${need[*]} failed"
	fi
	mkdir -p "$DIR"/{bin,cni/net.d,containerd,kubelet,images}
	# The node's address: kubelet refuses a loopback one; the API server
	# reaches kubelet there (exec, logs).
	NODE_IP=${JANUS_NODE_IP:-$(ip -4 route get 1.1.1.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p')}
	[[ -n $NODE_IP ]] || NODE_IP=$(ip -4 -o addr show scope global | awk '{sub("/.*", "", $4); print $4; exit}')
	[[ -n $NODE_IP ]] || die "no non-loopback IPv4 address for the node; set JANUS_NODE_IP"

	local k8s_bin node_bin
	k8s_bin=$(JANUS_K8S_NODE=1 "$HERE/build.sh" | tail -n1)
	node_bin=$k8s_bin
	# Binaries through one directory so containerd finds the shim and runc on PATH.
	local b
	for b in etcd kube-apiserver kubectl kubelet kube-controller-manager kube-scheduler kube-proxy \
		containerd containerd-shim-runc-v2 ctr runc; do
		ln -sf "$node_bin/$b" "$DIR/bin/$b"
	done
	mkdir -p "$DIR/bin/cni"
	for b in bridge host-local loopback; do ln -sf "$node_bin/cni/$b" "$DIR/bin/cni/$b"; done
	export PATH=$DIR/bin:$PATH

	# ---- control plane: etcd + kube-apiserver (start.sh), with Node authorization,
	# the default admission plugins, and a client certificate for kubelets.
	local pki=$DIR/api/pki
	JANUS_K8S_BIN=$k8s_bin JANUS_K8S_AUTHORIZATION_MODE=Node,RBAC JANUS_K8S_DISABLE_ADMISSION= \
		JANUS_K8S_BIND_ADDRESS=0.0.0.0 JANUS_K8S_ADVERTISE_ADDRESS=$NODE_IP \
		JANUS_K8S_APISERVER_ARGS="--enable-admission-plugins=NodeRestriction --kubelet-preferred-address-types=InternalIP --kubelet-client-certificate=$pki/users/janus-admin.crt --kubelet-client-key=$pki/users/janus-admin.key" \
		"$HERE/start.sh" "$DIR/api" >/dev/null
	cp -f "$DIR/api/admin.kubeconfig" "$DIR/admin.kubeconfig"
	local node_kc
	node_kc=$("$HERE/user.sh" "$DIR/api" "system:node:$NODE" system:nodes)

	log "starting kube-controller-manager and kube-scheduler"
	kube-controller-manager --kubeconfig="$DIR/admin.kubeconfig" --authentication-kubeconfig="$DIR/admin.kubeconfig" \
		--authorization-kubeconfig="$DIR/admin.kubeconfig" --leader-elect=false --bind-address=127.0.0.1 --secure-port=10257 \
		--service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/ca.crt" --use-service-account-credentials=true \
		--controllers='*,-nodeipam' --v=1 </dev/null >"$DIR/kube-controller-manager.log" 2>&1 &
	echo $! >"$DIR/kube-controller-manager.pid"
	kube-scheduler --kubeconfig="$DIR/admin.kubeconfig" --authentication-kubeconfig="$DIR/admin.kubeconfig" \
		--authorization-kubeconfig="$DIR/admin.kubeconfig" --leader-elect=false --bind-address=127.0.0.1 --secure-port=10259 \
		--v=1 </dev/null >"$DIR/kube-scheduler.log" 2>&1 &
	echo $! >"$DIR/kube-scheduler.pid"

	# kube-proxy (iptables): pods reach the API server through the
	# "kubernetes" Service (10.0.0.1:443), as in-cluster clients do.
	kube-proxy --kubeconfig="$DIR/admin.kubeconfig" --hostname-override="$NODE" --cluster-cidr="$POD_CIDR" \
		--proxy-mode=iptables --bind-address=127.0.0.1 --metrics-bind-address=127.0.0.1:10249 \
		--healthz-bind-address=127.0.0.1:10256 --conntrack-max-per-core=0 --v=1 \
		</dev/null >"$DIR/kube-proxy.log" 2>&1 &
	echo $! >"$DIR/kube-proxy.pid"

	# ---- containerd
	cat >"$DIR/containerd/config.toml" <<EOF
version = 3
root = '$DIR/containerd/root'
state = '$DIR/containerd/state'
[grpc]
  address = '$DIR/containerd/containerd.sock'
[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = '$SANDBOX_IMAGE'
[plugins.'io.containerd.cri.v1.runtime']
  # Never ask for a lower oom_score_adj than containerd's own: lowering it
  # needs CAP_SYS_RESOURCE, which these machines' root does not have.
  restrict_oom_score_adj = true
[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
  runtime_type = 'io.containerd.runc.v2'
[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
  BinaryName = '$DIR/bin/runc'
  SystemdCgroup = false
[plugins.'io.containerd.cri.v1.runtime'.cni]
  bin_dirs = ['$DIR/bin/cni']
  conf_dir = '$DIR/cni/net.d'
EOF
	cat >"$DIR/cni/net.d/10-janus.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "janus",
 "plugins": [{"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false,
              "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}]}}]}
EOF
	log "starting containerd (log $DIR/containerd.log)"
	containerd --config "$DIR/containerd/config.toml" </dev/null >"$DIR/containerd.log" 2>&1 &
	echo $! >"$DIR/containerd.pid"
	wait_for "containerd answering" ctr --address "$DIR/containerd/containerd.sock" version

	# ---- images, imported by exact name (nothing is pulled)
	local archives
	archives=$("$HERE/images.sh" | tail -n1)
	local a
	for a in "$archives"/*.tar; do
		ctr --address "$DIR/containerd/containerd.sock" -n k8s.io images import --no-unpack=false "$a" >/dev/null ||
			die "import $a into containerd"
	done
	# The Janus images, from the shipped Dockerfiles (deploy/docker/), under
	# the chart's default names.
	archives=$("$ROOT/deploy/docker/build.sh" | tail -n1)
	for a in "$archives"/janusd.tar "$archives"/janus-controller.tar; do
		ctr --address "$DIR/containerd/containerd.sock" -n k8s.io images import --no-unpack=false "$a" >/dev/null ||
			die "import $a into containerd"
	done
	log "images: $(ctr --address "$DIR/containerd/containerd.sock" -n k8s.io images ls -q | tr '\n' ' ')"

	# ---- kubelet
	cat >"$DIR/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
# Pods under /$CGROUP_ROOT/kubepods, not /kubepods: the test suite makes
# pretend pod cgroups under /kubepods, which this kubelet would remove as
# orphans.
cgroupRoot: /$CGROUP_ROOT
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$DIR/containerd/containerd.sock
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: Webhook}
address: $NODE_IP
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
resolvConf: /etc/resolv.conf
# A test machine's disk is small and shared: never evict for disk.
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
podPidsLimit: 4096
serializeImagePulls: false
EOF
	# kubelet wants its cgroup root in every hierarchy; a new cpuset cgroup
	# starts with no CPUs and memory nodes, so give it its parent's.
	local h
	for h in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
		[[ -e ${h}cgroup.procs ]] || continue
		mkdir -p "$h$CGROUP_ROOT"
		if [[ -e ${h}cpuset.cpus && -e $h$CGROUP_ROOT/cpuset.cpus ]]; then
			[[ -n $(cat "$h$CGROUP_ROOT/cpuset.cpus") ]] || cat "${h}cpuset.cpus" >"$h$CGROUP_ROOT/cpuset.cpus"
			[[ -n $(cat "$h$CGROUP_ROOT/cpuset.mems") ]] || cat "${h}cpuset.mems" >"$h$CGROUP_ROOT/cpuset.mems"
		fi
	done
	mkdir -p "$KUBELET_ROOT"
	echo "$DIR" >"$KUBELET_ROOT/$KUBELET_MARK"
	# An agent state directory that was here before is someone else's: left
	# alone (and not removed by down).
	if [[ ! -e $AGENT_STATE ]]; then
		mkdir -p "$AGENT_STATE"
		echo "$DIR" >"$AGENT_STATE/$KUBELET_MARK"
	fi
	log "starting kubelet as node $NODE (log $DIR/kubelet.log)"
	kubelet --config="$DIR/kubelet/config.yaml" --kubeconfig="$node_kc" --root-dir="$KUBELET_ROOT" \
		--cert-dir="$DIR/kubelet/pki" --hostname-override="$NODE" --node-ip="$NODE_IP" --v=1 \
		</dev/null >"$DIR/kubelet.log" 2>&1 &
	echo $! >"$DIR/kubelet.pid"

	export KUBECONFIG=$DIR/admin.kubeconfig
	wait_for "node $NODE registered" kubectl get node "$NODE"
	wait_for "node $NODE Ready" kubectl wait --for=condition=Ready "node/$NODE" --timeout=5s
	wait_for "ServiceAccount default/default" kubectl get serviceaccount default -n default
	{
		cat "$DIR/api/env"
		printf 'export JANUS_NODE_NAME=%q\nexport JANUS_CLUSTER_DIR=%q\nexport JANUS_NODE_IP=%q\nexport JANUS_KUBELET_ROOT=%q\nexport JANUS_CONTAINERD_SOCK=%q\n' \
			"$NODE" "$DIR" "$NODE_IP" "$KUBELET_ROOT" "$DIR/containerd/containerd.sock"
	} >"$DIR/env"
	log "up: node $NODE Ready; KUBECONFIG=$DIR/admin.kubeconfig; env for tests: $DIR/env"
	echo "$DIR/admin.kubeconfig"
}

case ${1:-} in
up) up ;;
down) down ;;
status) status ;;
*) die "usage: $0 up|down|status" ;;
esac
