#!/usr/bin/env bash
# Everything the real-Lustre tier (tests/lustre) needs, idempotently; a second run takes seconds:
#   - Debian packages: QEMU and its image tools, genisoimage (cloud-init seeds, the client
#     VM's payload), dnsmasq (the VMs' management DHCP), socat (the client VM's way to the
#     API server), mmdebstrap, e2fsprogs, fdisk (the server image)
#   - Lustre 2.17.0 built for the pinned Debian kernel (hack/lustre/build.sh)
#   - the Lustre server disk image (hack/lustre/image.sh)
# Both builds are kept in /var/cache/lustre-csi/ keyed by the hash of their inputs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

# shellcheck source=../lib/debian-packages.sh
. hack/lib/debian-packages.sh
ensure_debian_packages lustre qemu-system-x86 qemu-utils genisoimage dnsmasq-base socat \
    iproute2 mmdebstrap e2fsprogs fdisk
bash hack/lustre/build.sh
bash hack/lustre/image.sh
