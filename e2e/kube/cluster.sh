#!/usr/bin/env bash
# A one-node Kubernetes cluster with real pods, inside a network namespace of its own
# with no uplink (see ../shared/REAL-CLUSTER.md for why each setting is what it is):
#
#   e2e/kube/cluster.sh up BIN IMAGES   # BIN: the Go tools (install-go-tools.sh kube-node),
#                                       # IMAGES: docker-save tars to import (build-image-tars.sh)
#   e2e/kube/cluster.sh down            # stop everything, also what a failed run left
#   e2e/kube/cluster.sh logs            # where each component's log is
#
# Layout: everything under $E2E_KUBE_DIR (default /tmp/streamfabric-e2e-kube): pki,
# kubeconfig, etcd data, containerd root/state/socket, kubelet root, pod logs, CNI IPAM,
# hostPath volumes, logs/<component>.log, pids/<component>.pid, cluster.env.
# The network namespace is /run/netns/$E2E_KUBE_NETNS (default sf-e2e-kube): loopback and
# the bridge sfkube0 = 10.213.0.1/24 (the node IP; pods get 10.213.0.16-250 from the CNI
# bridge plugin), a route for the Service range 10.96.0.0/16, no default route. Every
# server binds 127.0.0.1 or 10.213.0.1 inside it; kubectl and clients run in it through
# e2e/kube/in-cluster-net.
#
# What the stack writes outside the directory, and `down` cleans: /run/netns/cni-* (pod
# network namespaces), the kubepods cgroups, /var/log/containers, /var/lib/cni, and
# /var/lib/kubelet, /run/containerd when a component falls back to them. Every wait is
# bounded (E2E_KUBE_START_TIMEOUT, default 180 s per component) and fails loudly.
set -euo pipefail

dir="${E2E_KUBE_DIR:-/tmp/streamfabric-e2e-kube}"
netns="${E2E_KUBE_NETNS:-sf-e2e-kube}"
ns_file="/run/netns/$netns"
bridge=sfkube0
node_ip=10.213.0.1
pod_subnet=10.213.0.0/24
service_cidr=10.96.0.0/16
api_service_ip=10.96.0.1
node_name=sf-node
api_url="https://$node_ip:6443"
cni_net=sf-e2e-kube
timeout="${E2E_KUBE_START_TIMEOUT:-180}"
PAUSE_IMAGE=localhost/streamfabric/pause:e2e
# Components in start order; `down` stops them in reverse (kubelet first, see there).
COMPONENTS=(etcd kube-apiserver containerd kube-controller-manager kube-scheduler kubelet kube-proxy coredns)

log() { echo "cluster: $*" >&2; }

in_ns() { nsenter --net="$ns_file" "$@"; }

# ---- down --------------------------------------------------------------------------
stop_pids() {   # stop_pids FILE...: TERM to all at once, up to 15 s for all, then KILL
    local f pid i alive=() names=()
    for f in "$@"; do
        [[ -f "$f" ]] || continue
        pid="$(cat "$f")"
        if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            alive+=("$pid"); names+=("$(basename "$f" .pid)")
        fi
        rm -f "$f"
    done
    for ((i = 0; i < 150; i++)); do
        for pid in "${alive[@]}"; do kill -0 "$pid" 2>/dev/null && break; pid=""; done
        [[ -z "${pid:-}" ]] && return 0
        sleep 0.1
    done
    for i in "${!alive[@]}"; do
        if kill -0 "${alive[$i]}" 2>/dev/null; then
            log "${names[$i]} (${alive[$i]}) ignored TERM for 15s; killing"
            kill -9 "${alive[$i]}" 2>/dev/null || true
        fi
    done
}

kubepods_cgroups() {   # every kubepods cgroup directory, deepest first
    local root
    for root in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
        [[ -d "$root" ]] && find "$root" -depth -type d
    done
    return 0
}

shim_pids() {   # the pod shims: parents of the container processes containerd recorded
    local f pid
    for f in "$dir"/containerd/state/io.containerd.runtime.v2.task/*/*/init.pid; do
        [[ -f "$f" ]] || continue
        pid="$(cat "$f")"
        [[ -r /proc/$pid/stat ]] && awk '{print $4}' "/proc/$pid/stat"
    done
    return 0
}

