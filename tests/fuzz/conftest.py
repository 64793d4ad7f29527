"""A driver in this process with volumes to protect, for the property-based data-safety tests.

The world: `lustre-csi` in mode `all` on the embedded local server set, serving on a unix
socket in this process; two victim volumes (one shared, one dedicated) with data in them, each
staged and published at kubelet's own path layouts; a foreign tmpfs (a pod's secret) under the
kubelet directory; and a sentinel tree outside everything the driver may touch. `snapshot()`
reads all of it, so a test can assert that nothing it threw at the driver changed any of it.
Needs root and a private mount namespace, like the integration tier (hack/test.sh gives both).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from csi.cli.client import CsiClient
from csi.host.mount_table import ProcMountTable
from csi.identity import DRIVER_NAME
from csi.server import Driver
from tests.support.driver import in_private_mount_namespace
from tests.support.in_process_driver import serving_in_process

GiB = 1 << 30


@dataclass(frozen=True)
class Victim:
    volume_id: str
    context: dict[str, str]
    staging: str
    target: str
    data: Path  # a file inside the volume, written through the published mount


@dataclass
class World:
    root: Path
    kubelet: Path
    state: Path
    outside: Path
    secret_dir: Path
    admin_dir: Path  # a directory an admin made in the shared file system: not a volume
    driver: Driver
    client: CsiClient
    victims: list[Victim] = field(default_factory=list)
    # What snapshot() read once the world was set up, and the first request that changed it:
    # the world is shared by all examples, so a later example can only report who broke it.
    baseline: dict[str, object] = field(default_factory=dict)
    culprit: str = ""
    # (request kind, status code name) -> count, so a test can show it reached the paths that
    # succeed and not only the refusals.
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)

    def staging_path(self, volume_handle: str) -> str:
        """kubelet's CSI staging layout: plugins/kubernetes.io/csi/<driver>/<sha256>/globalmount."""
        digest = hashlib.sha256(volume_handle.encode()).hexdigest()
        return str(
            self.kubelet / "plugins/kubernetes.io/csi" / DRIVER_NAME / digest / "globalmount"
        )

    def target_path(self, pod_uid: str, pv: str) -> str:
        """kubelet's CSI publish layout: pods/<uid>/volumes/kubernetes.io~csi/<pv>/mount."""
        return str(self.kubelet / "pods" / pod_uid / "volumes/kubernetes.io~csi" / pv / "mount")

    def protected_ids(self) -> set[str]:
        return {victim.volume_id for victim in self.victims}

    def protected_paths(self) -> set[str]:
        return {p for victim in self.victims for p in (victim.staging, victim.target)}

    def snapshot(self) -> dict[str, object]:
        """Everything that must survive: files outside, victim data, foreign and victim mounts."""
        entries = ProcMountTable().entries()
        kubelet, state = str(self.kubelet), str(self.state)
        return {
            "outside": _tree_state(self.outside),
            "secret": _tree_state(self.secret_dir),
            "admin": (
                self.admin_dir.stat().st_mode if self.admin_dir.is_dir() else 0,
                _tree_state(self.admin_dir),
            ),
            "victim-data": {
                str(v.data): v.data.read_bytes() if v.data.is_file() else b"missing"
                for v in self.victims
            },
            "victim-mounts": sorted(
                (e.mount_point, e.root)
                for e in entries
                if e.mount_point in self.protected_paths() or e.mount_point == str(self.secret_dir)
            ),
            # Nothing may be mounted inside another pod's volume.
            "inside-secret": sorted(
                e.mount_point for e in entries if e.mount_point.startswith(f"{self.secret_dir}/")
            ),
            # Mounts the driver may make live under the kubelet dir or its own state dir only.
            "mounts-elsewhere": sorted(
                e.mount_point
                for e in entries
                if e.mount_point.startswith(str(self.root))
                and not e.mount_point.startswith((kubelet + "/", state + "/"))
            ),
        }

    def exposures(self) -> set[tuple[str, str]]:
        """(victim id, mount point) for every mount outside a victim's own paths that shows a
        victim's tree (the same directory of the same file system as its staging mount)."""
        entries = ProcMountTable().entries()
        trees = {}
        for victim in self.victims:
            for entry in entries:
                if entry.mount_point == victim.staging:
                    trees[(entry.device, entry.root)] = victim.volume_id
        return {
            (trees[(e.device, e.root)], e.mount_point)
            for e in entries
            if (e.device, e.root) in trees
            and e.mount_point.startswith(f"{self.kubelet}/")
            and e.mount_point not in self.protected_paths()
        }


def _tree_state(root: Path) -> list[tuple[str, int, int, bytes]] | str:
    if not root.is_dir():
        return "missing"
    state = []
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        content = path.read_bytes() if path.is_file() and not path.is_symlink() else b""
        state.append((str(path.relative_to(root)), info.st_mode, info.st_size, content))
    return state


@pytest.fixture
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    if os.geteuid() != 0 or not in_private_mount_namespace():
        pytest.fail("run the fuzz tier as root inside `unshare --mount` (use hack/test.sh)")
    root = tmp_path_factory.mktemp("fuzz")
    kubelet, state, outside = root / "kubelet", root / "state", root / "outside"
    for directory in (kubelet, state, outside / "precious"):
        directory.mkdir(parents=True)
    (outside / "precious" / "data").write_bytes(b"must survive\n")
    (outside / "precious" / "sub").mkdir()
    (outside / "precious" / "sub" / "more").write_bytes(b"this too\n")
    # A pod's secret volume: a tmpfs under the kubelet dir that is not ours to unmount.
    secret_dir = kubelet / "pods/secret-pod/volumes/kubernetes.io~secret/token"
    secret_dir.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(secret_dir)], check=True)
    (secret_dir / "token").write_bytes(b"s3cr3t\n")

    socket = root / "csi.sock"
    # The shared file system's namespace, as the local server set keeps it (see
    # provisioner/local.py); an admin's directory there holds data no volume owns.
    admin_dir = state / "filesystems" / "lustre" / "root" / "projects"
    try:
        with (
            serving_in_process(socket, state, kubelet, node_id="fuzz-node") as driver,
            CsiClient(str(socket), timeout=30) as client,
        ):
            world = World(root, kubelet, state, outside, secret_dir, admin_dir, driver, client)
            for name, parameters in (
                ("victim-shared", {}),
                ("victim-dedicated", {"kind": "dedicated"}),
            ):
                volume = client.create_volume(name, GiB, parameters)
                context = dict(volume.volume_context)
                staging = world.staging_path(volume.volume_id)
                target = world.target_path(f"pod-of-{name}", f"pv-{name}")
                client.stage(volume.volume_id, staging, context)
                client.publish(volume.volume_id, staging, target, context)
                data = Path(target) / "data"
                data.write_bytes(f"data of {name}\n".encode())
                world.victims.append(Victim(volume.volume_id, context, staging, target, data))
            admin_dir.mkdir(mode=0o750)
            (admin_dir / "results.dat").write_bytes(b"an admin's data\n")
            world.baseline = world.snapshot()
            yield world
    finally:
        for entry in reversed(ProcMountTable().entries()):
            if entry.mount_point.startswith(str(root) + "/"):
                subprocess.run(["umount", "-l", entry.mount_point], check=False)
