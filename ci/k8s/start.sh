#!/usr/bin/env bash
# ci/k8s/start.sh DIR
#
# Starts etcd and kube-apiserver on 127.0.0.1 for end-to-end tests, with all
# state under DIR:
#   DIR/pki/                CA, serving cert, service-account key pair, user certs
#   DIR/etcd-data/          etcd data (wiped on every fresh start)
#   DIR/etcd.log, DIR/kube-apiserver.log
#   DIR/etcd.pid, DIR/kube-apiserver.pid
#   DIR/admin.kubeconfig       user janus-admin, group system:masters (cluster admin)
#   DIR/controller.kubeconfig  user janus-controller, no groups (RBAC: nothing
#                              until a binding names it)
#   DIR/env                 shell exports (source it): KUBECONFIG, JANUS_K8S_* (see below)
# and prints the path of DIR/env as its last line of stdout.
#
# The binaries come from ci/k8s/build.sh (run here; it only builds when its
# cache is empty), or from JANUS_K8S_BIN when set.
#
# Idempotent: when DIR already has a healthy server it is left running as it
# is. Otherwise leftovers from an earlier run in DIR are stopped and a fresh
# server starts with an empty etcd (the PKI and user certs in DIR are kept).
#
# Environment (all optional):
#   JANUS_K8S_BIN            directory with kube-apiserver and etcd (skips build.sh)
#   JANUS_K8S_START_TIMEOUT  seconds to wait for etcd + /readyz (180)
#   JANUS_K8S_APISERVER_PORT, JANUS_K8S_ETCD_PORT, JANUS_K8S_ETCD_PEER_PORT
#                            fixed ports (default: free ports picked at random
#                            in 20000-31999)
#   JANUS_K8S_APISERVER_ARGS extra kube-apiserver flags (word-split)
#   JANUS_K8S_BIND_ADDRESS, JANUS_K8S_ADVERTISE_ADDRESS
#                            where it listens and what the "kubernetes" Service
#                            points at (127.0.0.1; cluster.sh: 0.0.0.0 and the
#                            node's IP, so pods reach it through the Service)
#   JANUS_K8S_AUTHORIZATION_MODE  --authorization-mode (RBAC; cluster.sh: Node,RBAC)
#   JANUS_K8S_DISABLE_ADMISSION   --disable-admission-plugins (ServiceAccount;
#                            cluster.sh sets it empty: a controller-manager runs)
#   JANUS_K8S_ETCD_FSYNC=1   keep etcd's fsync (default: --unsafe-no-fsync, faster;
#                            the data is thrown away anyway)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
log() { printf '[k8s/start %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
	log "ERROR: $*"
	exit 1
}

