#!/usr/bin/env bash
# deploy/docker/build.sh: the Janus images, from this checkout.
#
#   deploy/docker/build.sh [--registry REG] [--tag TAG] [--out DIR]
#
# 1. cargo builds janusd, janusctl and janus-controller as static binaries
#    (the gnu target with crt-static: no libc or loader needed at run time);
# 2. each Dockerfile here (FROM scratch + those binaries) is built with
#    buildah (JANUS_IMAGE_BUILDER=docker or podman to use those instead);
# 3. each image is written to DIR as a docker-archive tar carrying its name,
#    ready for `ctr -n k8s.io images import`, `docker load` or
#    `skopeo copy docker-archive:DIR/janusd.tar docker://your.registry/...`.
#
# Defaults: REG ghcr.io/clustergarage (the chart's image.registry), TAG the
# chart's appVersion, DIR target/images. Prints DIR as its last line.
# Installs buildah (when it is the builder) and binutils (strip) with apt-get
# when missing.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
log() { printf '[docker/build %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
	log "ERROR: $*"
	exit 1
}

registry=ghcr.io/clustergarage
tag=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$ROOT/deploy/helm/janus/Chart.yaml")
out=$ROOT/target/images
while (($#)); do
	case $1 in
	--registry) registry=${2:?--registry needs a value}; shift 2 ;;
	--tag) tag=${2:?--tag needs a value}; shift 2 ;;
	--out) out=${2:?--out needs a value}; shift 2 ;;
	-h | --help) sed -n '2,16p' "$0"; exit 0 ;;
	*) die "unknown argument $1 (see --help)" ;;
	esac
done
[[ -n $tag ]] || die "no --tag given and no appVersion in deploy/helm/janus/Chart.yaml"
builder=${JANUS_IMAGE_BUILDER:-buildah}
case $builder in
buildah | docker | podman) ;;
*) die "JANUS_IMAGE_BUILDER must be buildah, docker or podman (got $builder)" ;;
esac
need=()
if ! command -v "$builder" >/dev/null; then
	[[ $builder == buildah ]] || die "$builder is not installed"
	need+=(buildah)
fi
command -v strip >/dev/null || need+=(binutils)
if ((${#need[@]})); then
	log "installing ${need[*]} (apt-get)"
	{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"; } >&2 ||
		die "apt-get install ${need[*]} failed"
fi

# ---- 1. static binaries. An explicit --target keeps RUSTFLAGS off build
# scripts and proc macros, and the output apart from target/release.
triple=x86_64-unknown-linux-gnu
log "cargo build --release (static, $triple)"
(cd "$ROOT" && RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
	cargo build --release --locked --target "$triple" -p janus-agent -p janus-controller \
	--bin janusd --bin janusctl --bin janus-controller) >&2 || die "cargo build failed"
bins=$ROOT/target/$triple/release
for b in janusd janusctl janus-controller; do
	l=$(ldd "$bins/$b" 2>&1 || true)
	[[ $l == *"statically linked"* || $l == *"not a dynamic executable"* ]] || die "$bins/$b is dynamically linked: $l"
done

# ---- 2. one build context per image: its Dockerfile and stripped binaries.
mkdir -p "$out"
ctx() {
	local name=$1
	shift
	rm -rf "$out/context-$name"
	mkdir -p "$out/context-$name"
	local b
	for b in "$@"; do install -s -m 0755 "$bins/$b" "$out/context-$name/$b"; done
}
ctx janusd janusd janusctl
ctx janus-controller janus-controller

build() {
	local name=$1 dockerfile=$2 ref=$registry/$1:$tag
	log "building $ref from deploy/docker/$dockerfile"
	case $builder in
	buildah)
		# vfs storage under target/: no host overlay or storage config needed.
		local store=(--root "$out/buildah/root" --runroot "$out/buildah/run" --storage-driver vfs)
		buildah "${store[@]}" bud --quiet --timestamp 0 -f "$ROOT/deploy/docker/$dockerfile" \
			-t "$ref" "$out/context-$name" >/dev/null
		rm -f "$out/$name.tar"
		buildah "${store[@]}" push --quiet "$ref" "docker-archive:$out/$name.tar:$ref"
		;;
	docker | podman)
		"$builder" build -q -f "$ROOT/deploy/docker/$dockerfile" -t "$ref" "$out/context-$name" >/dev/null
		"$builder" save -o "$out/$name.tar" "$ref"
		;;
	esac
	log "wrote $out/$name.tar ($ref, $(du -h "$out/$name.tar" | cut -f1))"
}
build janusd janusd.Dockerfile
build janus-controller controller.Dockerfile
echo "$out"
