#!/usr/bin/env bash
# Install everything lustre-csi and its tests need, idempotently; a second run takes seconds.
#   - Debian tools the tests call (util-linux for mount/unshare, openssl for the API server certs)
#   - a virtualenv in .venv with the package and its dev extras (pip caches in .cache/pip)
#   - Go-built tools in .cache/bin: csi-sanity, etcd, kube-apiserver, ... (hack/install-go-tools.sh),
#     the csi-provisioner / csi-resizer sidecars (hack/install-sidecars.sh) and helm
#     (hack/install-helm.sh); each also kept in /var/cache/lustre-csi/go-bin/<inputs hash>/
#   - the node tier: kubelet, kube-scheduler, containerd, runc, CNI plugins, buildah and the
#     images built from our Dockerfile and the sidecars (hack/node/build.sh)
#   - the real-Lustre tier: QEMU, Lustre 2.17.0 built for the pinned Debian kernel and the
#     server disk image (hack/lustre/setup.sh; both cached in /var/cache/lustre-csi/)
# `--python-only` stops after the virtualenv (enough for `lustre-csi demo`, no Go builds).
set -euo pipefail
python_only=0
[[ "${1:-}" == "--python-only" ]] && python_only=1
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
mkdir -p .cache

missing=()
for tool in mount umount unshare nsenter openssl; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages for: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq util-linux mount openssl >/dev/null
fi

python=${PYTHON:-python3}
"$python" - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"lustre-csi needs Python 3.11 or newer, found {sys.version.split()[0]}")
PY

if [[ ! -x .venv/bin/python ]]; then
  echo "setup: creating .venv"
  "$python" -m venv .venv
fi
stamp=.cache/pip-installed.stamp
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  echo "setup: installing Python packages into .venv"
  PIP_CACHE_DIR="$repo/.cache/pip" .venv/bin/pip install -q --upgrade pip
  PIP_CACHE_DIR="$repo/.cache/pip" .venv/bin/pip install -q -e '.[dev]'
  echo "$want" >"$stamp"
else
  echo "setup: Python packages up to date"
fi

if ((python_only)); then
  exit 0
fi
# The real-Lustre tier's builds (Lustre from source, then the server image) need nothing the Go
# builds make, and much of them is single-threaded (configure, mmdebstrap, xz), so on a cold
# machine they run beside the Go builds and use the core those leave idle. Their progress lines
# start with "lustre".
bash hack/lustre/setup.sh &
lustre_setup=$!
status=0
{ bash hack/install-go-tools.sh && bash hack/install-sidecars.sh && bash hack/install-helm.sh &&
    bash hack/node/build.sh; } || status=$?
wait "$lustre_setup" || { status=$?; echo "setup: the real-Lustre setup failed (above)" >&2; }
exit "$status"
