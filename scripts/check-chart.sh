#!/usr/bin/env bash
# Checks the Helm chart charts/streamfabric:
#
#   scripts/check-chart.sh                  # offline checks
#   scripts/check-chart.sh KUBECONFIG       # also kubectl apply --dry-run=server
#
# 1. charts/streamfabric/crds/datastream.yaml equals crds/datastream.yaml (the
#    crdgen output; the chart's copy is never hand-edited);
# 2. `helm lint --strict` (warnings fail), with the default values and with the
#    optional parts switched on;
# 3. `helm template` renders (default values, ServiceMonitor on, metrics off) and
#    every rendered document, the CRD and examples/*.yaml parse as YAML with a
#    kind, an apiVersion and a name;
# 4. replicas > 1 renders with leader election (and its Role) and is refused without it;
# 5. with a kubeconfig: `kubectl apply --dry-run=server` of the CRD, then of the
#    rendered chart, then (if the cluster has the DataStream CRD installed, so the
#    API server can check its schema and CEL rules) of examples/*.yaml.
#
# helm comes from scripts/install-go-tools.sh helm (built from Go modules, cached)
# unless HELM names a binary; kubectl is KUBECTL, else the one on PATH, else built
# by scripts/install-go-tools.sh kube. CHECK_NAMESPACE (default: default) is the
# release namespace rendered and dry-run applied; it must exist in that cluster.
# Ends with a line "check-chart: N passed, N failed"; exits non-zero on a failure.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
chart="$repo/charts/streamfabric"
kubeconfig="${1:-}"
namespace="${CHECK_NAMESPACE:-default}"
release=streamfabric

log() { echo "check-chart: $*" >&2; }
passed=0
failed=0
pass() { passed=$((passed + 1)); log "ok: $*"; }
fail() { failed=$((failed + 1)); log "FAILED: $*"; }

if [[ -n "$kubeconfig" && ! -r "$kubeconfig" ]]; then
    log "cannot read kubeconfig '$kubeconfig'"
    exit 2
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/check-chart.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# ---- tools -------------------------------------------------------------------
helm="${HELM:-}"
if [[ -z "$helm" ]]; then
    bin="$("$repo/scripts/install-go-tools.sh" helm | tail -1)"
    helm="$bin/helm"
fi
[[ -x "$helm" ]] || { log "no helm binary at $helm"; exit 2; }
log "helm: $helm ($("$helm" version --short 2>/dev/null || echo '?'))"

python=python3
if ! "$python" -c 'import yaml' 2>/dev/null; then
    python="$("$repo/scripts/install-python-tools.sh" | tail -1)/python"
fi

# ---- 1. the CRD copy ---------------------------------------------------------
if cmp -s "$repo/crds/datastream.yaml" "$chart/crds/datastream.yaml"; then
    pass "charts/streamfabric/crds/datastream.yaml equals crds/datastream.yaml"
else
    fail "charts/streamfabric/crds/datastream.yaml differs from crds/datastream.yaml;" \
         "run: cp crds/datastream.yaml charts/streamfabric/crds/datastream.yaml"
    diff -u "$repo/crds/datastream.yaml" "$chart/crds/datastream.yaml" | head -40 >&2 || true
fi

# ---- 2. lint -----------------------------------------------------------------
lint() {   # lint DESCRIPTION [helm args...]
    local what=$1 out; shift
    if out="$("$helm" lint --strict "$chart" --namespace "$namespace" "$@" 2>&1)"; then
        # --strict already fails on warnings; an [INFO] line is only advice.
        pass "helm lint --strict ($what)"
        grep -E '^\[(INFO|WARNING)\]' <<<"$out" >&2 || true
    else
        fail "helm lint --strict ($what)"
        echo "$out" >&2
    fi
}
lint "default values"
lint "serviceMonitor on" --set metrics.serviceMonitor.enabled=true
lint "sidecar injector certificates by cert-manager" --set sidecarInjector.certManager.enabled=true
lint "no sidecar injector" --set sidecarInjector.enabled=false
lint "metrics off, no RBAC, existing ServiceAccount" \
    --set metrics.enabled=false --set rbac.create=false \
    --set serviceAccount.create=false --set serviceAccount.name=streamfabric

# ---- 3. render and parse -----------------------------------------------------
render() {   # render OUT DESCRIPTION [helm args...]
    local out=$1 what=$2; shift 2
    if "$helm" template "$release" "$chart" --namespace "$namespace" "$@" >"$out" 2>"$out.err"; then
        pass "helm template ($what)"
    else
        fail "helm template ($what)"
        cat "$out.err" >&2
        return 1
    fi
}

