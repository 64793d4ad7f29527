"""What a Lustre client VM needs to run lustre-csi as a node would: a read-only payload disk.

A Kubernetes node gets the driver as an image; the client VM of the real-Lustre tier gets the
same wheel the Dockerfile builds, on an iso9660 disk (serial `payload0`, seen in the guest as
/dev/disk/by-id/virtio-payload0) with:

- `wheels/`: the project's wheel (built from this tree) and every run-time dependency as
  binary wheels for the guest (Debian bookworm's CPython 3.11 on x86_64, the same platform as
  the host's venv), plus pip's own wheel: the guest has python3 (cloud-init needs it) but no
  pip and no network, so `install.sh` makes a venv without pip and runs pip from its wheel;
- `csi-sanity` (statically linked) and `serve_for_sanity.py`, the conformance launcher;
- whatever else the test adds (a kubeconfig, parameter files).

The dependency wheels are cached by the hash of pyproject.toml under the cache dir; the
project wheel is rebuilt from the tree every run (seconds), so the guest always runs this code.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.support.vm_runner import CACHE

REPO = Path(__file__).resolve().parents[2]
MOUNT = "/opt/payload"  # where install.sh expects the payload in the guest
VENV = "/opt/lustre-csi"

INSTALL_SCRIPT = f"""#!/bin/sh
# Install lustre-csi from this payload into {VENV} (no network, no pip in the guest).
set -eu
if [ ! -x {VENV}/bin/lustre-csi ]; then
    python3 -m venv --without-pip {VENV}
    # --no-compile: byte-compiling every module of the dependencies takes minutes under TCG;
    # Python compiles what it imports on first use instead.
    {VENV}/bin/python3 "$(ls {MOUNT}/wheels/pip-*.whl)/pip" install --quiet --no-index \\
        --no-cache-dir --no-compile --find-links {MOUNT}/wheels lustre-csi
fi
{VENV}/bin/lustre-csi --version
"""


def _dependency_wheels() -> Path:
    """Binary wheels of the project's run-time dependencies and pip, cached by their inputs."""
    pyproject = (REPO / "pyproject.toml").read_bytes()
    requirements = [*tomllib.loads(pyproject.decode())["project"]["dependencies"], "pip"]
    key = hashlib.sha256("\n".join(requirements).encode()).hexdigest()[:16]
    wheels = CACHE / "node-payload" / f"wheels-{key}"
    if not (wheels / ".complete").exists():
        shutil.rmtree(wheels, ignore_errors=True)
        wheels.mkdir(parents=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:",
                        "--dest", str(wheels), *requirements], check=True)
        (wheels / ".complete").write_text("\n".join(requirements))
    return wheels


def build_payload(work_dir: Path, extra_files: dict[str, str]) -> Path:
    """The payload ISO; `extra_files`: payload-relative path -> text."""
    tree = work_dir / "payload"
    shutil.rmtree(tree, ignore_errors=True)
    (tree / "wheels").mkdir(parents=True)
    for wheel in _dependency_wheels().glob("*.whl"):
        shutil.copy(wheel, tree / "wheels")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "--wheel-dir", str(tree / "wheels"), str(REPO)],
                   check=True, cwd=work_dir)
    sanity = REPO / ".cache" / "bin" / "csi-sanity"
    if not sanity.exists():
        raise FileNotFoundError(f"{sanity} is missing: run hack/setup.sh")
    shutil.copy(sanity, tree / "csi-sanity")
    shutil.copy(REPO / "tests" / "sanity" / "serve_for_sanity.py", tree / "serve_for_sanity.py")
    (tree / "install.sh").write_text(INSTALL_SCRIPT)
    for relative, text in extra_files.items():
        path = tree / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    iso = work_dir / "payload.iso"
    subprocess.run(["genisoimage", "-quiet", "-output", str(iso), "-volid", "payload",
                    "-rational-rock", "-joliet", "-joliet-long", str(tree)], check=True)
    return iso
