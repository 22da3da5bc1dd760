#!/usr/bin/env bash
# ci/k8s/images.sh
#
# Builds the images the test cluster runs, here, from Debian packages (no
# registry is reachable): umoci assembles each OCI image, skopeo writes it
# as a docker-archive tar carrying its name, so `ctr images import` gives
# containerd the image under exactly that name.
#
#   janus.local/pause:1    the sandbox ("pause") image: a static C program
#                          that sleeps, reaps zombies and exits on TERM/INT
#   janus.local/busybox:1  the test workload: busybox-static with its applet
#                          links, files to guard under /data, and a symlink
#                          /var/run -> /run as in Debian images
#
# Cached in ${JANUS_IMAGES_CACHE:-/var/cache/janus-images}/<hash of this
# script>/; prints that directory (holding one .tar per image) as its last
# line. Installs umoci, skopeo, busybox-static and gcc with apt-get when
# missing.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
log() { printf '[k8s/images %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
	log "ERROR: $*"
	exit 1
}

key=$(sha256sum "$HERE/images.sh" | cut -c1-16)
OUT=${JANUS_IMAGES_CACHE:-/var/cache/janus-images}/$key
if [[ -f $OUT/done ]]; then
	log "cached: $OUT"
	echo "$OUT"
	exit 0
fi

need=()
command -v umoci >/dev/null || need+=(umoci)
command -v skopeo >/dev/null || need+=(skopeo)
# Debian's busybox-static is the static one (`ldd` says so); busybox is not.
[[ -x /bin/busybox && $(ldd /bin/busybox 2>&1) == *"not a dynamic"* ]] || need+=(busybox-static)
command -v gcc >/dev/null || need+=(gcc libc6-dev)
if ((${#need[@]})); then
	log "installing ${need[*]} (apt-get)"
	{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"; } >&2 ||
		die "apt-get install ${need[*]} failed"
fi

work=$(mktemp -d /tmp/janus-images.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$OUT.tmp"

# image NAME:TAG DIR ENTRYPOINT...: an image whose root is DIR.
image() {
	local ref=$1 root=$2
	shift 2
	local layout=$work/layout tag=${ref##*/}
	tag=${tag//[:]/-}
	[[ -d $layout ]] || umoci init --layout "$layout"
	umoci new --image "$layout:$tag"
	umoci unpack --rootless --image "$layout:$tag" "$work/bundle-$tag" >/dev/null
	cp -a "$root/." "$work/bundle-$tag/rootfs/"
	umoci repack --image "$layout:$tag" "$work/bundle-$tag"
	local ep=()
	local a
	for a in "$@"; do ep+=(--config.entrypoint "$a"); done
	umoci config --image "$layout:$tag" "${ep[@]}" --config.workingdir /
	skopeo copy --quiet "oci:$layout:$tag" "docker-archive:$OUT.tmp/$tag.tar:$ref"
	log "built $ref"
}

# ---- pause
mkdir -p "$work/pause"
cat >"$work/pause.c" <<'EOF'
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
static void quit(int s) { (void)s; _exit(0); }
static void reap(int s) { (void)s; while (waitpid(-1, 0, WNOHANG) > 0) {} }
int main(void) {
    signal(SIGINT, quit);
    signal(SIGTERM, quit);
    signal(SIGCHLD, reap);
    for (;;) pause();
}
EOF
gcc -static -Os -o "$work/pause/pause" "$work/pause.c"
image janus.local/pause:1 "$work/pause" /pause

# ---- busybox test workload
r=$work/busybox
mkdir -p "$r"/{bin,etc,tmp,run/secrets,var,data/secret,data/open,proc,sys,dev}
cp /bin/busybox "$r/bin/busybox"
for a in $(/bin/busybox --list); do
	[[ $a == busybox ]] || ln -sf busybox "$r/bin/$a"
done
ln -s /run "$r/var/run"
echo "top secret" >"$r/data/secret/key"
echo "hello" >"$r/data/open/greeting"
echo "token" >"$r/run/secrets/token"
printf 'root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$r/etc/passwd"
printf 'root:x:0:\nnobody:x:65534:\n' >"$r/etc/group"
chmod 1777 "$r/tmp"
image janus.local/busybox:1 "$r" /bin/sh

touch "$OUT.tmp/done"
rm -rf "$OUT"
mv "$OUT.tmp" "$OUT"
echo "$OUT"
