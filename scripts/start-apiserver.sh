#!/usr/bin/env bash
# Starts etcd and a real kube-apiserver (built by scripts/install-go-tools.sh)
# in the background on 127.0.0.1, keeping everything under DIR, waits until
# the API server is ready, and prints the connection facts as shell
# assignments (also written to DIR/apiserver.env):
#
#   eval "$(scripts/start-apiserver.sh /tmp/sf-k8s)"
#   kubectl --kubeconfig "$KUBECONFIG" get ns
#   scripts/start-apiserver.sh --stop /tmp/sf-k8s
#       # or: kill "$(cat DIR/kube-apiserver.pid)" "$(cat DIR/etcd.pid)"
#
# No controller-manager or scheduler runs: this is for CRD/manifest tests
# (apply, --dry-run=server, watches) and for an operator under test.
#
# Security, kept simple: the API server authenticates a static bearer token
# (--token-auth-file; user streamfabric-admin in group system:masters, RBAC on)
# and serves TLS with a self-signed certificate it generates itself in
# DIR/pki (--cert-dir), which the kubeconfig pins as its CA. The
# service-account signing key pair is generated with openssl. etcd listens
# on plain http on 127.0.0.1 only (test data; no client auth).
#
# Layout: DIR/etcd (etcd data), DIR/pki, DIR/tokens.csv, DIR/kubeconfig,
# DIR/{etcd,kube-apiserver}.{log,pid}, DIR/apiserver.env. A restart on the same
# DIR keeps etcd's data, the certificate, the token and the keys; ports are
# picked afresh (ETCD_PORT, ETCD_PEER_PORT, APISERVER_PORT override).
# GO_TOOLS_BIN: a directory holding etcd and kube-apiserver (default:
# install-go-tools.sh). Waits are bounded (APISERVER_START_TIMEOUT, 180 s).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
log() { echo "start-apiserver: $*" >&2; }

source "$here/lib/process.sh"
stop_all() {
    stop_pidfile "$1/kube-apiserver.pid" kube-apiserver
    stop_pidfile "$1/etcd.pid" etcd
}

