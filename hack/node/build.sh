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

# shellcheck source=../lib/debian-packages.sh
. hack/lib/debian-packages.sh
ensure_debian_packages node runc containernetworking-plugins buildah mmdebstrap iptables iproute2

bash hack/install-go-tools.sh
bash hack/install-go-tools.sh kube-scheduler kubelet containerd ctr containerd-shim-runc-v2
bash hack/install-sidecars.sh
bash hack/install-sidecars.sh node-driver-registrar livenessprobe
bash hack/images/build.sh
