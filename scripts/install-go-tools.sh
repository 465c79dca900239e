#!/usr/bin/env bash
# Builds the e2e test infrastructure from published Go modules (no container
# images or prebuilt binaries can be fetched here) and prints the directory
# holding the binaries as the last line:
#
#   bin=$(scripts/install-go-tools.sh | tail -1)          # everything
#   bin=$(scripts/install-go-tools.sh k8s | tail -1)      # etcd, kube-apiserver,
#                                                         # -controller-manager,
#                                                         # -scheduler, kubectl, kwok
#   scripts/install-go-tools.sh minio helm kubeconform    # any subset
#
# Components: etcd, kube (kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, kubelet, kube-proxy), kwok (kwok, kwokctl), helm,
# minio, kubeconform, coredns; groups: k8s = etcd kube kwok,
# kube-node = etcd kube helm coredns minio (what scripts/e2e-kube needs), all (the default).
#
# Each tool is built from a wrapper module of ours under e2e/tools/<name>/
# (go.mod + go.sum with a `tool` directive, committed), so the build list is
# reproducible and checked against go.sum. Binaries are cached under
#   $STREAMFABRIC_CACHE/go-tools/<key>/bin
# with <key> a hash of the pins below, the wrapper files and the Go version;
# the module and build caches live in $STREAMFABRIC_CACHE/go/{mod,build}, so a
# pin bump only recompiles what changed. A warm run only checks marker files.
#
# Changing a pin: edit it below and run this script once; it notices that the
# wrapper's go.mod no longer requires the pinned version, regenerates that
# wrapper (for Kubernetes: the replace list of staging modules, taken from the
# release's own go.mod), runs `go mod tidy`, and asks you to commit the result.
# `scripts/install-go-tools.sh --regen [NAME...]` forces it. CI never needs to.
#
# kubeconform gets its schemas offline: built-in kinds are generated here from
# the swagger.json committed in the k8s.io/kubernetes module (see README).
set -euo pipefail

# ---- pins (the only place versions are chosen) -----------------------------
K8S_VERSION=v1.36.3                    # newest 1.36 patch; 1.37 pairs with etcd 3.7
ETCD_VERSION=v3.6.16                   # newest 3.6 patch (k8s 1.36 requires the 3.6 client)
KWOK_VERSION=v0.8.0                    # its default KubeVersion is 1.36.1
HELM_VERSION=v3.22.0
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c   # what @latest resolved to (tags are RELEASE.*)
KUBECONFORM_VERSION=v0.8.0
COREDNS_VERSION=v1.15.0               # cluster DNS for the real-pods tier (scripts/e2e-kube)
# Bump when the build commands or ldflags below change.
BUILD_REV=2                            # 2: kubelet and kube-proxy in the kube build
# -----------------------------------------------------------------------------

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$repo/e2e/tools"
cache="${STREAMFABRIC_CACHE:-/var/cache/streamfabric}"

export GOPATH="$cache/go/path" GOMODCACHE="$cache/go/mod" GOCACHE="$cache/go/build"
export CGO_ENABLED=0 GOTOOLCHAIN=local GOWORK=off GOFLAGS="-mod=readonly -buildvcs=false"
unset GOOS GOARCH GOBIN

log() { echo "install-go-tools: $*" >&2; }

# name -> wrapper dir, main module it requires, pinned version, tool packages
declare -A DIR MOD VER PKGS
DIR[kube]=k8s;  MOD[kube]=k8s.io/kubernetes;  VER[kube]=$K8S_VERSION
PKGS[kube]="k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy"
DIR[etcd]=etcd; MOD[etcd]=go.etcd.io/etcd/server/v3; VER[etcd]=$ETCD_VERSION
PKGS[etcd]="go.etcd.io/etcd/server/v3"
DIR[kwok]=kwok; MOD[kwok]=sigs.k8s.io/kwok; VER[kwok]=$KWOK_VERSION
PKGS[kwok]="sigs.k8s.io/kwok/cmd/kwok sigs.k8s.io/kwok/cmd/kwokctl"
DIR[helm]=helm; MOD[helm]=helm.sh/helm/v3; VER[helm]=$HELM_VERSION
PKGS[helm]="helm.sh/helm/v3/cmd/helm"
DIR[minio]=minio; MOD[minio]=github.com/minio/minio; VER[minio]=$MINIO_VERSION
PKGS[minio]="github.com/minio/minio"
DIR[kubeconform]=kubeconform; MOD[kubeconform]=github.com/yannh/kubeconform; VER[kubeconform]=$KUBECONFORM_VERSION
PKGS[kubeconform]="github.com/yannh/kubeconform/cmd/kubeconform"
DIR[coredns]=coredns; MOD[coredns]=github.com/coredns/coredns; VER[coredns]=$COREDNS_VERSION
PKGS[coredns]="github.com/coredns/coredns"
ALL=(etcd kube kwok helm minio kubeconform coredns)

