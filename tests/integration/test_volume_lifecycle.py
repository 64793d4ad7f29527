"""A volume's life through the real driver process, with real mounts."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import grpc
import pytest

from csi.cli.client import CsiClient, mount_capability
from csi.host.mount_table import ProcMountTable, mounts_at
from csi.rpc import csi_pb2
from tests.support.driver import DriverProcess
from tests.support.driver_volumes import staged_and_published, volume_tree

GiB = 1 << 30
AccessMode = csi_pb2.VolumeCapability.AccessMode


def _usage(client: CsiClient, volume_id: str, path: str) -> dict[str, tuple[int, int]]:
    stats = client.volume_stats(volume_id, path)
    return {csi_pb2.VolumeUsage.Unit.Name(u.unit): (u.used, u.total) for u in stats.usage}


def test_create_stage_publish_write_expand_and_delete(driver: DriverProcess) -> None:
    client = driver.client()
    volume = client.create_volume("life", 2 * GiB, {"fsname": "itest"})
    assert volume.capacity_bytes == 2 * GiB
    context = dict(volume.volume_context)
    subdir = context.pop("subdir")
    assert context == {"fsname": "itest", "mgsNids": "0@lo", "kind": "shared"}
    assert subdir.startswith("csi-volumes/life-")  # a directory the driver made, not adopted
    context["subdir"] = subdir
    tree = volume_tree(driver, context)
    assert tree.is_dir()

    staging, target = driver.staging_path(volume.volume_id), driver.target_path("life")
    client.stage(volume.volume_id, staging, context)
    client.stage(volume.volume_id, staging, context)  # idempotent
    client.publish(volume.volume_id, staging, target, context)
    client.publish(volume.volume_id, staging, target, context)  # idempotent
    assert len(mounts_at(ProcMountTable(), target)) == 1

    (Path(target) / "data.bin").write_bytes(os.urandom(3 << 20))
    assert (tree / "data.bin").stat().st_size == 3 << 20  # it landed in the file system

    usage = _usage(client, volume.volume_id, target)
    used, total = usage["BYTES"]
    assert total == 2 * GiB and 3 << 20 <= used < 4 << 20
    assert usage["INODES"][0] >= 1

    assert client.expand_volume(volume.volume_id, 5 * GiB) == 5 * GiB
    assert _usage(client, volume.volume_id, target)["BYTES"][1] == 5 * GiB

    client.unpublish(volume.volume_id, target)
    client.unpublish(volume.volume_id, target)  # idempotent
    assert not os.path.exists(target)
    client.unstage(volume.volume_id, staging)
    assert mounts_at(ProcMountTable(), staging) == []
    client.delete_volume(volume.volume_id)
    client.delete_volume(volume.volume_id)  # idempotent
    assert not tree.exists()
    assert client.list_volumes().entries == []


def test_read_only_publish_refuses_writes_and_mode_changes(driver: DriverProcess) -> None:
    client, volume_id, context, staging, target = staged_and_published(
        driver, "ro", readonly=True
    )
    with pytest.raises(OSError) as denied:
        (Path(target) / "nope").write_text("x")
    assert denied.value.errno == errno.EROFS
    with pytest.raises(grpc.RpcError) as conflict:
        client.publish(volume_id, staging, target, context, readonly=False)
    assert conflict.value.code() == grpc.StatusCode.ALREADY_EXISTS
    reader = mount_capability(AccessMode.MULTI_NODE_READER_ONLY)
    second = target.replace("/pod-1/", "/pod-2/")  # another pod's target path
    Path(second).parent.mkdir(parents=True)
    client.publish(volume_id, staging, second, context, capability=reader)
    assert mounts_at(ProcMountTable(), second)[-1].readonly


def test_stale_mounts_are_repaired_not_reported_as_success(driver: DriverProcess) -> None:
    client, volume_id, context, staging, target = staged_and_published(driver, "stale")
    # The server side replaces the volume's directory (a restore, say): both mounts now show a
    # deleted directory, which is what a stale mount looks like from the node.
    tree = volume_tree(driver, context)
    tree.rename(tree.with_name("stale.old"))
    tree.mkdir()
    (tree / "restored.txt").write_text("restored")
    tree.with_name("stale.old").rmdir()
    assert mounts_at(ProcMountTable(), staging)[-1].source_deleted

    stats = client.volume_stats(volume_id, target)
    assert stats.volume_condition.abnormal and "stale" in stats.volume_condition.message

    client.stage(volume_id, staging, context)
    assert (Path(staging) / "restored.txt").read_text() == "restored"
    client.publish(volume_id, staging, target, context)
    assert (Path(target) / "restored.txt").read_text() == "restored"
    assert len(mounts_at(ProcMountTable(), target)) == 1
    assert not client.volume_stats(volume_id, target).volume_condition.abnormal


def test_foreign_mount_at_staging_path_is_refused(driver: DriverProcess, tmp_path: Path) -> None:
    client = driver.client()
    volume = client.create_volume("foreign", GiB, {"fsname": "itest"})
    staging = driver.staging_path(volume.volume_id)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    subprocess.run(["mount", "--bind", str(elsewhere), staging], check=True)
    with pytest.raises(grpc.RpcError) as refused:
        client.stage(volume.volume_id, staging, dict(volume.volume_context))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "another mount" in (refused.value.details() or "")


def test_static_volume_mounts_without_any_controller_call(driver: DriverProcess) -> None:
    client = driver.client()
    # An "existing" Lustre: make a file system and a directory in it behind the driver's back.
    existing = client.create_volume("seed", GiB, {"fsname": "legacy"})
    shared = driver.state_dir / "filesystems" / "legacy" / "root" / "projects" / "alpha"
    shared.mkdir(parents=True)
    (shared / "README").write_text("alpha data")
    del existing
    context = {"fsname": "legacy", "mgsNids": "0@lo", "subdir": "projects/alpha"}
    staging = driver.staging_path("admin-written-handle")
    target = driver.target_path("static-pv")
    client.stage("admin-written-handle", staging, context)
    client.publish("admin-written-handle", staging, target, context, readonly=True)
    assert (Path(target) / "README").read_text() == "alpha data"


def test_state_survives_a_driver_restart(tmp_path: Path) -> None:
    with DriverProcess(tmp_path) as first, first.client() as client:
        created = [
            client.create_volume(f"keep-{n}", GiB, {"fsname": "itest"}).volume_id
            for n in range(5)
        ]
    with DriverProcess(tmp_path) as second, second.client() as client:
        listed = [entry.volume.volume_id for entry in client.list_volumes().entries]
        assert listed == sorted(created)
        again = client.create_volume("keep-0", GiB, {"fsname": "itest"})
        assert again.volume_id == created[0]
        assert second.stop() == 0  # SIGTERM stops cleanly


def test_a_stopped_controller_leaves_none_of_its_file_system_mounts_behind(
    tmp_path: Path,
) -> None:
    controller_mounts = str(tmp_path / "state" / "controller-mounts")

    def ours() -> list[str]:
        return [
            entry.mount_point
            for entry in ProcMountTable().entries()
            if entry.mount_point.startswith(controller_mounts + "/")
        ]

    with DriverProcess(tmp_path) as driver, driver.client() as client:
        client.create_volume("mounted", GiB, {"fsname": "itest"})
        assert ours() == [f"{controller_mounts}/itest"]
        assert driver.stop() == 0
    assert ours() == []
    # The next start mounts it again and finds the volume.
    with DriverProcess(tmp_path) as driver, driver.client() as client:
        assert [e.volume.volume_id for e in client.list_volumes().entries] == [
            "v1:shared:itest:mounted"
        ]
