#!/usr/bin/env bash
# ci/k8s/stop.sh [--purge] DIR
#
# Stops the kube-apiserver and etcd that ci/k8s/start.sh started in DIR (by
# their pid files; a pid is only signalled when its command line still names
# DIR, so a recycled pid is never hit): SIGTERM, then SIGKILL after
# JANUS_K8S_STOP_TIMEOUT seconds (default 20). Then removes the pid files,
# DIR/env and the etcd data. Logs, PKI and kubeconfigs stay for inspection;
# --purge removes DIR entirely. Idempotent: nothing running is fine.
set -euo pipefail

log() { printf '[k8s/stop %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
	log "ERROR: $*"
	exit 1
}

purge=0
if [[ ${1:-} == --purge ]]; then
	purge=1
	shift
fi
(($# == 1)) || die "usage: $0 [--purge] DIR"
[[ -d $1 ]] || {
	log "$1 does not exist; nothing to stop"
	exit 0
}
DIR=$(cd "$1" && pwd)
TIMEOUT=${JANUS_K8S_STOP_TIMEOUT:-20}

ours() { # ours PID NAME
	local cmd
	[[ -r /proc/$1/cmdline ]] || return 1
	{ cmd=$(tr '\0' ' ' <"/proc/$1/cmdline"); } 2>/dev/null || return 1
	[[ $cmd == *"$2"* && $cmd == *"$DIR/"* ]]
}

stop_one() { # stop_one NAME
	local name=$1 pidfile=$DIR/$1.pid pid
	[[ -f $pidfile ]] || return 0
	pid=$(<"$pidfile")
	if [[ ! $pid =~ ^[0-9]+$ ]] || ! ours "$pid" "$name"; then
		log "$name: not running (stale pid file)"
		rm -f "$pidfile"
		return 0
	fi
	log "$name: stopping pid $pid"
	kill -TERM "$pid" 2>/dev/null || true
	local deadline=$((SECONDS + TIMEOUT))
	while ours "$pid" "$name"; do
		if ((SECONDS >= deadline)); then
			log "$name: still running after ${TIMEOUT}s; sending SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
			sleep 0.5
			break
		fi
		sleep 0.2
	done
	if ours "$pid" "$name" && [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]]; then
		die "$name: pid $pid did not stop"
	fi
	rm -f "$pidfile"
	log "$name: stopped"
}

# API server first, so it does not log etcd errors while shutting down.
stop_one kube-apiserver
stop_one etcd
rm -f "$DIR/env" "$DIR/server"
rm -rf "$DIR/etcd-data"
if ((purge)); then
	rm -rf "$DIR"
	log "removed $DIR"
fi