# ---- arguments ---------------------------------------------------------------
regen=0
selected=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        all) selected+=("${ALL[@]}") ;;
        k8s) selected+=(etcd kube kwok) ;;
        kube-node) selected+=(etcd kube helm coredns minio) ;;   # what scripts/e2e-kube needs
        apiserver|kube-apiserver) selected+=(kube) ;;
        --regen) regen=1 ;;
        -h|--help) sed -n '2,/^set -e/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) [[ -n "${DIR[$1]:-}" ]] || { log "unknown component '$1' (${ALL[*]} k8s all)"; exit 2; }
           selected+=("$1") ;;
    esac
    shift
done
[[ ${#selected[@]} -gt 0 ]] || selected=("${ALL[@]}")
# de-duplicate, keep order
declare -A seen; comps=()
for c in "${selected[@]}"; do [[ -n "${seen[$c]:-}" ]] || { seen[$c]=1; comps+=("$c"); }; done

# ---- wrapper modules ---------------------------------------------------------
wrapper_current() {   # does e2e/tools/<dir>/go.mod require the pinned version and name every tool?
    local c=$1 gomod="$tools/${DIR[$1]}/go.mod" p
    [[ -f "$gomod" && -f "$tools/${DIR[$1]}/go.sum" ]] &&
        grep -qE "^[[:space:]]*(require[[:space:]]+)?${MOD[$c]//./\\.}[[:space:]]+${VER[$c]}([[:space:]]|$)" "$gomod" ||
        return 1
    for p in ${PKGS[$c]}; do
        grep -qE "^[[:space:]]*(tool[[:space:]]+)?${p//./\\.}[[:space:]]*$" "$gomod" || return 1
    done
}

regen_wrapper() {
    local c=$1 d="$tools/${DIR[$1]}" p
    log "regenerating wrapper module $d for ${MOD[$c]}@${VER[$c]} (commit the result)"
    mkdir -p "$d"
    {
        echo "// Wrapper module: builds ${MOD[$c]} ${VER[$c]} for streamfabric's e2e tests."
        echo "// Generated by scripts/install-go-tools.sh; edit the pins there, not here."
        echo "module streamfabric/e2e/tools/${DIR[$c]}"
        echo
        echo "go 1.26.0"
        echo
        echo "tool ("
        for p in ${PKGS[$c]}; do echo "	$p"; done
        echo ")"
        echo
        echo "require ${MOD[$c]} ${VER[$c]}"
    } >"$d/go.mod"
    : >"$d/go.sum"
    if [[ $c == kube ]]; then
        # k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces
        # them with ./staging/src/...; point each at its published twin v0.Y.Z.
        local kmod staging twin
        kmod="$(GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$K8S_VERSION" |
            sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')"
        twin="v0.${K8S_VERSION#v1.}"
        staging="$(sed -e 's/^replace[[:space:]]*//' "$kmod" |
            awk '$2 == "=>" && $3 ~ /^\.\/staging\// { print $1 }' | sort -u)"
        [[ -n "$staging" ]] || { log "no staging replaces found in $kmod"; exit 1; }
        { echo; echo "replace ("
          for p in $staging; do echo "	$p => $p $twin"; done
          echo ")"; } >>"$d/go.mod"
    fi
    (cd "$d" && GOFLAGS=-mod=mod go mod tidy)
}

need_build() {   # any selected component missing, or a wrapper out of date?
    local c
    for c in "${comps[@]}"; do
        wrapper_current "$c" || return 0
    done
    [[ $regen == 0 ]] || return 0
    key="$(compute_key)"
    for c in "${comps[@]}"; do [[ -f "$cache/go-tools/$key/.built-$c" ]] || return 0; done
    return 1
}

compute_key() {
    {
        printf '%s\n' "$K8S_VERSION" "$ETCD_VERSION" "$KWOK_VERSION" "$HELM_VERSION" \
            "$MINIO_VERSION" "$KUBECONFORM_VERSION" "$COREDNS_VERSION" "$BUILD_REV" \
            "$(go env GOVERSION GOOS GOARCH GOAMD64)"
        local c
        for c in "${ALL[@]}"; do
            cat "$tools/${DIR[$c]}/go.mod" "$tools/${DIR[$c]}/go.sum" 2>/dev/null || true
        done
    } | sha256sum | cut -c1-16
}

# ---- builds ------------------------------------------------------------------
ldflags_for() {
    local c=$1 v x y
    case $c in
        kube)
            v=$K8S_VERSION; x=${v#v}; x=${x%%.*}; y=${v#v*.}; y=${y%%.*}
            local p out="-s -w"
            for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
                out+=" -X $p.gitVersion=$v -X $p.gitMajor=$x -X $p.gitMinor=$y -X $p.gitTreeState=clean"
            done
            echo "$out" ;;
        etcd) echo "-s -w" ;;   # its version is a constant in go.etcd.io/etcd/api/v3/version
        kwok)
            echo "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v} -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=${K8S_VERSION#v}" ;;
        helm)
            # Same as helm's Makefile: k8s version = client-go's v0.Y -> 1.Y
            local cg
            cg="$(cd "$tools/helm" && go list -m -f '{{.Version}}' k8s.io/client-go)"
            y=${cg#v0.}; y=${y%%.*}
            echo "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean" \
                 "-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$y" \
                 "-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$y" ;;
        minio)
            # Mirrors buildscripts/gen-ldflags.go, from the pseudo-version's
            # timestamp and commit (not a RELEASE build, so DEVELOPMENT.<time>).
            local ts=${MINIO_VERSION#v0.0.0-}; local commit=${ts#*-}; ts=${ts%%-*}
            local iso="${ts:0:4}-${ts:4:2}-${ts:6:2}T${ts:8:2}:${ts:10:2}:${ts:12:2}Z"
            local p=github.com/minio/minio/cmd
            echo "-s -w -X $p.Version=$iso -X $p.ReleaseTag=DEVELOPMENT.${iso//:/-} -X $p.CopyrightYear=${ts:0:4}" \
                 "-X $p.CommitID=$commit -X $p.ShortCommitID=$commit" ;;
        kubeconform) echo "-s -w -X main.version=$KUBECONFORM_VERSION" ;;
        coredns) echo "-s -w -X github.com/coredns/coredns/coremain.GitCommit=${COREDNS_VERSION}" ;;
    esac
}

