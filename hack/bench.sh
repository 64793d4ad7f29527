#!/usr/bin/env bash
# Install what the benchmarks need, then run the suite in a private mount namespace.
#   bash hack/bench.sh            full suite (~15 min on 2 cores): bench/results/<date>.{json,md,png}
#   bash hack/bench.sh --quick    a smoke run (~1 min)
#   bash hack/bench.sh --real-lustre [ARGS]   the real-Lustre figures (bench/real_lustre.py:
#                                 the real-Lustre tier's VMs, ~30 min under TCG, next to the
#                                 local server set): bench/results/real-lustre-<date>.{json,md}
# The reference driver (hostpathplugin) comes from hack/install-sidecars.sh via hack/setup.sh;
# when the Go module proxy does not serve it, the suite measures lustre-csi alone and says so
# (pass --require-reference to make that an error).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
bash hack/setup.sh
# Benchmark-only packages: the plot and the profiler used to explain a missed target.
if ! .venv/bin/python -c "import matplotlib" 2>/dev/null || [[ ! -x .venv/bin/py-spy ]]; then
  echo "bench: installing matplotlib and py-spy into .venv"
  PIP_CACHE_DIR="$repo/.cache/pip" .venv/bin/pip install -q -e '.[dev,bench]'
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "bench: must run as root (the node plugins make real bind mounts)" >&2
  exit 2
fi
if [[ ${1:-} == --real-lustre ]]; then
  shift
  exec unshare --mount --propagation private -- .venv/bin/python -m bench.real_lustre "$@"
fi
exec unshare --mount --propagation private -- .venv/bin/python -m bench.run "$@"
