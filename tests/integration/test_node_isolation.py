"""Node isolation (issue 8): a node call touches only its own volume's mounts and paths.

Each test plays an attack with real mounts in the test's private mount namespace against the
real driver process (or, where a fault must be injected, the node service in this process).
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from csi.cli.client import mount_capability
from csi.controller.mounts import ControllerMounts
from csi.host.bounded import BoundedCalls
from csi.host.command import SubprocessRunner
from csi.host.mount_table import ProcMountTable, mounts_at
from csi.host.mounts import HostMounts, MountUnreachable, OsMountProbe
from csi.lustre.client import LustreClient
from csi.lustre.recognizers import LocalTreeRecognizer
from csi.rpc import csi_pb2
from csi.server_sets import ServerSetTemplate
from provisioner.local import LOCAL_NID, LocalServerSets
from provisioner.local_lustre import LocalLustreCommands
from tests.support.driver import DriverProcess
from tests.support.driver_volumes import staged, staged_and_published, volume_tree
from tests.support.in_process_node import (
    InProcessNode,
    RedirectedBinds,
    in_process_node,
    refusal_code,
    top_mount,
)

GiB = 1 << 30


@pytest.fixture
def node(tmp_path: Path) -> InProcessNode:
    return in_process_node(tmp_path)


# -- item 10: nosuid,nodev ----------------------------------------------------------------------
def test_device_nodes_and_setuid_bits_in_a_volume_have_no_power_on_the_node(
    driver: DriverProcess,
) -> None:
    _, _, _, staging, target = staged_and_published(driver, "nodev")
    # A pod (or anyone who can write the shared file system) plants a device node.
    os.mknod(Path(target) / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    with pytest.raises(OSError) as refused:
        (Path(target) / "null").open("wb").close()
    assert refused.value.errno == errno.EACCES
    controller_mount = driver.state_dir / "controller-mounts" / "itest"
    for path in (staging, target, controller_mount):
        top = top_mount(path)
        assert top is not None and {"nosuid", "nodev"} <= set(top.options), (path, top)


# -- item 11: the driver's metadata is never a volume -------------------------------------------
@pytest.mark.parametrize(
    "subdir",
    [
        ".lustre-csi",
        "/.lustre-csi/",
        ".lustre-csi/volumes",
        ".lustre-csi-trash/old",
        "csi-volumes/",
    ],
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
    assert "metadata" in (refused.value.details() or "") or "every volume" in (
        refused.value.details() or ""
    )
    assert top_mount(staging) is None


# -- item 5: one spelling per path, one mount per stage -----------------------------------------
def test_repeated_stages_never_stack_mounts_whatever_the_spelling(driver: DriverProcess) -> None:
    client, volume_id, context, staging = staged(driver, "stack")
    for _ in range(2):
        client.stage(volume_id, staging, context)
    with pytest.raises(grpc.RpcError) as refused:
        client.stage(volume_id, "/" + staging, context)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(mounts_at(ProcMountTable(), staging)) == 1
    client.unstage(volume_id, staging)
    assert top_mount(staging) is None


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
        assert top_mount(token.parent).fstype == "tmpfs"


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
        ["mount", "--bind", str(volume_tree(driver, dict(volume.volume_context))), staging],
        check=True,
    )
    with pytest.raises(grpc.RpcError) as refused:  # ours is taken off, the tmpfs stays
        client.unstage(volume.volume_id, staging)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert len(mounts_at(ProcMountTable(), staging)) == 1
    assert top_mount(staging).fstype == "tmpfs" and token.read_text() == "s3cr3t"


# -- item 8: no way into another volume: symlinks, mount points on the way ----------------------
def test_a_symlink_on_the_way_cannot_publish_into_another_pods_volume(
    driver: DriverProcess,
) -> None:
    client, _, _, _, victim_target = staged_and_published(driver, "victim")
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
    client, volume_id, context, staging = staged(driver, "cross")
    # Another volume (a tmpfs here) mounted over a directory on the way to the target path.
    target = Path(driver.target_path("pv-cross", pod_uid="pod-3"))
    _tmpfs_with_secret(target.parent)
    with pytest.raises(grpc.RpcError) as refused:
        client.publish(volume_id, staging, str(target), context)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "crosses the mount point" in (refused.value.details() or "")
    assert not target.exists()
    # The same on the staging side, and for an unstage.
    plugins = driver.kubelet_dir / "plugins/kubernetes.io/csi/lustre.csi.io"
    other = client.create_volume("cross-2", GiB, {"fsname": "itest"})
    client.unstage(volume_id, staging)
    _tmpfs_with_secret(plugins)
    for call in (
        lambda: client.stage(other.volume_id, driver.staging_path(other.volume_id), context),
        lambda: client.unstage(other.volume_id, driver.staging_path(other.volume_id)),
    ):
        with pytest.raises(grpc.RpcError) as refused:
            call()
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert top_mount(plugins).fstype == "tmpfs"


# -- item 6: a publish binds only the volume asked for ------------------------------------------
def test_a_volume_cannot_be_published_from_another_volumes_staging_mount(
    node: InProcessNode,
) -> None:
    a_id, a_context = node.volume("alpha")
    b_id, b_context = node.volume("beta")
    (node.sets.namespace_root("itest") / "alpha" / "alpha-only.txt").write_text("alpha data")
    a_staging = node.staging(a_id)
    node.stage(a_id, a_staging, a_context)
    target = node.target("pv-beta")
    # B's publish naming A's staging path (current layout: hashed from A's id).
    assert refusal_code(lambda: node.publish(b_id, a_staging, target, b_context)) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    # The pre-1.24 layout names a PV, not a volume id: refused, for any id.
    older = node.kubelet / "plugins/kubernetes.io/csi/pv/pv-alpha/globalmount"
    older.mkdir(parents=True)
    for volume_id, context in ((a_id, a_context), (b_id, b_context)):
        assert refusal_code(lambda i=volume_id, c=context: node.stage(i, str(older), c)) == (
            grpc.StatusCode.INVALID_ARGUMENT
        )
        assert refusal_code(lambda i=volume_id: node.unstage(i, str(older))) == (
            grpc.StatusCode.INVALID_ARGUMENT
        )
    assert top_mount(older) is None and top_mount(target) is None
    node.publish(a_id, a_staging, target, a_context)  # its own volume still publishes
    assert (Path(target) / "alpha-only.txt").read_text() == "alpha data"


class GatedBinds(HostMounts):
    """Real bind mounts, except that each waits for a gate: a publish caught mid-way."""

    def __init__(self) -> None:
        super().__init__(SubprocessRunner())
        self.entered, self.gate = threading.Event(), threading.Event()

    def bind(self, source: str, target: str, **kwargs) -> None:
        self.entered.set()
        assert self.gate.wait(10)
        super().bind(source, target, **kwargs)


def test_an_unstage_cannot_pull_the_staging_mount_from_under_a_publish(tmp_path: Path) -> None:
    gated = GatedBinds()
    node = in_process_node(tmp_path, host=gated)
    volume_id, context = node.volume("shared-staging")
    staging = node.staging(volume_id)
    node.stage(volume_id, staging, context)
    targets = [node.target("pv-1", pod_uid) for pod_uid in ("pod-1", "pod-2")]
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(node.publish, volume_id, staging, targets[0], context)
        assert gated.entered.wait(10)
        # Mid-publish: an unstage of the same staging path is turned away (retry later) ...
        assert refusal_code(lambda: node.unstage(volume_id, staging)) == grpc.StatusCode.ABORTED
        # ... while a second pod's publish of the same volume is not held up by the first.
        second = pool.submit(node.publish, volume_id, staging, targets[1], context)
        gated.gate.set()
        first.result(10)
        second.result(10)
    for target in targets:
        top = top_mount(target)
        assert top is not None and top.device == top_mount(staging).device
    assert top_mount(staging) is not None


def test_a_bind_that_does_not_show_the_staged_volume_is_undone(tmp_path: Path) -> None:
    fs_root = tmp_path / "state/filesystems/itest/root"
    node = in_process_node(tmp_path, host=RedirectedBinds(source=fs_root))
    volume_id, context, staging, target = node.staged_volume("checked")
    assert refusal_code(lambda: node.publish(volume_id, staging, target, context)) == (
        grpc.StatusCode.FAILED_PRECONDITION
    )
    assert top_mount(target) is None  # the whole file system is not left in the pod


# -- items 7 and 18: EIO is not stale; a hung mount never holds a thread for long --------------
class FaultyProbe(OsMountProbe):
    """The real stat/statvfs, except for the paths told to fail or to hang."""

    def __init__(self) -> None:
        self.errors: dict[str, int] = {}
        self.hung: set[str] = set()
        self.release = threading.Event()

    def _fault(self, path: str) -> None:
        if path in self.hung:
            self.release.wait(30)
        if path in self.errors:
            raise OSError(self.errors[path], os.strerror(self.errors[path]), path)

    def stat(self, path: str) -> None:
        self._fault(path)
        super().stat(path)

    def statvfs(self, path: str) -> os.statvfs_result:
        self._fault(path)
        return super().statvfs(path)


@pytest.fixture
def faulty(tmp_path: Path) -> Iterator[tuple[InProcessNode, FaultyProbe]]:
    probe = FaultyProbe()
    bounded = BoundedCalls(timeout_s=0.2)  # a deadline, not an assertion: keeps the test short
    node = in_process_node(tmp_path, probe=probe, bounded=bounded)
    try:
        yield node, probe
    finally:
        probe.release.set()


def _mount_ids(path: str) -> list[int]:
    return [entry.mount_id for entry in mounts_at(ProcMountTable(), path)]


@pytest.mark.parametrize("code", [errno.EIO, errno.EHOSTDOWN])
def test_an_evicted_or_recovering_mount_is_reported_and_left_alone(
    faulty: tuple[InProcessNode, FaultyProbe], code: int
) -> None:
    node, probe = faulty
    volume_id, context, staging, target = node.staged_volume("recovering")
    node.publish(volume_id, staging, target, context)
    before = {path: _mount_ids(path) for path in (staging, target)}
    probe.errors = {staging: code, target: code}  # the client is evicted: EIO for a while
    stage = lambda: node.stage(volume_id, staging, context)  # noqa: E731
    assert refusal_code(stage) == grpc.StatusCode.UNAVAILABLE
    publish = lambda: node.publish(volume_id, staging, target, context)  # noqa: E731
    assert refusal_code(publish) == grpc.StatusCode.UNAVAILABLE
    condition = node.volume_stats(volume_id, target).volume_condition
    assert condition.abnormal and "unreachable" in condition.message
    assert {path: _mount_ids(path) for path in (staging, target)} == before  # not remounted
    probe.errors = {}  # recovery ends: the same mounts serve again
    node.stage(volume_id, staging, context)
    node.publish(volume_id, staging, target, context)
    assert {path: _mount_ids(path) for path in (staging, target)} == before
    assert not node.volume_stats(volume_id, target).volume_condition.abnormal


@pytest.mark.parametrize("code", [errno.ESTALE, errno.ENOTCONN])
def test_a_dead_mount_is_still_repaired(
    faulty: tuple[InProcessNode, FaultyProbe], code: int
) -> None:
    node, probe = faulty
    volume_id, context = node.volume("dead")
    staging = node.staging(volume_id)
    node.stage(volume_id, staging, context)
    before = _mount_ids(staging)
    in_use = os.open(staging, os.O_RDONLY | os.O_DIRECTORY)  # keeps the old mount's id taken
    try:
        probe.errors = {staging: code}
        node.stage(volume_id, staging, context)  # unmounted (lazily) and mounted again
        after = _mount_ids(staging)
    finally:
        os.close(in_use)
    assert len(after) == 1 and after != before


def test_a_hung_mount_answers_unavailable_and_can_still_be_unpublished(
    faulty: tuple[InProcessNode, FaultyProbe],
) -> None:
    node, probe = faulty
    volume_id, context, staging, target = node.staged_volume("hung")
    node.publish(volume_id, staging, target, context)
    probe.hung = {staging, target}  # the MDS is gone: stat and statfs never come back
    stage = lambda: node.stage(volume_id, staging, context)  # noqa: E731
    assert refusal_code(stage) == grpc.StatusCode.UNAVAILABLE
    condition = node.volume_stats(volume_id, target).volume_condition
    assert condition.abnormal and "did not answer" in condition.message
    node.unpublish(volume_id, target)  # the pod goes away: the mount is detached lazily
    assert top_mount(target) is None and not Path(target).exists()
    node.unstage(volume_id, staging)
    assert top_mount(staging) is None


# -- item 9: a second stage must match the first; stats cannot probe the host ------------------
def test_a_second_stage_with_another_capability_is_already_exists(driver: DriverProcess) -> None:
    client, volume_id, context, staging = staged(driver, "twice")
    client.stage(volume_id, staging, context)  # the same again: idempotent
    AccessMode = csi_pb2.VolumeCapability.AccessMode
    for different in (
        mount_capability(AccessMode.MULTI_NODE_READER_ONLY),
        mount_capability(mount_flags=["noexec"]),
        mount_capability(mount_flags=["ro"]),
    ):
        with pytest.raises(grpc.RpcError) as refused:
            client.stage(volume_id, staging, context, capability=different)
        assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert len(mounts_at(ProcMountTable(), staging)) == 1
    assert not top_mount(staging).readonly
    # Staged for readers only: the staging mount itself is read-only, and stays so.
    client.unstage(volume_id, staging)
    reader = mount_capability(AccessMode.MULTI_NODE_READER_ONLY)
    client.stage(volume_id, staging, context, capability=reader)
    assert top_mount(staging).readonly
    with pytest.raises(grpc.RpcError) as refused:
        client.stage(volume_id, staging, context)
    assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS


def test_volume_stats_answer_the_same_for_existing_and_missing_host_files(
    driver: DriverProcess, tmp_path: Path
) -> None:
    client = driver.client()
    (tmp_path / "present").write_text("x")
    inside = driver.kubelet_dir / "pods/pod-9/volumes/kubernetes.io~empty-dir/cache"
    inside.mkdir(parents=True)
    answers = []
    for path in (
        "/etc/passwd",
        "/etc/no-such-file",
        str(tmp_path / "present"),
        str(tmp_path / "absent"),
        str(inside),
        str(inside.with_name("absent")),
        "some/path",
    ):
        for call in (
            lambda p=path: client.volume_stats("v1:shared:itest:x", p),
            lambda p=path: client.expand("v1:shared:itest:x", p),
        ):
            with pytest.raises(grpc.RpcError) as refused:
                call()
            details = (refused.value.details() or "").replace(path, "<path>")
            answers.append((refused.value.code(), details))
    assert len(set(answers)) == 2, answers  # one answer per call, whatever is on the host
    assert {code for code, _ in answers} == {grpc.StatusCode.NOT_FOUND}


def test_a_mount_point_with_a_non_utf8_name_does_not_break_node_calls(
    driver: DriverProcess,
) -> None:
    odd = os.fsencode(driver.kubelet_dir) + b"/caf\xe9"
    os.mkdir(odd)
    subprocess.run([b"mount", b"-t", b"tmpfs", b"tmpfs", odd], check=True)
    client, volume_id, _, _, target = staged_and_published(driver, "utf8")
    assert not client.volume_stats(volume_id, target).volume_condition.abnormal
    client.unpublish(volume_id, target)


def test_the_controllers_own_mount_is_left_alone_while_its_servers_recover(
    tmp_path: Path,
) -> None:
    probe = FaultyProbe()
    sets = LocalServerSets(tmp_path / "state")
    endpoint = sets.ensure_file_system("itest", ServerSetTemplate())
    runner = LocalLustreCommands(sets, SubprocessRunner())
    mounts = ControllerMounts(
        tmp_path / "controller-mounts",
        LustreClient(runner),
        HostMounts(runner),
        ProcMountTable(),
        LocalTreeRecognizer(tmp_path / "state" / "filesystems", LOCAL_NID),
        probe=probe,
        bounded=BoundedCalls(timeout_s=0.2),
    )
    path = str(mounts.mountpoint(endpoint))
    before = _mount_ids(path)
    probe.errors = {path: errno.EIO}
    with pytest.raises(MountUnreachable):
        mounts.mountpoint(endpoint)
    assert _mount_ids(path) == before  # volume operations running on it are not cut off
    in_use = os.open(path, os.O_RDONLY | os.O_DIRECTORY)  # keeps the old mount's id taken
    try:
        probe.errors = {path: errno.ESTALE}
        assert str(mounts.mountpoint(endpoint)) == path
        assert len(_mount_ids(path)) == 1 and _mount_ids(path) != before
    finally:
        os.close(in_use)


class RedirectedLustreMounts(LustreClient):
    """Mounts the volume one directory off the path it is given: a target re-resolved by the
    mount helper after a component was swapped."""

    def mount(self, source: str, target: str | os.PathLike[str], options: Sequence[str]) -> None:
        elsewhere = Path(os.path.realpath(target)).parent / "elsewhere"
        elsewhere.mkdir(exist_ok=True)
        super().mount(source, str(elsewhere), options)


@pytest.mark.parametrize("listing", [True, False], ids=["listmount", "mountinfo"])
def test_a_stage_that_lands_elsewhere_is_undone(tmp_path: Path, listing: bool) -> None:
    sets = LocalServerSets(tmp_path / "state")
    node = in_process_node(
        tmp_path,
        lustre=RedirectedLustreMounts(LocalLustreCommands(sets, SubprocessRunner())),
        table=ProcMountTable(kernel_listing_if_any=listing),
    )
    volume_id, context = node.volume("landed")
    staging = node.staging(volume_id)
    code = refusal_code(lambda: node.stage(volume_id, staging, context))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert top_mount(staging) is None
    assert top_mount(Path(staging).parent / "elsewhere") is None  # not left mounted off the path

