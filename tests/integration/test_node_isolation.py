"""Node isolation (issue 8): a node call touches only its own volume's mounts and paths.

Each test plays an attack with real mounts in the test's private mount namespace against the
real driver process (or, where a fault must be injected, the node service in this process).
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
from pathlib import Path

import grpc
import pytest

from csi.client import CsiClient
from csi.mounts import ProcMountTable, mounts_at
from tests.support.driver import DriverProcess

GiB = 1 << 30


def _top(path: str | Path):
    entries = mounts_at(ProcMountTable(), str(path))
    return entries[-1] if entries else None


def _tree(driver: DriverProcess, context: dict[str, str]) -> Path:
    """The volume's directory in the local server set's tree."""
    return driver.state_dir / "filesystems" / context["fsname"] / "root" / context["subdir"]


def _staged_and_published(
    driver: DriverProcess, name: str, *, fsname: str = "itest"
) -> tuple[CsiClient, str, dict[str, str], str, str]:
    client = driver.client()
    volume = client.create_volume(name, GiB, {"fsname": fsname})
    context = dict(volume.volume_context)
    staging = driver.staging_path(volume.volume_id)
    target = driver.target_path(f"pv-{name}")
    client.stage(volume.volume_id, staging, context)
    client.publish(volume.volume_id, staging, target, context)
    return client, volume.volume_id, context, staging, target


# -- item 10: nosuid,nodev ----------------------------------------------------------------------
def test_device_nodes_and_setuid_bits_in_a_volume_have_no_power_on_the_node(
    driver: DriverProcess,
) -> None:
    _, _, _, staging, target = _staged_and_published(driver, "nodev")
    # A pod (or anyone who can write the shared file system) plants a device node.
    os.mknod(Path(target) / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    with pytest.raises(OSError) as refused:
        (Path(target) / "null").open("wb").close()
    assert refused.value.errno == errno.EACCES
    controller_mount = driver.state_dir / "controller-mounts" / "itest"
    for path in (staging, target, controller_mount):
        top = _top(path)
        assert top is not None and {"nosuid", "nodev"} <= set(top.options), (path, top)


# -- item 11: the driver's metadata is never a volume -------------------------------------------
@pytest.mark.parametrize(
    "subdir", [".lustre-csi", "/.lustre-csi/", ".lustre-csi/volumes", ".lustre-csi-trash/old"]
)
def test_a_static_volume_cannot_mount_the_drivers_records(
    driver: DriverProcess, subdir: str
) -> None:
    client = driver.client()
    client.create_volume("seed", GiB, {"fsname": "itest"})  # records now exist in .lustre-csi
    records = driver.state_dir / "filesystems" / "itest" / "root" / ".lustre-csi"
    assert records.is_dir()
    (records.parent / ".lustre-csi-trash" / "old").mkdir(parents=True, exist_ok=True)
    context = {"fsname": "itest", "mgsNids": "0@lo", "subdir": subdir}
    staging = driver.staging_path("admin-written-handle")
    with pytest.raises(grpc.RpcError) as refused:
        client.stage("admin-written-handle", staging, context)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "metadata" in (refused.value.details() or "")
    assert _top(staging) is None


# -- item 5: one spelling per path, one mount per stage -----------------------------------------
def test_repeated_stages_never_stack_mounts_whatever_the_spelling(driver: DriverProcess) -> None:
    client = driver.client()
    volume = client.create_volume("stack", GiB, {"fsname": "itest"})
    context = dict(volume.volume_context)
    staging = driver.staging_path(volume.volume_id)
    for _ in range(3):
        client.stage(volume.volume_id, staging, context)
    with pytest.raises(grpc.RpcError) as refused:
        client.stage(volume.volume_id, "/" + staging, context)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(mounts_at(ProcMountTable(), staging)) == 1
    client.unstage(volume.volume_id, staging)
    assert _top(staging) is None


# -- item 4: only our own mounts, only kubelet's CSI paths --------------------------------------
def _tmpfs_with_secret(path: str | Path) -> Path:
    Path(path).mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(path)], check=True)
    token = Path(path) / "token"
    token.write_text("s3cr3t")
    return token


def test_unpublish_and_unstage_never_unmount_a_secret_under_the_kubelet_dir(
    driver: DriverProcess,
) -> None:
    client = driver.client()
    # A tmpfs at paths of the CSI layout: unpublish/unstage must refuse, not unmount it.
    target = driver.target_path("pv-secret", pod_uid="pod-2")
    staging = driver.staging_path("v1:shared:itest:secret")
    tokens = [_tmpfs_with_secret(target), _tmpfs_with_secret(staging)]
    with pytest.raises(grpc.RpcError) as refused:
        client.unpublish("v1:shared:itest:secret", target)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "not a Lustre volume" in (refused.value.details() or "")
    with pytest.raises(grpc.RpcError) as refused:
        client.unstage("v1:shared:itest:secret", staging)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    # A pod's real secret volume, and the kubelet root itself: not CSI paths at all.
    secret_volume = driver.kubelet_dir / "pods/pod-2/volumes/kubernetes.io~secret/token"
    tokens.append(_tmpfs_with_secret(secret_volume))
    for path in (secret_volume, driver.kubelet_dir, driver.kubelet_dir / "pods/pod-2"):
        with pytest.raises(grpc.RpcError) as refused:
            client.unpublish("v1:shared:itest:secret", str(path))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    for token in tokens:
        assert token.read_text() == "s3cr3t"
        assert _top(token.parent).fstype == "tmpfs"


def test_unstage_takes_the_lustre_mount_and_leaves_what_was_under_it(
    driver: DriverProcess,
) -> None:
    client = driver.client()
    volume = client.create_volume("under", GiB, {"fsname": "itest"})
    staging = driver.staging_path(volume.volume_id)
    token = _tmpfs_with_secret(staging)  # something else was mounted there first
    with pytest.raises(grpc.RpcError) as refused:
        client.stage(volume.volume_id, staging, dict(volume.volume_context))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    subprocess.run(  # stack our volume on top, as an old driver version might have
        ["mount", "--bind", str(_tree(driver, dict(volume.volume_context))), staging],
        check=True,
    )
    with pytest.raises(grpc.RpcError) as refused:  # ours is taken off, the tmpfs stays
        client.unstage(volume.volume_id, staging)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert len(mounts_at(ProcMountTable(), staging)) == 1
    assert _top(staging).fstype == "tmpfs" and token.read_text() == "s3cr3t"


# -- item 8: no way into another volume: symlinks, mount points on the way ----------------------
def test_a_symlink_on_the_way_cannot_publish_into_another_pods_volume(
    driver: DriverProcess,
) -> None:
    client, _, _, _, victim_target = _staged_and_published(driver, "victim")
    evil = client.create_volume("evil", GiB, {"fsname": "itest"})
    evil_context = dict(evil.volume_context)
    evil_staging = driver.staging_path(evil.volume_id)
    client.stage(evil.volume_id, evil_staging, evil_context)
    evil_target = Path(driver.target_path("pv-evil", pod_uid="pod-evil"))
    evil_target.parent.rmdir()
    evil_target.parent.symlink_to(victim_target)  # .../pv-evil -> the victim's mounted volume
    with pytest.raises(grpc.RpcError) as refused:
        client.publish(evil.volume_id, evil_staging, str(evil_target), evil_context)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "symlink" in (refused.value.details() or "")
    assert list(Path(victim_target).iterdir()) == []  # nothing made inside the victim's volume
    assert len(mounts_at(ProcMountTable(), victim_target)) == 1


def test_paths_that_cross_a_mount_point_inside_the_kubelet_dir_are_refused(
    driver: DriverProcess,
) -> None:
    client = driver.client()
    volume = client.create_volume("cross", GiB, {"fsname": "itest"})
    context = dict(volume.volume_context)
    staging = driver.staging_path(volume.volume_id)
    client.stage(volume.volume_id, staging, context)
    # Another volume (a tmpfs here) mounted over a directory on the way to the target path.
    target = Path(driver.target_path("pv-cross", pod_uid="pod-3"))
    _tmpfs_with_secret(target.parent)
    with pytest.raises(grpc.RpcError) as refused:
        client.publish(volume.volume_id, staging, str(target), context)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "crosses the mount point" in (refused.value.details() or "")
    assert not target.exists()
    # The same on the staging side, and for an unstage.
    plugins = driver.kubelet_dir / "plugins/kubernetes.io/csi/lustre.csi.io"
    other = client.create_volume("cross-2", GiB, {"fsname": "itest"})
    client.unstage(volume.volume_id, staging)
    _tmpfs_with_secret(plugins)
    for call in (
        lambda: client.stage(other.volume_id, driver.staging_path(other.volume_id), context),
        lambda: client.unstage(other.volume_id, driver.staging_path(other.volume_id)),
    ):
        with pytest.raises(grpc.RpcError) as refused:
            call()
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _top(plugins).fstype == "tmpfs"