kill_pods() {   # every pod's processes and shims (with the kubelet stopped)
    local shims i pids id ctr_=(ctr --address "$dir/containerd.sock" -n k8s.io --timeout 10s)
    shims="$(shim_pids | sort -u)"
    # containerd first, so that it ends its shims itself.
    if [[ -S "$dir/containerd.sock" ]] && "${ctr_[@]}" version >/dev/null 2>&1; then
        for id in $("${ctr_[@]}" tasks ls -q 2>/dev/null); do
            "${ctr_[@]}" tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
        done
        for id in $("${ctr_[@]}" tasks ls -q 2>/dev/null); do
            "${ctr_[@]}" tasks delete --force "$id" >/dev/null 2>&1 || true
        done
    fi
    for ((i = 0; i < 50; i++)); do
        pids="$(kubepods_cgroups | while read -r d; do cat "$d/cgroup.procs" 2>/dev/null; done | sort -u)"
        for id in $shims; do kill -0 "$id" 2>/dev/null && pids+=" $id"; done
        [[ -z "${pids//[[:space:]]/}" ]] && return 0
        # shellcheck disable=SC2086
        kill -9 $pids 2>/dev/null || true
        sleep 0.2
    done
    log "pod processes survived kill -9: $pids"
}

unmount_under() {   # unmount_under PREFIX: every mount below it, deepest first
    local m
    findmnt -rn -o TARGET | awk -v p="$1" 'index($0, p) == 1' | sort -r | while read -r m; do
        m="$(printf '%b' "$m")"   # findmnt -r escapes spaces as \x20
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "cannot unmount $m"
    done
}

down() {
    local c d f
    # Clients (client-*.pid, e.g. the scenario of a run killed outright) and the kubelet
    # first: it would restart what is stopped after it; then the pods; then
    # the API server's clients together, the API server, etcd (an API server whose etcd
    # is gone takes 15 s to stop).
    stop_pids "$dir"/pids/client-*.pid "$dir/pids/kubelet.pid"
    kill_pods
    local files=()
    for c in "${COMPONENTS[@]}"; do
        [[ $c == etcd || $c == kube-apiserver ]] || files+=("$dir/pids/$c.pid")
    done
    stop_pids "${files[@]}"
    stop_pids "$dir/pids/kube-apiserver.pid"
    stop_pids "$dir/pids/etcd.pid"
    unmount_under "$dir/"
    for f in /run/netns/cni-*; do
        [[ -e "$f" ]] || continue
        umount "$f" 2>/dev/null || umount -l "$f" 2>/dev/null || true
        rm -f "$f"
    done
    kubepods_cgroups | while read -r d; do rmdir "$d" 2>/dev/null || log "cannot remove cgroup $d"; done
    if [[ -e "$ns_file" ]]; then ip netns delete "$netns" 2>/dev/null || { umount "$ns_file" || true; rm -f "$ns_file"; }; fi
    # `ip netns add` made /run/netns a mount point; undo that when nothing else is there.
    if [[ -d /run/netns ]] && [[ -z "$(ls -A /run/netns)" ]]; then umount /run/netns 2>/dev/null || true; rmdir /run/netns 2>/dev/null || true; fi
    # Outside the directory: pod log links, CNI cache, kubelet/containerd defaults.
    if [[ -d /var/log/containers ]]; then
        find /var/log/containers -maxdepth 1 -type l -lname "$dir/*" -delete
        rmdir /var/log/containers 2>/dev/null || true
    fi
    rm -rf "/var/lib/cni/networks/$cni_net" /var/lib/cni/results/"$cni_net"-* /var/lib/cni/results/cni-loopback-*
    rmdir /var/lib/cni/results /var/lib/cni/networks /var/lib/cni 2>/dev/null || true
    for d in /var/lib/kubelet /run/containerd; do
        if [[ -d $d ]] && ! findmnt -rn -o TARGET | grep "^$d" >/dev/null; then rm -rf "$d"; fi
    done
    rm -rf "$dir"
}

# ---- up ------------------------------------------------------------------------------
fail() {   # fail MESSAGE: show the recent log lines of every component, exit 1
    local c
    log "FAILED: $1"
    for c in "${COMPONENTS[@]}"; do
        [[ -f "$dir/logs/$c.log" ]] || continue
        echo "--- last lines of $dir/logs/$c.log" >&2
        tail -20 "$dir/logs/$c.log" >&2
    done
    exit 1
}