check_yaml() {   # check_yaml DESCRIPTION FILE...: every document a named object
    local what=$1; shift
    if "$python" - "$@" <<'PY' >&2; then
import sys, yaml
kinds = []
for path in sys.argv[1:]:
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    if not docs:
        sys.exit("%s: no YAML documents" % path)
    for d in docs:
        if not isinstance(d, dict):
            sys.exit("%s: a document is not a mapping" % path)
        for key in ("apiVersion", "kind"):
            if not d.get(key):
                sys.exit("%s: a document has no %s" % (path, key))
        if not (d.get("metadata") or {}).get("name"):
            sys.exit("%s: a %s has no metadata.name" % (path, d["kind"]))
        kinds.append(d["kind"])
print("  parsed: " + ", ".join(kinds))
PY
        pass "YAML parses ($what)"
    else
        fail "YAML does not parse ($what)"
    fi
}

rendered="$work/rendered.yaml"
if render "$rendered" "default values"; then
    check_yaml "rendered chart, default values" "$rendered"
    if grep -q 'kind: CustomResourceDefinition' "$rendered"; then
        fail "helm template without --include-crds rendered a CRD (it belongs in crds/ only)"
    fi
fi
if render "$work/all.yaml" "serviceMonitor on, with CRDs" --include-crds \
        --set metrics.serviceMonitor.enabled=true; then
    check_yaml "rendered chart with CRDs and ServiceMonitor" "$work/all.yaml"
fi
if render "$work/min.yaml" "metrics off" --set metrics.enabled=false; then
    check_yaml "rendered chart, metrics off" "$work/min.yaml"
fi
if render "$work/cm.yaml" "webhook certificates by cert-manager" --set sidecarInjector.certManager.enabled=true; then
    check_yaml "rendered chart, cert-manager" "$work/cm.yaml"
    if grep -q 'kind: Certificate' "$work/cm.yaml" && grep -q 'cert-manager.io/inject-ca-from' "$work/cm.yaml"; then
        pass "cert-manager mode renders a Certificate and the CA injection annotation"
    else
        fail "cert-manager mode: no Certificate or no cert-manager.io/inject-ca-from"
    fi
fi
check_yaml "crds/datastream.yaml" "$repo/crds/datastream.yaml"
check_yaml "examples" "$repo"/examples/*.yaml

# ---- 4. refused settings -----------------------------------------------------
if "$helm" template "$release" "$chart" --set replicas=2 >"$work/replicas.yaml" 2>"$work/replicas.err" \
        && grep -q 'kind: Role$' "$work/replicas.yaml" && grep -q 'replicas: 2' "$work/replicas.yaml"; then
    pass "replicas=2 renders with leader election and its Role"
else
    fail "replicas=2 with leader election did not render as expected:"
    cat "$work/replicas.err" >&2
fi
if "$helm" template "$release" "$chart" --set replicas=2 --set leaderElection.enabled=false \
        >/dev/null 2>"$work/replicas.err"; then
    fail "replicas=2 without leader election rendered; it must be refused"
elif grep -q 'leaderElection.enabled' "$work/replicas.err"; then
    pass "replicas=2 without leader election refused: $(grep -o 'replicas=2.*' "$work/replicas.err" | head -1 | cut -c1-80)..."
else
    fail "replicas=2 without leader election failed, but not with the expected message:"
    cat "$work/replicas.err" >&2
fi

# ---- 5. server-side dry run --------------------------------------------------
if [[ -n "$kubeconfig" ]]; then
    kubectl="${KUBECTL:-}"
    if [[ -z "$kubectl" ]]; then
        if command -v kubectl >/dev/null 2>&1; then
            kubectl="$(command -v kubectl)"
        else
            kubectl="$("$repo/scripts/install-go-tools.sh" kube | tail -1)/kubectl"
        fi
    fi
    k() { "$kubectl" --kubeconfig "$kubeconfig" "$@"; }
    dry_run() {   # dry_run DESCRIPTION FILE
        if k apply --dry-run=server -f "$2" >"$work/apply.out" 2>&1; then
            pass "kubectl apply --dry-run=server ($1)"
            sed 's/^/  /' "$work/apply.out" >&2
        else
            fail "kubectl apply --dry-run=server ($1)"
            cat "$work/apply.out" >&2
        fi
    }
    dry_run "the CRD" "$chart/crds/datastream.yaml"
    [[ -f "$rendered" ]] && dry_run "rendered chart, namespace $namespace" "$rendered"
    if k get crd datastreams.streamfabric.io >/dev/null 2>&1; then
        # The examples have no namespace of their own: they go to the kubeconfig's namespace.
        for example in "$repo"/examples/*.yaml; do
            dry_run "examples/${example##*/} (schema and CEL rules)" "$example"
        done
    else
        log "skipped: examples/*.yaml need the CRD installed in the cluster to be checked"
    fi
fi

log "$passed passed, $failed failed"
[[ $failed == 0 ]]