(($# == 1)) || die "usage: $0 DIR"
mkdir -p "$1" || die "cannot create $1"
DIR=$(cd "$1" && pwd)
TIMEOUT=${JANUS_K8S_START_TIMEOUT:-180}
PKI=$DIR/pki

for tool in openssl curl base64; do
	command -v "$tool" >/dev/null || die "'$tool' not found in PATH"
done

# ---- already running? -------------------------------------------------------
# pid_alive PIDFILE NAME: the pid in PIDFILE is a live NAME process started for
# this DIR (its command line names DIR), so a recycled pid is never touched.
pid_alive() {
	local pid
	[[ -f $1 ]] || return 1
	pid=$(<"$1")
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	[[ -r /proc/$pid/cmdline ]] || return 1
	local cmd
	{ cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline"); } 2>/dev/null || return 1
	[[ $cmd == *"$2"* && $cmd == *"$DIR/"* ]]
}

curl_admin() {
	curl -sS --max-time 5 --cacert "$PKI/ca.crt" \
		--cert "$PKI/users/janus-admin.crt" --key "$PKI/users/janus-admin.key" "$@"
}

if pid_alive "$DIR/etcd.pid" etcd && pid_alive "$DIR/kube-apiserver.pid" kube-apiserver &&
	[[ -f $DIR/env && -f $DIR/server ]] &&
	[[ $(curl_admin "$(<"$DIR/server")/readyz" 2>/dev/null) == ok ]]; then
	log "already running and ready in $DIR (pids $(<"$DIR/etcd.pid"), $(<"$DIR/kube-apiserver.pid")); nothing to do"
	echo "$DIR/env"
	exit 0
fi
if [[ -f $DIR/etcd.pid || -f $DIR/kube-apiserver.pid ]]; then
	log "leftovers of an earlier run in $DIR: stopping them first"
	"$HERE/stop.sh" "$DIR"
fi

# ---- binaries ---------------------------------------------------------------
if [[ -n ${JANUS_K8S_BIN:-} ]]; then
	BIN=$JANUS_K8S_BIN
else
	BIN=$("$HERE/build.sh" | tail -n1) || die "ci/k8s/build.sh failed"
fi
for b in etcd kube-apiserver; do
	[[ -x $BIN/$b ]] || die "$BIN/$b missing or not executable (run ci/k8s/build.sh)"
done

# ---- ports ------------------------------------------------------------------
taken=()
port_free() {
	local p=$1 t
	for t in "${taken[@]}"; do [[ $t == "$p" ]] && return 1; done
	if command -v ss >/dev/null; then
		[[ -z $(ss -Htan "( sport = :$p )" 2>/dev/null) ]]
	else
		if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then return 1; fi
	fi
}
pick_port() { # pick_port FIXED -> FIXED or a free random port
	local p
	if [[ -n $1 ]]; then
		port_free "$1" || die "port $1 (set by environment) is in use on this machine"
		echo "$1"
		return
	fi
	for _ in $(seq 100); do
		p=$((20000 + RANDOM % 12000))
		if port_free "$p"; then
			echo "$p"
			return
		fi
	done
	die "found no free port in 20000-31999 after 100 tries"
}
ETCD_PORT=$(pick_port "${JANUS_K8S_ETCD_PORT:-}")
taken+=("$ETCD_PORT")
ETCD_PEER_PORT=$(pick_port "${JANUS_K8S_ETCD_PEER_PORT:-}")
taken+=("$ETCD_PEER_PORT")
API_PORT=$(pick_port "${JANUS_K8S_APISERVER_PORT:-}")
ETCD_URL=http://127.0.0.1:$ETCD_PORT
SERVER=https://127.0.0.1:$API_PORT
echo "$SERVER" >"$DIR/server"

# ---- PKI (kept across restarts in the same DIR) -----------------------------
mkdir -p "$PKI"
ossl() { openssl "$@" 2>"$PKI/openssl.err" || die "openssl $1 failed: $(cat "$PKI/openssl.err")"; }
if [[ ! -f $PKI/ca.crt || ! -f $PKI/ca.key ]]; then
	log "generating CA"
	ossl req -x509 -newkey rsa:2048 -nodes -keyout "$PKI/ca.key" -out "$PKI/ca.crt" -days 3650 -sha256 \
		-subj "/CN=janus-test-ca" \
		-addext "basicConstraints=critical,CA:TRUE" \
		-addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature"
	rm -f "$PKI/apiserver.crt" "$PKI"/users/*.crt
fi
if [[ ! -f $PKI/apiserver.crt || ! -f $PKI/apiserver.key ]]; then
	log "generating API server serving certificate (127.0.0.1, localhost, kubernetes.default.svc)"
	ossl req -new -newkey rsa:2048 -nodes -keyout "$PKI/apiserver.key" -out "$PKI/apiserver.csr" \
		-subj "/CN=kube-apiserver"
	cat >"$PKI/apiserver.ext" <<-EOF
		basicConstraints=critical,CA:FALSE
		keyUsage=critical,digitalSignature,keyEncipherment
		extendedKeyUsage=serverAuth
		subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
	EOF
	ossl x509 -req -in "$PKI/apiserver.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
		-days 3650 -sha256 -extfile "$PKI/apiserver.ext" -out "$PKI/apiserver.crt"
	rm -f "$PKI/apiserver.csr"
fi
if [[ ! -f $PKI/sa.key || ! -f $PKI/sa.pub ]]; then
	log "generating service-account signing key pair"
	ossl genrsa -out "$PKI/sa.key" 2048
	ossl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub"
fi
chmod 600 "$PKI"/*.key

# ---- processes --------------------------------------------------------------
# Children of this run: checked and, on failure, stopped by pid (they are our
# own children, so even before they exec, when their command line is still
# this script's, the pid is theirs).
started=()
child_alive() { # running and not a zombie
	local st
	{ st=$(awk '{print $3}' "/proc/$1/stat"); } 2>/dev/null || return 1
	[[ -n $st && $st != Z ]]
}
cleanup_on_error() {
	local rc=$? pid deadline
	((rc != 0)) || return 0
	((${#started[@]} > 0)) || return 0
	log "start failed: stopping what this run started (pids ${started[*]})"
	for pid in "${started[@]}"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	deadline=$((SECONDS + 10))
	for pid in "${started[@]}"; do
		while child_alive "$pid" && ((SECONDS < deadline)); do sleep 0.2; done
		child_alive "$pid" && kill -KILL "$pid" 2>/dev/null
	done
	"$HERE/stop.sh" "$DIR" >&2 || true
}
trap cleanup_on_error EXIT

tail_logs() {
	local f
	for f in "$DIR/etcd.log" "$DIR/kube-apiserver.log"; do
		[[ -f $f ]] || continue
		echo "---- last 30 lines of $f" >&2
		tail -n 30 "$f" >&2
	done
}
fail() {
	log "ERROR: $*"
	tail_logs
	exit 1
}

rm -rf "$DIR/etcd-data"
etcd_args=(
	--name janus-test
	--data-dir "$DIR/etcd-data"
	--listen-client-urls "$ETCD_URL"
	--advertise-client-urls "$ETCD_URL"
	--listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT"
	--initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT"
	--initial-cluster "janus-test=http://127.0.0.1:$ETCD_PEER_PORT"
	--initial-cluster-state new
	--log-level warn
)
[[ ${JANUS_K8S_ETCD_FSYNC:-0} == 1 ]] || etcd_args+=(--unsafe-no-fsync)
log "starting etcd on $ETCD_URL (log $DIR/etcd.log)"
"$BIN/etcd" "${etcd_args[@]}" </dev/null >"$DIR/etcd.log" 2>&1 &
ETCD_PID=$!
echo "$ETCD_PID" >"$DIR/etcd.pid"
started+=("$ETCD_PID")

deadline=$((SECONDS + TIMEOUT))
until [[ $(curl -sS --max-time 2 "$ETCD_URL/health" 2>/dev/null) == *'"health":"true"'* ]]; do
	child_alive "$ETCD_PID" || fail "etcd exited during startup"
	((SECONDS < deadline)) || fail "etcd not healthy after ${TIMEOUT}s (JANUS_K8S_START_TIMEOUT)"
	sleep 0.5
done
log "etcd healthy"

ADVERTISE=${JANUS_K8S_ADVERTISE_ADDRESS:-127.0.0.1}
# The endpoint reconciler refuses a loopback advertise address; nothing
# then needs the "kubernetes" Service's endpoints (no pod talks to it).
reconciler=lease
[[ $ADVERTISE == 127.* ]] && reconciler=none
api_args=(
	--bind-address="${JANUS_K8S_BIND_ADDRESS:-127.0.0.1}"
	--advertise-address="$ADVERTISE"
	--endpoint-reconciler-type="$reconciler"
	--secure-port="$API_PORT"
	--etcd-servers="$ETCD_URL"
	--cert-dir="$PKI"
	--tls-cert-file="$PKI/apiserver.crt"
	--tls-private-key-file="$PKI/apiserver.key"
	--client-ca-file="$PKI/ca.crt"
	--authorization-mode="${JANUS_K8S_AUTHORIZATION_MODE:-RBAC}"
	--anonymous-auth=false
	--service-account-key-file="$PKI/sa.pub"
	--service-account-signing-key-file="$PKI/sa.key"
	--service-account-issuer=https://kubernetes.default.svc.cluster.local
	--service-cluster-ip-range=10.0.0.0/24
	# No controller-manager runs, so nothing creates the "default"
	# ServiceAccount of a namespace; with the ServiceAccount admission plugin
	# every pod create would be refused. Pods are created as given instead.
	--disable-admission-plugins="${JANUS_K8S_DISABLE_ADMISSION-ServiceAccount}"
	--allow-privileged=true
	--profiling=false
	--v=1
)
if [[ -n ${JANUS_K8S_APISERVER_ARGS:-} ]]; then
	# shellcheck disable=SC2206 # word splitting wanted
	api_args+=($JANUS_K8S_APISERVER_ARGS)
fi

# Users first: the readiness probe below authenticates as the admin.
"$HERE/user.sh" "$DIR" janus-admin system:masters >/dev/null
"$HERE/user.sh" "$DIR" janus-controller >/dev/null
cp -f "$DIR/users/janus-admin.kubeconfig" "$DIR/admin.kubeconfig"
cp -f "$DIR/users/janus-controller.kubeconfig" "$DIR/controller.kubeconfig"

log "starting kube-apiserver on $SERVER (log $DIR/kube-apiserver.log)"
"$BIN/kube-apiserver" "${api_args[@]}" </dev/null >"$DIR/kube-apiserver.log" 2>&1 &
API_PID=$!
echo "$API_PID" >"$DIR/kube-apiserver.pid"
started+=("$API_PID")

last=
until [[ $last == ok ]]; do
	child_alive "$API_PID" || fail "kube-apiserver exited during startup"
	child_alive "$ETCD_PID" || fail "etcd exited while kube-apiserver was starting"
	if ((SECONDS >= deadline)); then
		fail "kube-apiserver not ready after ${TIMEOUT}s (JANUS_K8S_START_TIMEOUT); last /readyz?verbose answer:
$(curl_admin "$SERVER/readyz?verbose" 2>&1 | grep -v '\[+\]' | tail -n 20)"
	fi
	sleep 0.5
	last=$(curl_admin "$SERVER/readyz" 2>/dev/null) || last=
done
# /readyz includes the RBAC bootstrap hook; also wait for the "default"
# namespace that the bootstrap controller creates, which tests use at once.
until [[ $(curl_admin -o /dev/null -w '%{http_code}' "$SERVER/api/v1/namespaces/default" 2>/dev/null) == 200 ]]; do
	((SECONDS < deadline)) || fail "namespace 'default' not created after ${TIMEOUT}s"
	sleep 0.5
done
log "kube-apiserver ready ($(curl_admin "$SERVER/version" | sed -n 's/.*"gitVersion": "\([^"]*\)".*/\1/p'))"

q() { printf '%q' "$1"; }
cat >"$DIR/env.tmp" <<EOF
# Written by ci/k8s/start.sh; source it. Stop with: ci/k8s/stop.sh $(q "$DIR")
export KUBECONFIG=$(q "$DIR/admin.kubeconfig")
export JANUS_K8S_DIR=$(q "$DIR")
export JANUS_K8S_SERVER=$(q "$SERVER")
export JANUS_K8S_ADMIN_KUBECONFIG=$(q "$DIR/admin.kubeconfig")
export JANUS_K8S_CONTROLLER_KUBECONFIG=$(q "$DIR/controller.kubeconfig")
export JANUS_K8S_CONTROLLER_USER=janus-controller
export JANUS_K8S_CA=$(q "$PKI/ca.crt")
export JANUS_K8S_ADMIN_CERT=$(q "$PKI/users/janus-admin.crt")
export JANUS_K8S_ADMIN_KEY=$(q "$PKI/users/janus-admin.key")
export JANUS_K8S_USER_SCRIPT=$(q "$HERE/user.sh")
export JANUS_K8S_ETCD_URL=$(q "$ETCD_URL")
export JANUS_K8S_ETCD_PID=$ETCD_PID
export JANUS_K8S_APISERVER_PID=$API_PID
export JANUS_K8S_BIN=$(q "$BIN")
EOF
mv -f "$DIR/env.tmp" "$DIR/env"
started=()
log "ready: source $DIR/env  (KUBECONFIG=$DIR/admin.kubeconfig, server $SERVER)"
echo "$DIR/env"
