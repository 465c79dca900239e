#!/usr/bin/env bash
# The kind tier: the scenario of the real-pods tier (e2e/kube/scenario.py, unchanged) on a
# kind cluster, for machines with Docker and kind (it cannot run on the project's CI
# machine, which has no container engine; scripts/e2e-kube is the tier that runs there).
#
#   e2e/kind/run.sh                 # create the cluster, run the scenario, delete the cluster
#   E2E_KIND_KEEP=1 e2e/kind/run.sh # leave the cluster up afterwards
#   E2E_KIND_SCENARIO_ARGS="--only helm --only example" e2e/kind/run.sh
#
# Needs docker, kind, cargo and go on PATH. The images are built as the real-pods tier
# builds them (docker/build-image-tars.sh from the release binaries, MinIO and the
# Kubernetes clients from Go modules by scripts/install-go-tools.sh) and loaded with
# `kind load image-archive`, so no registry is needed for them. The scenario runs in a pod
# (image from e2e/kind/Dockerfile.scenario) with a cluster-admin ServiceAccount, the
# node's PID namespace (it SIGKILLs a broker process) and the node's kubelet directory (it
# wipes a MinIO drive), so that the Service names in status.endpoint resolve for it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source scripts/env.sh
log() { echo "e2e-kind: $*" >&2; }
for tool in docker kind cargo go; do
    command -v "$tool" >/dev/null || { log "needs $tool on PATH"; exit 1; }
done
cluster="${E2E_KIND_CLUSTER:-streamfabric-e2e}"
images="$STREAMFABRIC_CACHE/e2e-kind/images"
context="e2e/kind/context"
scenario_image="localhost/streamfabric/scenario:e2e"

bin="$(scripts/install-go-tools.sh kube-node | tail -1)"
cargo build --release --locked -p streamfabric-broker -p streamfabric-operator -p streamfabric-loadgen -p streamfabric-sidecar
mkdir -p "$images" "$context"
# kind brings its own pause image: the pod sandbox is not built here.
MINIO_BIN="$bin/minio" docker/build-image-tars.sh "$images" broker operator loadgen sidecar minio
cp "$bin/kubectl" "$bin/helm" "$context/"
docker build -q -f e2e/kind/Dockerfile.scenario -t "$scenario_image" .

finish() {
    local rc=$?
    rm -rf "$context"
    if [[ ${E2E_KIND_KEEP:-0} == 1 ]]; then
        log "E2E_KIND_KEEP=1: cluster $cluster left up (kind delete cluster --name $cluster)"
    else
        kind delete cluster --name "$cluster" || rc=1
    fi
    if [[ $rc == 0 ]]; then log "PASSED"; else log "FAILED (exit $rc)"; fi
    exit "$rc"
}
kind delete cluster --name "$cluster" 2>/dev/null || true
kind create cluster --name "$cluster" --config e2e/kind/kind-config.yaml --wait 120s
trap finish EXIT
for tar in "$images"/*.tar; do
    kind load image-archive "$tar" --name "$cluster"
done
kind load docker-image "$scenario_image" --name "$cluster"

kubectl="$bin/kubectl --context kind-$cluster"
$kubectl create serviceaccount e2e-scenario -n default
$kubectl create clusterrolebinding e2e-scenario --clusterrole cluster-admin --serviceaccount default:e2e-scenario
# shellcheck disable=SC2086  # E2E_KIND_SCENARIO_ARGS: options, split on purpose
args="$(python3 -c 'import json, sys; print(json.dumps(sys.argv[1:]))' \
    --kubelet-dir /var/lib/kubelet ${E2E_KIND_SCENARIO_ARGS:-})"
$kubectl apply -f - <<YAML
apiVersion: v1
kind: Pod
metadata: {name: e2e-scenario, namespace: default}
spec:
  serviceAccountName: e2e-scenario
  restartPolicy: Never
  hostPID: true
  containers:
    - name: scenario
      image: $scenario_image
      imagePullPolicy: Never
      args: $args
      securityContext: {privileged: true}
      volumeMounts: [{name: kubelet, mountPath: /var/lib/kubelet}]
  volumes: [{name: kubelet, hostPath: {path: /var/lib/kubelet}}]
YAML
$kubectl wait pod/e2e-scenario -n default --for=condition=Ready --timeout=120s || true
$kubectl logs -f pod/e2e-scenario -n default
phase="$($kubectl get pod e2e-scenario -n default -o jsonpath='{.status.phase}')"
[[ $phase == Succeeded ]] || { log "the scenario pod ended $phase"; exit 1; }
