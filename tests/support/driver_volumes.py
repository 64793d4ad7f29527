"""Volumes made through a running driver process (tests/support/driver.py) as kubelet and the
sidecars would make them: created on the local server set, staged and published at kubelet's
CSI paths."""

from __future__ import annotations

from pathlib import Path

from csi.cli.client import CsiClient
from tests.support.driver import DriverProcess

GiB = 1 << 30


def staged(driver: DriverProcess, name: str) -> tuple[CsiClient, str, dict[str, str], str]:
    """A new 1 GiB volume on file system "itest", staged: (client, volume id, volume context,
    staging path)."""
    client = driver.client()
    volume = client.create_volume(name, GiB, {"fsname": "itest"})
    context = dict(volume.volume_context)
    staging = driver.staging_path(volume.volume_id)
    client.stage(volume.volume_id, staging, context)
    return client, volume.volume_id, context, staging


def staged_and_published(
    driver: DriverProcess, name: str, *, readonly: bool = False
) -> tuple[CsiClient, str, dict[str, str], str, str]:
    """A new volume, staged and published for PV pv-`name` in pod-1: the staged tuple and the
    target path."""
    client, volume_id, context, staging = staged(driver, name)
    target = driver.target_path(f"pv-{name}")
    client.publish(volume_id, staging, target, context, readonly=readonly)
    return client, volume_id, context, staging, target


def volume_tree(driver: DriverProcess, context: dict[str, str]) -> Path:
    """The volume's directory in the local server set's tree (the server side of the mount)."""
    return driver.state_dir / "filesystems" / context["fsname"] / "root" / context["subdir"]
