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
echo "test: pytest"
LUSTRE_CSI_PRIVATE_MOUNTS=1 exec unshare --mount --propagation private -- .venv/bin/pytest -ra "$@"
