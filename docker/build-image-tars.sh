#!/usr/bin/env bash
# Builds the streamfabric images without a container engine, as `docker save`-format
# tars (docker/image-tar.py), from release binaries already built on this machine:
#
#   docker/build-image-tars.sh OUTDIR [broker operator loadgen sidecar pause minio]
#
# Images (tags as the chart and the CRD default reference them, with the workspace version):
#   ghcr.io/streamfabric/broker:<version>     what docker/Dockerfile.broker makes
#   ghcr.io/streamfabric/operator:<version>   what docker/Dockerfile.operator makes
#   ghcr.io/streamfabric/loadgen:<version>    streamfabric-loadgen, for clients in a cluster
#   ghcr.io/streamfabric/sidecar:<version>    what docker/Dockerfile.sidecar makes
#   localhost/streamfabric/pause:e2e          the pod sandbox (e2e/kube/pause.c, static)
#   localhost/streamfabric/minio:e2e          MinIO (built from Go modules), for the e2e bucket
# Inputs: RELEASE_DIR (default $CARGO_TARGET_DIR/release) holding the binaries,
# PAUSE_BIN (a static pause binary; needed for `pause`), MINIO_BIN (needed for `minio`). Each tar is written only when its
# inputs changed (OUTDIR/<image>.key), so a warm run costs a few hashes. Load with
#   ctr -n k8s.io images import OUTDIR/<image>.tar     (or docker load -i)
# The binaries carry the host's glibc; the image has the libraries ldd lists.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
log() { echo "build-image-tars: $*" >&2; }

[[ $# -ge 1 ]] || { echo "usage: $0 OUTDIR [broker operator loadgen sidecar pause minio]" >&2; exit 2; }
out="$1"; shift
images=("$@")
[[ ${#images[@]} -gt 0 ]] || images=(broker operator loadgen pause)

version="$(awk '
    /^\[/ { section = $0; next }
    section == "[workspace.package]" && $1 == "version" {
        gsub(/[" ]/, "", $0); sub(/^version=/, "", $0); print; exit
    }' "$repo/Cargo.toml")"
[[ -n "$version" ]] || { log "cannot read [workspace.package] version from $repo/Cargo.toml"; exit 1; }
registry="${REGISTRY:-ghcr.io/streamfabric}"
release="${RELEASE_DIR:-${CARGO_TARGET_DIR:?source scripts/env.sh or set RELEASE_DIR}/release}"
mkdir -p "$out"

# The same settings as the Dockerfiles (docker/Dockerfile.*), so the pods see the same image.
image_args() {   # one argument of docker/image-tar.py per line
    case $1 in
        broker) printf '%s\n' --tag "$registry/broker:$version" --strip-debug \
                --file "$release/streamfabric-broker:/usr/local/bin/streamfabric-broker" \
                --dir /data:65532 --user 65532:65532 \
                --env STREAMFABRIC_LISTEN=0.0.0.0:4567 --env STREAMFABRIC_ADMIN_LISTEN=0.0.0.0:4568 \
                --env STREAMFABRIC_DATA_DIR=/data \
                --entrypoint /usr/local/bin/streamfabric-broker --cmd serve --expose 4567 --expose 4568 ;;
        operator) printf '%s\n' --tag "$registry/operator:$version" --strip-debug \
                --file "$release/streamfabric-operator:/usr/local/bin/streamfabric-operator" \
                --file "$release/crdgen:/usr/local/bin/crdgen" --user 65532:65532 \
                --entrypoint /usr/local/bin/streamfabric-operator --expose 8080 ;;
        loadgen) printf '%s\n' --tag "$registry/loadgen:$version" --strip-debug \
                --file "$release/streamfabric-loadgen:/usr/local/bin/streamfabric-loadgen" \
                --user 65532:65532 --entrypoint /usr/local/bin/streamfabric-loadgen ;;
        sidecar) printf '%s\n' --tag "$registry/sidecar:$version" --strip-debug \
                --file "$release/streamfabric-sidecar:/usr/local/bin/streamfabric-sidecar" --user 65532:65532 \
                --env STREAMFABRIC_SIDECAR_LISTEN=127.0.0.1:4599 --env STREAMFABRIC_SIDECAR_ADMIN_LISTEN=0.0.0.0:4600 \
                --entrypoint /usr/local/bin/streamfabric-sidecar --expose 4600 ;;
        pause) printf '%s\n' --tag localhost/streamfabric/pause:e2e --no-etc \
                --file "${PAUSE_BIN:?PAUSE_BIN: a static pause binary}:/pause" --user 65535:65535 \
                --entrypoint /pause ;;
        minio) printf '%s\n' --tag localhost/streamfabric/minio:e2e \
                --file "${MINIO_BIN:?MINIO_BIN: a minio binary}:/usr/local/bin/minio" \
                --dir /data:65532 --user 65532:65532 --env MINIO_BROWSER=off --env MINIO_UPDATE=off \
                --env MINIO_CALLHOME_ENABLE=off --entrypoint /usr/local/bin/minio --expose 9000 ;;
        *) log "unknown image '$1' (broker operator loadgen sidecar pause minio)"; exit 2 ;;
    esac
}

inputs() {   # the host files an image is made of
    local a prev=""
    image_args "$1" | while read -r a; do
        if [[ $prev == --file ]]; then echo "${a%%:*}"; fi
        prev=$a
    done
}

libs_of() {   # the shared libraries ldd lists for a binary (none when static)
    ldd "$1" 2>/dev/null | grep -o '/[^ ]*' || true
}

for image in "${images[@]}"; do
    mapfile -t args < <(image_args "$image")
    mapfile -t files < <(inputs "$image")
    [[ ${#args[@]} -gt 0 ]] || exit 2
    for f in "${files[@]}"; do [[ -f "$f" ]] || { log "$image: missing $f (build it first)"; exit 1; }; done
    key="$({ printf '%s\n' "${args[@]}"; sha256sum "${files[@]}" "$repo/docker/image-tar.py";
             for f in "${files[@]}"; do libs_of "$f"; done | xargs -r sha256sum
           } | sha256sum | cut -c1-16)"
    if [[ -f "$out/$image.tar" && "$(cat "$out/$image.key" 2>/dev/null)" == "$key" ]]; then
        continue
    fi
    python3 "$repo/docker/image-tar.py" --out "$out/$image.tar" "${args[@]}"
    echo "$key" >"$out/$image.key"
done
