#!/usr/bin/env bash
# Builds the streamfabric images from the repository root, tagged with the
# workspace version (Cargo.toml [workspace.package] version):
#
#   docker/build.sh                 # all three images
#   docker/build.sh broker          # or just one: broker | operator | sidecar
#   docker/build.sh --push          # also push them
#
# Images: $REGISTRY/broker:<version>, $REGISTRY/operator:<version> and
# $REGISTRY/sidecar:<version>, with
# REGISTRY defaulting to ghcr.io/streamfabric (the DataStream CRD's default broker
# image and the chart's default operator image). Other knobs:
#   PLATFORM=linux/arm64   passed to docker build --platform
#   RUST_VERSION=1.95      the builder image's Rust (rust:<version>-bookworm)
#   EXTRA_TAGS="latest"    more tags for each image
# Needs a reachable Docker engine with BuildKit (`docker info` must work).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
log() { echo "build.sh: $*" >&2; }

push=0
images=()
for arg in "$@"; do
    case "$arg" in
        --push) push=1 ;;
        broker|operator|sidecar) images+=("$arg") ;;
        -h|--help) sed -n '2,/^set -e/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) log "unknown argument '$arg' (broker, operator, sidecar, --push)"; exit 2 ;;
    esac
done
[[ ${#images[@]} -gt 0 ]] || images=(broker operator sidecar)

# The workspace version: the first `version = "..."` under [workspace.package].
version="$(awk '
    /^\[/ { section = $0; next }
    section == "[workspace.package]" && $1 == "version" {
        gsub(/[" ]/, "", $0); sub(/^version=/, "", $0); print; exit
    }' "$repo/Cargo.toml")"
if [[ -z "$version" ]]; then
    log "cannot read [workspace.package] version from $repo/Cargo.toml"
    exit 1
fi

if ! command -v docker >/dev/null 2>&1; then
    log "cannot build: the docker command is not installed on this machine."
    exit 1
fi
if ! docker info >/dev/null 2>&1; then
    log "cannot build: no Docker engine is reachable here ('docker info' failed)."
    log "Run this script on a machine with a running Docker daemon (or set DOCKER_HOST)."
    exit 1
fi

registry="${REGISTRY:-ghcr.io/streamfabric}"
registry="${registry%/}"
build_args=(--build-arg "RUST_VERSION=${RUST_VERSION:-1.95}")
[[ -n "${PLATFORM:-}" ]] && build_args+=(--platform "$PLATFORM")

export DOCKER_BUILDKIT=1
for image in "${images[@]}"; do
    tags=(-t "$registry/$image:$version")
    for extra in ${EXTRA_TAGS:-}; do tags+=(-t "$registry/$image:$extra"); done
    log "building $registry/$image:$version from docker/Dockerfile.$image"
    docker build "${build_args[@]}" "${tags[@]}" \
        --label "org.opencontainers.image.version=$version" \
        --label "org.opencontainers.image.title=streamfabric-$image" \
        -f "$repo/docker/Dockerfile.$image" "$repo"
    if [[ $push == 1 ]]; then
        docker push "$registry/$image:$version"
        for extra in ${EXTRA_TAGS:-}; do docker push "$registry/$image:$extra"; done
    fi
done
built=()
for image in "${images[@]}"; do built+=("$registry/$image:$version"); done
log "built: ${built[*]}"
