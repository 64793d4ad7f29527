#!/usr/bin/env bash
# A volume's life on real Lustre, in one command (README "Quick start"):
#   sudo bash hack/demo-real-lustre.sh
# Builds what it needs (hack/setup.sh: the venv, kube-apiserver/etcd, and through
# hack/lustre/setup.sh Lustre for the pinned Debian kernel and the server image, all cached by
# input hash in /var/cache/lustre-csi), then boots the provisioner's server VMs and a client
# VM in QEMU (KVM where it works, else TCG: about 10-20 minutes on 2 cores), walks one volume
# through lustre-csi on them, and tears everything down.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
if [[ $(id -u) -ne 0 ]]; then
  echo "demo-real-lustre: must run as root (network namespaces, taps, QEMU, mounts)" >&2
  exit 2
fi
bash hack/setup.sh
exec unshare --mount --propagation private -- .venv/bin/python -m tests.lustre.demo
