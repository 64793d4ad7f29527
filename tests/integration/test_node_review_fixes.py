"""Node fixes of the issue-8 review: the root of a managed file system is never staged, binds
go onto the held directory by syscalls alone, and a bind that lands elsewhere is taken back.

Real mounts in the test's private mount namespace, against the node service in this process.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from pathlib import Path

import grpc
import pytest

from csi.errors import InvalidArgument
from csi.host.command import CommandResult
from csi.host.mount_table import ProcMountTable, mounts_at
from csi.host.mounts import HostMounts
from csi.node.paths import fd_path
from tests.support.in_process_node import (
    RedirectedBinds,
    in_process_node,
    refusal_code,
    top_mount,
)


class RecordingRunner:
    """A command runner that only records: a bind that needs mount(8) leaves nothing mounted."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def run(self, argv: Sequence[str], *, timeout: float = 30.0) -> CommandResult:
        self.calls.append(list(argv))
        return CommandResult(tuple(argv), 0, "", "")


# -- finding 2: the whole of a managed file system is not a volume ------------------------------
@pytest.mark.parametrize("subdir", ["", "/", "//", "csi-volumes/x/..", "./"])
def test_the_root_of_a_managed_file_system_is_never_staged(tmp_path: Path, subdir: str) -> None:
    node = in_process_node(tmp_path)
    volume_id, context = node.volume("a-volume")
    (node.sets.namespace_root("itest") / ".lustre-csi" / "volumes").mkdir(parents=True)
    (node.sets.namespace_root("itest") / "csi-volumes" / "x").mkdir(parents=True)
    whole = {"fsname": "itest", "mgsNids": "0@lo", "subdir": subdir}
    if not subdir:
        del whole["subdir"]
    staging = node.staging("admin-written-handle")
    with pytest.raises(InvalidArgument) as refused:
        node.stage("admin-written-handle", staging, whole)
    assert top_mount(staging) is None  # undone: no pod can be given every volume and the records
    if subdir.strip("/") == "":
        assert "managed by lustre-csi; mount one of its volumes" in str(refused.value)
    # The file system's own volumes still stage.
    node.stage(volume_id, node.staging(volume_id), context)
    assert top_mount(node.staging(volume_id)) is not None


def test_the_root_of_an_unmanaged_file_system_still_stages(tmp_path: Path) -> None:
    # A static PV of an external Lustre: its root holds no `.lustre-csi`, so it is no one's.
    node = in_process_node(tmp_path)
    (node.sets.namespace_root("itest") / "README").write_text("external data")
    staging = node.staging("external-handle")
    node.stage("external-handle", staging, {"fsname": "itest", "mgsNids": "0@lo"})
    assert (Path(staging) / "README").read_text() == "external data"


# -- finding 9: binds by syscall, onto the held directory ----------------------------------------
def test_a_plain_bind_never_runs_mount8_and_gets_its_flags(tmp_path: Path) -> None:
    source, target = tmp_path / "source", tmp_path / "target"
    source.mkdir()
    target.mkdir()
    (source / "file").write_text("shown")
    runner = RecordingRunner()
    source_fd = os.open(source, os.O_PATH)
    target_fd = os.open(target, os.O_PATH)
    try:
        HostMounts(runner).bind(fd_path(source_fd), fd_path(target_fd), readonly=True)
    finally:
        os.close(source_fd)
        os.close(target_fd)
    assert runner.calls == []  # no mount(8): nothing resolved the descriptors to names again
    made = mounts_at(ProcMountTable(), str(target))
    assert len(made) == 1 and {"ro", "nosuid", "nodev"} <= set(made[0].options)
    assert (target / "file").read_text() == "shown"
    with pytest.raises(OSError) as denied:
        (target / "new").write_text("x")
    assert denied.value.errno == errno.EROFS


def test_a_read_only_publish_is_read_only_without_running_mount8(tmp_path: Path) -> None:
    runner = RecordingRunner()
    node = in_process_node(tmp_path, host=HostMounts(runner))
    volume_id, context, staging, target = node.staged_volume("ro-volume")
    (node.sets.namespace_root("itest") / "ro-volume" / "data").write_text("read me")
    node.publish(volume_id, staging, target, context, readonly=True)
    assert runner.calls == []
    top = top_mount(target)
    assert top is not None and top.readonly and {"nosuid", "nodev"} <= set(top.options)
    assert (Path(target) / "data").read_text() == "read me"
    with pytest.raises(OSError) as denied:
        (Path(target) / "data").write_text("overwritten")
    assert denied.value.errno == errno.EROFS


@pytest.mark.parametrize("listing", [True, False], ids=["listmount", "mountinfo"])
def test_a_bind_that_lands_elsewhere_is_taken_back(tmp_path: Path, listing: bool) -> None:
    # Told by the mounts made since the publish began: from listmount (Linux 6.8+) or from
    # mountinfo read before and after (older kernels); the outcome must be the same.
    elsewhere = tmp_path / "kubelet/pods/pod-1/volumes/kubernetes.io~csi/elsewhere"
    node = in_process_node(
        tmp_path,
        host=RedirectedBinds(target=elsewhere),
        table=ProcMountTable(kernel_listing_if_any=listing),
    )
    volume_id, context, staging, target = node.staged_volume("moved")
    code = refusal_code(lambda: node.publish(volume_id, staging, target, context))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert top_mount(target) is None
    assert top_mount(elsewhere) is None  # the volume is not left mounted at a path no one asked for
    assert top_mount(staging) is not None
