#!/usr/bin/env bash
# Everything the node tier (tests/node: a one-node cluster with a real kubelet and containerd)
# needs, idempotently; a second run takes seconds:
#   - Debian packages: runc, containernetworking-plugins (bridge, host-local, loopback,
#     portmap), buildah, mmdebstrap, iptables, iproute2
#   - Go binaries in .cache/bin (and /var/cache/lustre-csi/go-bin/<hash>/):
#     kubelet, kube-scheduler (hack/kube/go.mod, like kube-apiserver), containerd, ctr,
#     containerd-shim-runc-v2 (hack/install-go-tools.sh); node-driver-registrar, livenessprobe
#     (source archives, hack/install-sidecars.sh) and the tools the rest of the suite builds
#   - the images (hack/images/build.sh), as OCI archives listed in .cache/images/index.tsv
#
# Usage: hack/node/build.sh
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO"

packages=(runc containernetworking-plugins buildah mmdebstrap iptables iproute2)
missing=()
for package in "${packages[@]}"; do
    status="$(dpkg-query -W -f='${Status}' "$package" 2> /dev/null || true)"
    [[ "$status" == "install ok installed" ]] || missing+=("$package")
done
if ((${#missing[@]})); then
    echo "node: installing Debian packages: ${missing[*]}"
    # apt may be held by another job on a shared machine: wait for it rather than fail.
    for attempt in 1 2 3 4 5 6; do
        if DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            -o DPkg::Lock::Timeout=120 "${missing[@]}" > /dev/null; then
            break
        fi
        ((attempt < 6)) || { echo "node: apt-get install failed" >&2; exit 1; }
        apt-get update -qq || true
        sleep 10
    done
else
    echo "node: Debian packages present"
fi

bash hack/install-go-tools.sh
bash hack/install-go-tools.sh kube-scheduler kubelet containerd ctr containerd-shim-runc-v2
bash hack/install-sidecars.sh
bash hack/install-sidecars.sh node-driver-registrar livenessprobe
bash hack/images/build.sh