if [[ "${1:-}" == "--stop" ]]; then
    [[ $# -eq 2 ]] || { echo "usage: $0 --stop DIR" >&2; exit 2; }
    stop_all "$2"
    exit 0
fi
[[ $# -eq 1 ]] || { echo "usage: $0 DIR | $0 --stop DIR" >&2; exit 2; }

dir="$(mkdir -p "$1" && cd "$1" && pwd)"
for f in etcd kube-apiserver; do
    if [[ -f "$dir/$f.pid" ]] && kill -0 "$(cat "$dir/$f.pid")" 2>/dev/null; then
        log "$f already running (pid $(cat "$dir/$f.pid")); stop it first: $0 --stop $dir"
        exit 1
    fi
done

bin="${GO_TOOLS_BIN:-}"
if [[ -z "$bin" ]]; then
    bin="$("$here/install-go-tools.sh" etcd kube | tail -1)"
fi

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
etcd_port="${ETCD_PORT:-$(free_port)}"
peer_port="${ETCD_PEER_PORT:-$(free_port)}"
api_port="${APISERVER_PORT:-$(free_port)}"
timeout="${APISERVER_START_TIMEOUT:-180}"
deadline=$((SECONDS + timeout))

fail() {   # fail MESSAGE: show the logs' tails, stop what we started, exit 1
    log "$1"
    for f in etcd kube-apiserver; do
        [[ -f "$dir/$f.log" ]] && { echo "--- last lines of $dir/$f.log" >&2; tail -15 "$dir/$f.log" >&2; }
    done
    stop_all "$dir"
    exit 1
}

umask 077
mkdir -p "$dir/pki" "$dir/etcd"

# Secrets, made once per DIR.
if [[ ! -f "$dir/tokens.csv" ]]; then
    echo "$(openssl rand -hex 32),streamfabric-admin,streamfabric-admin,\"system:masters\"" >"$dir/tokens.csv"
fi
token="$(cut -d, -f1 "$dir/tokens.csv")"
if [[ ! -f "$dir/pki/sa.key" ]]; then
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$dir/pki/sa.key" 2>/dev/null
    openssl pkey -in "$dir/pki/sa.key" -pubout -out "$dir/pki/sa.pub"
fi

# --- etcd ---------------------------------------------------------------------
etcd_url="http://127.0.0.1:$etcd_port"
setsid nohup "$bin/etcd" --name streamfabric --data-dir "$dir/etcd" \
    --listen-client-urls "$etcd_url" --advertise-client-urls "$etcd_url" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "streamfabric=http://127.0.0.1:$peer_port" \
    --initial-cluster-state new --log-level warn \
    >"$dir/etcd.log" 2>&1 </dev/null &
echo $! >"$dir/etcd.pid"
until curl -fsS --max-time 2 "$etcd_url/health" 2>/dev/null | grep -q '"health":"true"'; do
    kill -0 "$(cat "$dir/etcd.pid")" 2>/dev/null || fail "etcd exited during start"
    ((SECONDS < deadline)) || fail "etcd not healthy after ${timeout}s"
    sleep 0.2
done
log "etcd ready at $etcd_url (pid $(cat "$dir/etcd.pid"))"

# --- kube-apiserver -----------------------------------------------------------
api_url="https://127.0.0.1:$api_port"
# --endpoint-reconciler-type=none: the `kubernetes` Service would otherwise get
# an Endpoints object with 127.0.0.1, which validation refuses (loopback).
setsid nohup "$bin/kube-apiserver" \
    --advertise-address=127.0.0.1 --bind-address=127.0.0.1 --secure-port="$api_port" \
    --cert-dir="$dir/pki" \
    --etcd-servers="$etcd_url" \
    --token-auth-file="$dir/tokens.csv" \
    --authorization-mode=RBAC \
    --anonymous-auth=false \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$dir/pki/sa.pub" \
    --service-account-signing-key-file="$dir/pki/sa.key" \
    --service-cluster-ip-range=10.96.0.0/16 \
    --endpoint-reconciler-type=none \
    --allow-privileged=true \
    --profiling=false \
    --v=1 \
    >"$dir/kube-apiserver.log" 2>&1 </dev/null &
echo $! >"$dir/kube-apiserver.pid"

# The serving certificate appears in DIR/pki once the server has started.
until [[ -s "$dir/pki/apiserver.crt" ]] &&
    curl -fsS --max-time 3 --cacert "$dir/pki/apiserver.crt" \
        -H "Authorization: Bearer $token" "$api_url/readyz" >/dev/null 2>&1; do
    kill -0 "$(cat "$dir/kube-apiserver.pid")" 2>/dev/null || fail "kube-apiserver exited during start"
    ((SECONDS < deadline)) || fail "kube-apiserver not ready after ${timeout}s"
    sleep 0.5
done

ca_data="$(base64 -w0 <"$dir/pki/apiserver.crt")"
cat >"$dir/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: streamfabric
  cluster:
    server: $api_url
    certificate-authority-data: $ca_data
users:
- name: streamfabric-admin
  user:
    token: $token
contexts:
- name: streamfabric
  context:
    cluster: streamfabric
    user: streamfabric-admin
current-context: streamfabric
EOF

# %q-quoted, so the lines can be eval'ed or sourced whatever the paths hold.
{
    printf 'KUBECONFIG=%q\n' "$dir/kubeconfig"
    printf 'KUBE_APISERVER_URL=%q\n' "$api_url"
    printf 'KUBE_APISERVER_PID_FILE=%q\n' "$dir/kube-apiserver.pid"
    printf 'ETCD_ENDPOINT=%q\n' "$etcd_url"
    printf 'ETCD_PID_FILE=%q\n' "$dir/etcd.pid"
} >"$dir/apiserver.env"
log "kube-apiserver ready at $api_url (pid $(cat "$dir/kube-apiserver.pid")) after ${SECONDS}s"
cat "$dir/apiserver.env"
