#!/usr/bin/env bash
# Install what the benchmarks need, then run the suite in a private mount namespace.
#   bash hack/bench.sh            full suite (~15 min on 2 cores): bench/results/<date>.{json,md,png}
#   bash hack/bench.sh --quick    a smoke run (~1 min)
#   bash hack/bench.sh --real-lustre [ARGS]   the real-Lustre figures (bench/real_lustre.py:
#                                 the real-Lustre tier's VMs, ~30 min under TCG, next to the
#                                 local server set): bench/results/real-lustre-<date>.{json,md}
#   bash hack/bench.sh --allow-missing-reference [ARGS]   measure lustre-csi alone when the
#                                 reference binary is missing (the run says so in its notes)
# The reference driver (hostpathplugin) is built by hack/install-sidecars.sh (via
# hack/setup.sh) from ../shared/third_party/csi-driver-host-path-v1.18.0.tar.xz, offline with
# -mod=vendor, and cached by the hash of its inputs in .cache/bin and
# /var/cache/lustre-csi/go-bin like the other Go tools. The suite's targets are ratios to it,
# so a run without it fails (--require-reference) unless --allow-missing-reference is given.
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
reference=(--require-reference)
args=()
for arg in "$@"; do
  if [[ $arg == --allow-missing-reference ]]; then
    reference=()
  else
    args+=("$arg")
  fi
done
exec unshare --mount --propagation private -- .venv/bin/python -m bench.run \
  "${reference[@]}" "${args[@]}"