start() {   # start NAME CMD...: in the namespace, detached, logging to logs/NAME.log
    local name=$1; shift
    setsid nohup nsenter --net="$ns_file" "$@" >"$dir/logs/$name.log" 2>&1 </dev/null &
    echo $! >"$dir/pids/$name.pid"
}

wait_until() {   # wait_until NAME WHAT CMD...: until CMD succeeds, NAME alive, within the bound
    local name=$1 what=$2 deadline=$((SECONDS + timeout)) t0=$SECONDS; shift 2
    until "$@" >/dev/null 2>&1; do
        kill -0 "$(cat "$dir/pids/$name.pid")" 2>/dev/null || fail "$name exited while waiting for $what"
        ((SECONDS < deadline)) || fail "$what: not within ${timeout}s"
        sleep 0.3
    done
    log "$what ($((SECONDS - t0))s)"
}

kubectl_ns() { in_ns "$bin/kubectl" --kubeconfig "$dir/kubeconfig" "$@"; }

make_pki() {
    local p="$dir/pki"
    mkdir -p "$p"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$p/ca.key" -out "$p/ca.crt" -days 3 \
        -subj "/CN=streamfabric-e2e-kube-ca" 2>/dev/null
    sign() {   # sign NAME SUBJECT EXTENSIONS
        openssl req -newkey rsa:2048 -nodes -keyout "$p/$1.key" -out "$p/$1.csr" -subj "$2" 2>/dev/null
        openssl x509 -req -in "$p/$1.csr" -CA "$p/ca.crt" -CAkey "$p/ca.key" -CAcreateserial \
            -days 3 -out "$p/$1.crt" -extfile <(printf '%s\n' "$3") 2>/dev/null
    }
    sign apiserver "/CN=kube-apiserver" "$(printf '%s\n' \
        "basicConstraints=CA:FALSE" "keyUsage=digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" \
        "subjectAltName=IP:$api_service_ip,IP:$node_ip,IP:127.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local")"
    # One client identity for the components and the test (system:masters): a test cluster.
    sign admin "/O=system:masters/CN=streamfabric-e2e-admin" "$(printf '%s\n' \
        "basicConstraints=CA:FALSE" "keyUsage=digitalSignature,keyEncipherment" "extendedKeyUsage=clientAuth")"
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$p/sa.key" 2>/dev/null
    openssl pkey -in "$p/sa.key" -pubout -out "$p/sa.pub"
    cat >"$dir/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: e2e-kube
  cluster:
    server: $api_url
    certificate-authority: $p/ca.crt
users:
- name: admin
  user:
    client-certificate: $p/admin.crt
    client-key: $p/admin.key
contexts:
- name: e2e-kube
  context: {cluster: e2e-kube, user: admin}
current-context: e2e-kube
EOF
}