build_one() {
    local c=$1 dest=$2 tmp start
    tmp="$(mktemp -d "$dest/.tmp-$c.XXXXXX")"
    start=$(date +%s)
    log "building $c (${MOD[$c]}@${VER[$c]}) ..."
    local out="$tmp/"
    [[ $c == etcd ]] && out="$tmp/etcd"    # the package path ends in /v3
    [[ $c == coredns ]] && out="$tmp/coredns"
    (cd "$tools/${DIR[$c]}" && go build -trimpath -ldflags "$(ldflags_for "$c")" -o "$out" ${PKGS[$c]})
    if [[ $c == kubeconform ]]; then
        gen_kubeconform_schemas "$(dirname "$dest")/kubeconform-schemas"
    fi
    local names; names="$(ls "$tmp" | tr '\n' ' ')"
    mv -f "$tmp"/* "$dest/"
    rmdir "$tmp"
    log "built $c in $(( $(date +%s) - start ))s: $names"
}

# Standalone JSON schemas in kubeconform's layout, for the built-in kinds of
# the pinned Kubernetes, from the swagger.json committed in k8s.io/kubernetes:
#   <dir>/v1.36.3-standalone{,-strict}/<kind>-<group>-<version>.json
# (and master-standalone{,-strict} -> the same, for kubeconform's default
# -kubernetes-version). CRD schemas: see e2e/tools/README.md.
gen_kubeconform_schemas() {
    local out=$1 swagger
    swagger="$(GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$K8S_VERSION" |
        sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')/api/openapi-spec/swagger.json"
    rm -rf "$out"; mkdir -p "$out"
    python3 - "$swagger" "$out" "$K8S_VERSION" <<'PY'
import json, os, sys
swagger, out, version = sys.argv[1:]
defs = json.load(open(swagger))["definitions"]
# Quantity is a string in the v2 spec but YAML writes `cpu: 1` as a number.
defs["io.k8s.apimachinery.pkg.api.resource.Quantity"] = {
    "oneOf": [{"type": "string"}, {"type": "number"}]}

def expand(node, stack):
    if isinstance(node, list):
        return [expand(x, stack) for x in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str):       # (a map of properties may have one named $ref)
        name = ref.rsplit("/", 1)[-1]
        if name in stack:          # recursive type (JSONSchemaProps): anything
            return {}
        return expand(defs[name], stack + (name,))
    if node.get("format") == "int-or-string":
        return {"oneOf": [{"type": "string"}, {"type": "integer"}]}
    return {k: expand(v, stack) for k, v in node.items()
            if not (k == "description" and isinstance(v, str))}

def nullable(p):
    t = p.get("type")
    if isinstance(t, str):
        p["type"] = [t, "null"]
    elif "oneOf" in p and {"type": "null"} not in p["oneOf"]:
        p["oneOf"].append({"type": "null"})

def finish(schema, strict):   # walks schemas only, never maps of properties
    if not isinstance(schema, dict):
        return
    props = schema.get("properties")
    if isinstance(props, dict):
        if strict:
            schema.setdefault("additionalProperties", False)
        req = set(schema.get("required", []))
        for k, p in props.items():
            if isinstance(p, dict):
                finish(p, strict)
                if k not in req:
                    nullable(p)
    for k in ("items", "additionalProperties", "not"):
        finish(schema.get(k), strict)
    for k in ("oneOf", "anyOf", "allOf"):
        for x in schema.get(k) or []:
            finish(x, strict)

count = 0
for strict in (False, True):
    d = os.path.join(out, version + "-standalone" + ("-strict" if strict else ""))
    os.makedirs(d, exist_ok=True)
    for name, schema in defs.items():
        for gvk in schema.get("x-kubernetes-group-version-kind", []):
            group = gvk["group"].split(".")[0]
            fn = gvk["kind"].lower() + ("-" + group.lower() if group else "") + "-" + gvk["version"].lower() + ".json"
            path = os.path.join(d, fn)
            if os.path.exists(path):
                continue
            s = expand(schema, (name,))
            finish(s, strict)
            s["$schema"] = "http://json-schema.org/schema#"
            with open(path, "w") as f:
                json.dump(s, f, separators=(",", ":"))
            count += 1
    os.symlink(os.path.basename(d), os.path.join(out, "master-standalone" + ("-strict" if strict else "")))
print("install-go-tools: wrote %d kubeconform schemas under %s" % (count, out), file=sys.stderr)
PY
}

# ---- main --------------------------------------------------------------------
if ! need_build; then
    echo "$cache/go-tools/$key/bin"
    exit 0
fi

mkdir -p "$cache/go-tools"
exec 9>"$cache/go-tools/.lock"
if ! flock -n 9; then
    log "waiting for another install-go-tools run (lock $cache/go-tools/.lock)"
    flock 9
fi

for c in "${comps[@]}"; do
    if [[ $regen == 1 ]] || ! wrapper_current "$c"; then regen_wrapper "$c"; fi
done
key="$(compute_key)"
top="$cache/go-tools/$key"
mkdir -p "$top/bin"
rm -rf "$top/bin"/.tmp-*    # leftovers of an interrupted build (we hold the lock)
for c in "${comps[@]}"; do
    [[ -f "$top/.built-$c" ]] && continue
    build_one "$c" "$top/bin"
    printf '%s %s\n' "${MOD[$c]}" "${VER[$c]}" >"$top/.built-$c"
done
exec 9>&-
echo "$top/bin"
