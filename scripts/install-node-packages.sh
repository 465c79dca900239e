#!/usr/bin/env bash
# Installs the Debian packages a real Kubernetes node needs on this machine
# (scripts/e2e-kube): containerd, runc, the CNI plugins (bridge, host-local,
# portmap, loopback in /usr/lib/cni), iptables (kube-proxy) and busybox-static
# (a shell and nc for probes). Only what is missing is installed, and
# `apt-get update` runs only then; a warm run is a few dpkg queries.
#
# None of the services is started: scripts/e2e-kube runs containerd itself,
# with its own config, root and socket.
set -euo pipefail

PKGS=(containerd runc containernetworking-plugins iptables busybox-static)

missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [[ ${#missing[@]} -eq 0 ]]; then
    exit 0
fi
[[ $(id -u) == 0 ]] || { echo "install-node-packages: need root to install ${missing[*]}" >&2; exit 1; }
echo "install-node-packages: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
