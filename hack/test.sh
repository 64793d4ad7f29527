#!/usr/bin/env bash
# Install what is needed, then run every check: lint, stub freshness, and the test suite.
# The suite runs in a private mount namespace so its real mounts never reach the host.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
bash hack/setup.sh
echo "test: ruff"
.venv/bin/ruff check .
echo "test: mypy"
.venv/bin/mypy csi provisioner
echo "test: generated stubs are current"
.venv/bin/python hack/generate_stubs.py --check
private() { LUSTRE_CSI_PRIVATE_MOUNTS=1 unshare --mount --propagation private -- "$@"; }
status=0
echo "test: pytest (unit, integration with real mounts, fuzz, csi-sanity, kube, provisioner, e2e)"
private .venv/bin/pytest -ra "$@" || status=$?
if (($# == 0)); then
  # Tiers with a node or VMs of their own run in their own pytest process: each enters
  # namespaces for its whole run and takes minutes (their conftest deselects them above).
  echo "test: node tier (one-node cluster: kubelet + containerd + the images built here)"
  private .venv/bin/pytest -ra tests/node || status=$?
  echo "test: real-Lustre tier (the provisioner's own server VMs, Lustre 2.17 under QEMU)"
  private .venv/bin/pytest -ra tests/lustre || status=$?
fi
exit "$status"
