"""`lustre-csi demo`: the driver on the embedded default, and one volume's whole life.

Runs in a private mount namespace (re-executing itself under unshare(1)), so every mount it
makes disappears with it. Each step is a real CSI call over the driver's unix socket.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from csi.cli.client import CsiClient
from csi.node.paths import kubelet_staging_path
from csi.rpc import csi_pb2
from csi.server import Driver, DriverConfig

T = TypeVar("T")
_NAMESPACE_MARK = "LUSTRE_CSI_DEMO_PRIVATE_NS"
STEPS = 11


def _in_private_namespace() -> None:
    """Re-run this command inside a private mount namespace (needs root, as mounting does)."""
    if os.environ.get(_NAMESPACE_MARK):
        return
    if os.geteuid() != 0:
        raise SystemExit("lustre-csi demo mounts file systems: run it as root")
    env = dict(os.environ, **{_NAMESPACE_MARK: "1"})
    argv = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--",
        sys.executable,
        "-m",
        "csi.cli",
        *sys.argv[1:],
    ]
    os.execvpe("unshare", argv, env)  # noqa: S606 - argv list, fixed program


class Progress:
    """`[ n/total] title ... ok (time)` per step; `seconds` for steps that take minutes."""

    def __init__(self, total: int = STEPS, *, seconds: bool = False) -> None:
        self.step = 0
        self.total = total
        self.seconds = seconds

    def __call__(self, title: str, action: Callable[[], T]) -> T:
        self.step += 1
        started = time.monotonic()
        print(f"[{self.step:2d}/{self.total}] {title} ...", end="", flush=True)
        result = action()
        took = time.monotonic() - started
        print(f" ok ({took:.1f} s)" if self.seconds else f" ok ({took * 1e3:.1f} ms)")
        return result


def _human(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{size} B"
        size /= 1024  # type: ignore[assignment]
    return str(size)


@contextmanager
def _serving(state_dir: Path) -> Iterator[tuple[Driver, CsiClient]]:
    kubelet = state_dir / "kubelet"
    kubelet.mkdir(parents=True, exist_ok=True)
    driver = Driver(
        DriverConfig(
            mode="all",
            endpoint=f"unix://{state_dir}/csi.sock",
            node_id="demo-node",
            state_dir=state_dir / "driver",
            kubelet_dirs=[str(kubelet)],
            default_fsname="demo",
        )
    )
    driver.start()
    client = CsiClient(driver.socket_path)
    try:
        yield driver, client
    finally:
        client.close()
        driver.stop()


def run_demo(state_dir: Path | None) -> int:
    _in_private_namespace()
    temporary = state_dir is None
    root = state_dir or Path(tempfile.mkdtemp(prefix="lustre-csi-demo-"))
    print(f"lustre-csi demo: embedded local server set under {root}\n")
    try:
        with _serving(root) as (driver, client):
            _walk(root, driver, client)
    finally:
        if temporary:
            shutil.rmtree(root, ignore_errors=True)
    print("\nA volume's whole life ran through real CSI calls and real mounts.")
    return 0


def _walk(root: Path, driver: Driver, client: CsiClient) -> None:
    step = Progress()
    kubelet = root / "kubelet"
    target = str(kubelet / "pods/demo-pod/volumes/kubernetes.io~csi/demo-volume/mount")
    os.makedirs(os.path.dirname(target), exist_ok=True)

    ready = step("Probe: is the driver ready", client.probe)
    print(f"        ready={ready}, serving controller+node on {driver.socket_path}")
    volume = step(
        "CreateVolume demo-volume, 2 GiB, shared kind in file system 'demo'",
        lambda: client.create_volume("demo-volume", 2 << 30, {"fsname": "demo"}),
    )
    context = dict(volume.volume_context)
    # Kubelet's staging path is named after the volume id (a sha256 of it).
    staging = kubelet_staging_path(str(kubelet), volume.volume_id)
    os.makedirs(staging, exist_ok=True)
    print(f"        volume_id={volume.volume_id} capacity={_human(volume.capacity_bytes)}")
    print(f"        volume_context={context}")
    step(
        "NodeStageVolume: mount -t lustre at the staging path",
        lambda: client.stage(volume.volume_id, staging, context),
    )
    print(f"        {context['mgsNids']}:/{context['fsname']}/{context['subdir']} -> {staging}")
    step(
        "NodePublishVolume: bind mount into the pod's path",
        lambda: client.publish(volume.volume_id, staging, target, context),
    )
    note = Path(target) / "hello.txt"
    payload = "written through the CSI mount\n" * 1000
    step(
        "write a file through the pod's mount and read it back",
        lambda: note.write_text(payload) or None,
    )
    assert note.read_text() == payload
    print(f"        {note} holds {len(payload)} bytes")
    stats = step("NodeGetVolumeStats", lambda: client.volume_stats(volume.volume_id, target))
    _print_usage(stats)
    new_size = step(
        "ControllerExpandVolume to 4 GiB", lambda: client.expand_volume(volume.volume_id, 4 << 30)
    )
    stats = client.volume_stats(volume.volume_id, target)
    print(f"        new capacity {_human(new_size)}; the node sees:")
    _print_usage(stats)
    listing = step("ListVolumes", lambda: client.list_volumes(max_entries=10))
    print(f"        {[entry.volume.volume_id for entry in listing.entries]}")
    step("NodeUnpublishVolume", lambda: client.unpublish(volume.volume_id, target))
    step("NodeUnstageVolume", lambda: client.unstage(volume.volume_id, staging))
    step("DeleteVolume", lambda: client.delete_volume(volume.volume_id))
    left = client.list_volumes().entries
    print(f"        volumes left: {len(left)}; target path removed: {not os.path.exists(target)}")


def _print_usage(stats: csi_pb2.NodeGetVolumeStatsResponse) -> None:
    for usage in stats.usage:
        unit = csi_pb2.VolumeUsage.Unit.Name(usage.unit).lower()
        if unit == "bytes":
            print(
                f"        bytes: used {_human(usage.used)} of {_human(usage.total)}"
                f" ({_human(usage.available)} available)"
            )
        else:
            print(f"        inodes: used {usage.used} of {usage.total}")
    print(f"        condition: {stats.volume_condition.message}")