write_configs() {
    mkdir -p "$dir/cni/net.d" "$dir/containerd" "$dir/volumes"
    cat >"$dir/cni/net.d/10-$cni_net.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "$cni_net",
  "plugins": [
    {
      "type": "bridge", "bridge": "$bridge", "isGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": {
        "type": "host-local", "dataDir": "$dir/cni/ipam",
        "ranges": [[{"subnet": "$pod_subnet", "rangeStart": "10.213.0.16", "rangeEnd": "10.213.0.250", "gateway": "$node_ip"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
    # restrict_oom_score_adj: the VM lacks CAP_SYS_RESOURCE (runc: "can't get final
    # child's PID from pipe: EOF"). cgroup v1 host: cgroupfs, not systemd.
    cat >"$dir/containerd/config.toml" <<EOF
version = 2
root = "$dir/containerd/root"
state = "$dir/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "$dir/containerd.sock"
[ttrpc]
  address = "$dir/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  enable_selinux = false
  # Pod network namespaces under the state directory, not /run/netns/cni-*.
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "/usr/sbin/runc"
        Root = "$dir/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$dir/cni/net.d"
EOF
    # oomScoreAdj 0 (no CAP_SYS_RESOURCE), failCgroupV1 false (cgroup v1 host),
    # resolvConf "" (pods never see the host's resolver), podLogsDir in the directory.
    cat >"$dir/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://$dir/containerd.sock
address: $node_ip
port: 10250
healthzBindAddress: 127.0.0.1
healthzPort: 10248
readOnlyPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $dir/pki/ca.crt}
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
failCgroupV1: false
oomScoreAdj: 0
failSwapOn: false
resolvConf: ""
clusterDNS: [$node_ip]
clusterDomain: cluster.local
podLogsDir: $dir/pod-logs
registerNode: true
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
nodeStatusUpdateFrequency: 4s
syncFrequency: 10s
fileCheckFrequency: 10s
shutdownGracePeriod: 0s
EOF
    cat >"$dir/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $dir/kubeconfig}
hostnameOverride: $node_name
bindAddress: $node_ip
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
mode: iptables
clusterCIDR: $pod_subnet
oomScoreAdj: 0
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
    # No `forward`: names outside the cluster are never asked of a resolver outside.
    cat >"$dir/Corefile" <<EOF
.:53 {
    bind $node_ip
    errors
    ready 127.0.0.1:8181
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $dir/kubeconfig e2e-kube
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }
    cache 5
}
EOF
}

# A cluster admin's storage: a default StorageClass for pre-made hostPath PersistentVolumes
# (hostPath ignores fsGroup, so each directory belongs to the pods' user, 65532). Retained,
# a volume serves one claim only: the scenario's steps use 9 of them (E2E_KUBE_VOLUMES).
storage_manifest() {
    local i
    cat <<EOF
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: local-hostpath
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Retain
EOF
    for i in $(seq 1 "${E2E_KUBE_VOLUMES:-12}"); do
        mkdir -p "$dir/volumes/pv-$i"
        chown 65532:65532 "$dir/volumes/pv-$i"
        cat <<EOF
---
apiVersion: v1
kind: PersistentVolume
metadata:
  name: e2e-hostpath-$i
spec:
  storageClassName: local-hostpath
  capacity: {storage: 100Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  hostPath: {path: $dir/volumes/pv-$i, type: Directory}
EOF
    done
}

up() {
    bin=$1 images=$2
    [[ -x "$bin/kubelet" && -x "$bin/coredns" ]] || fail "no kubelet/coredns in $bin"
    if [[ -e "$dir" || -e "$ns_file" ]]; then
        log "leftovers of an earlier run; cleaning them first"
        down
    fi
    mkdir -p "$dir/logs" "$dir/pids"
    export PATH="/usr/sbin:/usr/bin:/sbin:/bin:$PATH"

    # The namespace: loopback and one bridge holding the node IP (no `dummy` links in
    # this kernel), the Service range routed to it, nothing leading outside.
    ip netns add "$netns"
    in_ns ip link set lo up
    in_ns ip link add "$bridge" type bridge
    in_ns ip addr add "$node_ip/24" dev "$bridge"
    in_ns ip link set "$bridge" up
    in_ns ip route add "$service_cidr" dev "$bridge"
    in_ns sysctl -qw net.ipv4.ip_forward=1
    in_ns sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null ||
        { modprobe br_netfilter 2>/dev/null || true; in_ns sysctl -qw net.bridge.bridge-nf-call-iptables=1; }
    if [[ -n "$(in_ns ip route show default)" ]]; then fail "the namespace has a default route"; fi

    make_pki
    write_configs

    start etcd "$bin/etcd" --name e2e-kube --data-dir "$dir/etcd" \
        --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
        --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
        --initial-cluster e2e-kube=http://127.0.0.1:2380 --listen-metrics-urls http://127.0.0.1:2381 \
        --log-level warn
    wait_until etcd "etcd healthy" in_ns curl -fsS --max-time 2 http://127.0.0.1:2379/health

    start kube-apiserver "$bin/kube-apiserver" \
        --advertise-address="$node_ip" --bind-address="$node_ip" --secure-port=6443 \
        --etcd-servers=http://127.0.0.1:2379 \
        --tls-cert-file="$dir/pki/apiserver.crt" --tls-private-key-file="$dir/pki/apiserver.key" \
        --client-ca-file="$dir/pki/ca.crt" \
        --kubelet-client-certificate="$dir/pki/admin.crt" --kubelet-client-key="$dir/pki/admin.key" \
        --kubelet-preferred-address-types=InternalIP \
        --authorization-mode=RBAC --anonymous-auth=false \
        --service-account-issuer=https://kubernetes.default.svc.cluster.local \
        --service-account-key-file="$dir/pki/sa.pub" \
        --service-account-signing-key-file="$dir/pki/sa.key" \
        --service-cluster-ip-range="$service_cidr" \
        --allow-privileged=true --profiling=false --v=1
    wait_until kube-apiserver "kube-apiserver ready at $api_url" \
        in_ns curl -fsS --max-time 3 --cacert "$dir/pki/ca.crt" --cert "$dir/pki/admin.crt" \
        --key "$dir/pki/admin.key" "$api_url/readyz"

    start containerd /usr/bin/containerd --config "$dir/containerd/config.toml"
    wait_until containerd "containerd serving" ctr --address "$dir/containerd.sock" version
    local t0=$SECONDS tar
    for tar in "$images"/*.tar; do
        ctr --address "$dir/containerd.sock" -n k8s.io images import "$tar" >/dev/null ||
            fail "ctr images import $tar"
    done
    log "images imported ($((SECONDS - t0))s): $(ctr --address "$dir/containerd.sock" -n k8s.io images ls -q | tr '\n' ' ')"

    start kube-controller-manager "$bin/kube-controller-manager" \
        --kubeconfig="$dir/kubeconfig" --authentication-kubeconfig="$dir/kubeconfig" \
        --authorization-kubeconfig="$dir/kubeconfig" \
        --bind-address=127.0.0.1 --secure-port=10257 --leader-elect=false \
        --root-ca-file="$dir/pki/ca.crt" --service-account-private-key-file="$dir/pki/sa.key" \
        --use-service-account-credentials=false --service-cluster-ip-range="$service_cidr" \
        --allocate-node-cidrs=false --controllers='*' --v=1
    start kube-scheduler "$bin/kube-scheduler" \
        --kubeconfig="$dir/kubeconfig" --authentication-kubeconfig="$dir/kubeconfig" \
        --authorization-kubeconfig="$dir/kubeconfig" \
        --bind-address=127.0.0.1 --secure-port=10259 --leader-elect=false --v=1
    start kubelet "$bin/kubelet" --config="$dir/kubelet.yaml" --kubeconfig="$dir/kubeconfig" \
        --root-dir="$dir/kubelet" --cert-dir="$dir/kubelet/pki" \
        --hostname-override="$node_name" --node-ip="$node_ip" --v=1
    start kube-proxy "$bin/kube-proxy" --config="$dir/kube-proxy.yaml" --v=1
    start coredns "$bin/coredns" -conf "$dir/Corefile"

    wait_until kubelet "node $node_name Ready" \
        kubectl_ns wait --for=condition=Ready "node/$node_name" --timeout=5s
    wait_until kube-proxy "kube-proxy healthy" in_ns curl -fsS --max-time 2 http://127.0.0.1:10256/healthz
    wait_until coredns "CoreDNS ready" in_ns curl -fsS --max-time 2 http://127.0.0.1:8181/ready
    wait_until kube-controller-manager "service account and root CA in namespace default" \
        kubectl_ns get serviceaccount/default configmap/kube-root-ca.crt
    storage_manifest | kubectl_ns apply -f - >/dev/null || fail "storage class and volumes"
    {
        printf 'KUBECONFIG=%q\n' "$dir/kubeconfig"
        printf 'E2E_KUBE_NETNS_FILE=%q\n' "$ns_file"
        printf 'E2E_KUBE_DIR=%q\n' "$dir"
        printf 'E2E_KUBE_NODE_IP=%q\n' "$node_ip"
    } >"$dir/cluster.env"
    log "cluster up: node $node_name ($node_ip), API $api_url, env in $dir/cluster.env"
}

case "${1:-}" in
    up) [[ $# -eq 3 ]] || { echo "usage: $0 up BIN IMAGES_DIR" >&2; exit 2; }; up "$2" "$3" ;;
    down) down ;;
    logs) for c in "${COMPONENTS[@]}"; do echo "$c: $dir/logs/$c.log"; done ;;
    *) echo "usage: $0 up BIN IMAGES_DIR | down | logs" >&2; exit 2 ;;
esac
