"""The controller against the adversarial review of its data-safety fixes (issue 8).

Two replicas over one state directory are two controller replicas over the same file
systems (tests/support/controller_replicas.py, the fixtures in conftest.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

import csi.controller.catalog as catalog_module
import csi.controller.deletion as deletion_module
from csi.controller.sizes import CapacityRange
from csi.controller.volumes import VolumeService
from csi.errors import (
    FailedPrecondition,
    InProgress,
    NotFound,
    OperationInFlight,
    TeardownStarted,
)
from csi.host.bounded import BoundedCalls, CallTimedOut
from csi.host.mount_table import ProcMountTable, mounts_at
from csi.host.mounts import HostMounts
from tests.support.controller_replicas import GiB, Replica, record_document, write_file

T = TypeVar("T")


def _mounted(path: Path) -> bool:
    # The driver's own reading of the mount table: it copes with any mount point's name.
    return bool(mounts_at(ProcMountTable(), str(path)))


def _give_it_a_tree(replica: Replica, volume_id: str) -> None:
    """A subdirectory: the volume's removal goes to the background worker."""
    (replica.directory(replica.volumes.get(volume_id).record) / "sub").mkdir()


# -- finding 1: a late removal step takes only its own record ----------------------------------
def _late_release_by_b(
    a: Replica, b: Replica, monkeypatch: pytest.MonkeyPatch, then: object
) -> dict[str, str]:
    """Replica a deletes volume `n` (a tree: a background removal) and b queues the removal
    too; b's removal runs late: while it removes the tree, replica a finishes the same removal
    and calls `then(state)` (the CO makes the volume again)."""
    volume_id = a.create("n")
    _give_it_a_tree(a, volume_id)
    a.volumes.delete(volume_id)
    b.volumes.list_page("", 0)  # b indexes the file system: it queues the removal too
    real = deletion_module.remove_tree
    state: dict[str, str] = {}

    def remove_tree(mountpoint: Path, trash: str, volume_id: str, *, small_only: bool) -> bool:
        done = real(mountpoint, trash, volume_id, small_only=small_only)
        if not small_only and "controller-mounts-b" in str(mountpoint) and not state:
            state["b"] = "removing"
            assert a.volumes.run_pending_removals() == 0  # a finishes first ...
            then(state)  # type: ignore[operator]
        return done

    monkeypatch.setattr(deletion_module, "remove_tree", remove_tree)
    b.volumes.run_pending_removals()  # ... then b's late last step
    return state


def test_a_late_removal_step_leaves_the_volume_made_again_under_the_same_name_alone(
    replicas: tuple[Replica, Replica], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = replicas

    def recreate(state: dict[str, str]) -> None:
        state["new"] = a.create("n")

    state = _late_release_by_b(a, b, monkeypatch, recreate)
    new = a.volumes.get(state["new"])  # still there, for both replicas
    assert b.volumes.get(state["new"]).record.directory == new.record.directory
    assert a.directory(new.record).is_dir()
    assert a.claim_holder("safe", new.record.project_id) == state["new"]
    assert a.quota_bytes(new) == GiB


def test_a_late_removal_step_never_releases_a_recreated_volume_that_is_being_deleted(
    replicas: tuple[Replica, Replica], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = replicas

    def recreate_and_delete(state: dict[str, str]) -> None:
        state["new"] = a.create("n", 2 * GiB)
        record = a.volumes.get(state["new"]).record
        state["project"] = str(record.project_id)
        _give_it_a_tree(a, state["new"])
        a.volumes.delete(state["new"])  # its tree waits in the trash

    state = _late_release_by_b(a, b, monkeypatch, recreate_and_delete)
    pending = a.record_on_disk("safe", "n")
    assert pending is not None and pending["state"] == "deleting"
    assert (a.root("safe") / pending["trash"]).is_dir()
    project_id = int(state["project"])
    assert a.claim_holder("safe", project_id) == state["new"]  # its quota and id are kept ...
    quota = a.lustre.project_quota(a.state_dir / "controller-mounts-a" / "safe", project_id)
    assert quota.block_hard_limit_bytes == 2 * GiB
    monkeypatch.undo()
    assert a.volumes.run_pending_removals() == 0  # ... until its own removal is done
    assert a.claim_holder("safe", project_id) is None
    assert not (a.root("safe") / pending["trash"]).exists()


# -- finding 2: the driver's directories are not open to pods ----------------------------------
def test_the_driver_directories_are_closed_to_other_users_and_volume_roots_stay_writable(
    controller: Replica, caplog: pytest.LogCaptureFixture
) -> None:
    volume_id = controller.create("first")
    root = controller.root("safe")
    assert stat.S_IMODE(os.lstat(root / ".lustre-csi").st_mode) == 0o700
    assert stat.S_IMODE(os.lstat(root / "csi-volumes").st_mode) == 0o711
    directory = root / controller.volumes.get(volume_id).record.directory
    assert stat.S_IMODE(os.lstat(directory).st_mode) == 0o777  # pods write there
    os.chmod(root / ".lustre-csi", 0o755)  # as an older version left them
    os.chmod(root / "csi-volumes", 0o755)
    with caplog.at_level(logging.WARNING):
        controller.create("second")
    assert stat.S_IMODE(os.lstat(root / ".lustre-csi").st_mode) == 0o700
    assert stat.S_IMODE(os.lstat(root / "csi-volumes").st_mode) == 0o711
    assert ".lustre-csi" in caplog.text and "csi-volumes" in caplog.text


# -- finding 3: a forged dedicated record tears nothing down -----------------------------------
def _plant_forged_dedicated_record(controller: Replica) -> dict:
    """A well-formed record, with its project claim, that says the shared file system "safe"
    is dedicated to a volume that was never made."""
    forged = record_document("intruder", 4000, kind="dedicated")
    controller.plant_record(forged)
    write_file(controller.root("safe") / ".lustre-csi/projects/4000", forged["volume_id"])
    return forged


def test_a_forged_dedicated_record_on_a_shared_file_system_unmounts_and_forgets_nothing(
    controller: Replica, caplog: pytest.LogCaptureFixture
) -> None:
    kept = controller.create("team-a", 2 * GiB)
    _plant_forged_dedicated_record(controller)
    with Replica(controller.state_dir, "c") as fresh:
        with caplog.at_level(logging.WARNING):
            assert [r.name for r in fresh.volumes.list_page("", 0)[0]] == ["team-a"]
        assert "intruder.json" in caplog.text
        mountpoint = fresh.volumes.get(kept).mountpoint
        assert fresh.volumes.catalog.reserved_bytes("safe") == 2 * GiB
        with contextlib.suppress(FailedPrecondition):  # refused is fine: what matters is
            fresh.volumes.delete("v1:dedicated:safe:intruder")  # what it did not do
        assert _mounted(mountpoint)
        assert fresh.volumes.catalog.reserved_bytes("safe") == 2 * GiB
        assert [r.name for r in fresh.volumes.catalog] == ["team-a"]
        assert fresh.sets.list_file_systems() == ["safe"]


def test_a_dedicated_delete_the_provider_refuses_tears_nothing_down_first(
    controller: Replica, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept = controller.create("team-a", 2 * GiB)
    forged = _plant_forged_dedicated_record(controller)
    with Replica(controller.state_dir, "c") as fresh:
        # A lookup that got it wrong (stale, say): only delete_file_system's own check is left.
        monkeypatch.setattr(fresh.sets, "dedicated_to", lambda fsname: forged["volume_id"])
        mountpoint = fresh.volumes.get(kept).mountpoint
        reserved = fresh.volumes.catalog.reserved_bytes("safe")
        with pytest.raises(FailedPrecondition, match="not dedicated"):
            fresh.volumes.delete("v1:dedicated:safe:intruder")
        assert _mounted(mountpoint)
        assert fresh.volumes.catalog.reserved_bytes("safe") == reserved
        assert fresh.volumes.get(kept).record.name == "team-a"


# -- a dedicated file system's teardown: the controller lets go of it while its servers answer -
def _teardown_starts_on_delete(replica: Replica, monkeypatch: pytest.MonkeyPatch) -> None:
    """delete_file_system as the KubeVirt provider answers it: it checks the file system is the
    volume's, starts its teardown and answers TeardownStarted; the file system is gone after."""
    real = replica.sets.delete_file_system

    def start_teardown(fsname: str, *, dedicated_to: str) -> None:
        real(fsname, dedicated_to=dedicated_to)
        raise TeardownStarted(f"file system {fsname!r} is being torn down; retry shortly")

    monkeypatch.setattr(replica.sets, "delete_file_system", start_teardown)


def test_a_dedicated_volume_s_controller_mount_detaches_when_its_teardown_starts(
    controller: Replica, monkeypatch: pytest.MonkeyPatch
) -> None:
    volume_id = controller.create("solo", kind="dedicated")
    mountpoint = controller.volumes.get(volume_id).mountpoint
    _teardown_starts_on_delete(controller, monkeypatch)
    with pytest.raises(InProgress, match="torn down"):
        controller.volumes.delete(volume_id)
    # Detached at once, not on the retry that finds the file system gone: by then its servers
    # are gone, and a detach of a real Lustre mount without servers hangs in the kernel.
    assert not _mounted(mountpoint)
    controller.volumes.delete(volume_id)
    with pytest.raises(NotFound):
        controller.volumes.get(volume_id)


def test_a_detach_that_hangs_after_the_servers_are_gone_does_not_hold_the_delete(
    controller: Replica, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Deadlines of a second: long enough for a loaded machine's healthy steps, so the only
    # call that runs out is the hung detach.
    service = VolumeService(
        controller.sets, controller.mounts, controller.lustre,
        bounded=BoundedCalls(timeout_s=1.0), background_removals=False,
    )
    controller.volumes = service
    volume_id = controller.create("solo", kind="dedicated")
    mountpoint = service.get(volume_id).mountpoint
    _teardown_starts_on_delete(controller, monkeypatch)
    real_unmount = HostMounts.unmount
    detach_returns = threading.Event()

    def hung_detach(self: HostMounts, target: str, **options: bool) -> None:
        if target == str(mountpoint):
            detach_returns.wait(60)  # umount2 of a mount whose servers are gone
        real_unmount(self, target, **options)

    monkeypatch.setattr(HostMounts, "unmount", hung_detach)
    try:
        with caplog.at_level(logging.WARNING), pytest.raises(InProgress, match="torn down"):
            service.delete(volume_id)  # the teardown starts; the detach hangs and is left
        assert "did not detach" in caplog.text
        try:
            service.delete(volume_id)  # the CO's retry finds the file system gone: deleted
        except OperationInFlight:
            pytest.fail("the hung detach held the volume: its retry was refused (ABORTED)")
        with pytest.raises(NotFound):
            service.get(volume_id)
        assert controller.sets.list_file_systems() == []
    finally:
        detach_returns.set()
    deadline = time.monotonic() + 30
    while _mounted(mountpoint):  # the detach left to its thread finishes once it can
        assert time.monotonic() < deadline, f"{mountpoint} never detached"
        time.sleep(0.05)


# -- finding 5: hung file-system calls hold neither the thread nor the volume ------------------
def _hang_the_first_write_in_state(
    state: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[threading.Event, list[dict[str, object]]]:
    """The first record write in `state` hangs (the MDS stops answering) until the event is
    set, then lands; the list gets the document it wrote."""
    real = catalog_module.write_json_atomic
    mds_back = threading.Event()
    hung: list[dict[str, object]] = []

    def hang_once(*args: object, **kwargs: object) -> None:
        document = args[1] if len(args) > 1 else kwargs["document"]
        if isinstance(document, dict) and document.get("state") == state and not hung:
            hung.append(document)
            mds_back.wait(60)
        real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(catalog_module, "write_json_atomic", hang_once)
    return mds_back, hung


def _until_it_answers(call: Callable[[], T]) -> T:
    """The CO's retries once the MDS is back. Each step is bounded at 0.2 s, which a loaded
    machine can pass now and then: retried for up to a minute, and said if it never does."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return call()
        except InProgress:
            assert time.monotonic() < deadline, "no retry succeeded after the hang ended"
            threading.Event().wait(0.1)


def _bounded_service(controller: Replica) -> VolumeService:
    return VolumeService(
        controller.sets, controller.mounts, controller.lustre,
        bounded=BoundedCalls(timeout_s=0.2), background_removals=False,
    )


def test_a_hung_deleting_write_holds_the_retry_until_it_lands_and_never_undoes_the_delete(
    controller: Replica, monkeypatch: pytest.MonkeyPatch
) -> None:
    volume_id = controller.create("v")
    service = _bounded_service(controller)
    mds_back, hung = _hang_the_first_write_in_state("deleting", monkeypatch)
    try:
        with pytest.raises(CallTimedOut):
            service.delete(volume_id)
        # The CO's retry during the hang: UNAVAILABLE, never ABORTED, and it does not run
        # beside the hung write: a delete that finished under it would have its record
        # written back ("deleting") when the write lands.
        with pytest.raises(InProgress, match="still waiting on its file system"):
            service.delete(volume_id)
        assert controller.record_on_disk("safe", "v")["state"] == "ready"  # type: ignore[index]
    finally:
        mds_back.set()
    _until_it_answers(lambda: service.delete(volume_id))
    assert hung and controller.record_on_disk("safe", "v") is None
    with pytest.raises(NotFound):
        service.get(volume_id)


def test_a_create_whose_first_record_write_hung_resumes_that_record_not_races_it(
    controller: Replica, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = _bounded_service(controller)
    params, wanted = controller.params("c"), CapacityRange(required_bytes=GiB)
    mds_back, hung = _hang_the_first_write_in_state("creating", monkeypatch)
    try:
        with pytest.raises(CallTimedOut):
            service.create("c", wanted, params)
        # A retry beside the hung write would make the volume with another directory and
        # project id, and the late write would then turn its ready record back into the
        # first attempt's: the volume answered to the CO would name a directory never made.
        with pytest.raises(InProgress, match="still waiting on its file system"):
            service.create("c", wanted, params)
    finally:
        mds_back.set()
    volume = _until_it_answers(lambda: service.create("c", wanted, params)).record
    first = hung[0]
    assert (volume.directory, volume.project_id) == (first["directory"], first["project_id"])
    on_disk = controller.record_on_disk("safe", "c")
    assert on_disk is not None and on_disk["state"] == "ready"
    assert on_disk["directory"] == volume.directory and controller.directory(volume).is_dir()
    # The first attempt kept its project id claimed (its record, once landed, names it).
    assert controller.claim_holder("safe", volume.project_id) == volume.volume_id
    assert service.get(volume.volume_id).record == volume


def test_a_removal_hung_on_one_file_system_does_not_stop_removals_on_others(
    controller: Replica, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = VolumeService(controller.sets, controller.mounts, controller.lustre)
    controller.volumes = service
    real = deletion_module.remove_tree
    slow_mds_back = threading.Event()

    def remove_tree(mountpoint: Path, trash: str, volume_id: str, *, small_only: bool) -> bool:
        if not small_only and ":slow:" in volume_id:
            slow_mds_back.wait(60)  # this file system's MDS hangs mid-removal
        return real(mountpoint, trash, volume_id, small_only=small_only)

    monkeypatch.setattr(deletion_module, "remove_tree", remove_tree)
    try:
        slow = controller.create("a", fsname="slow")
        fast = controller.create("b", fsname="fast")
        for volume_id in (slow, fast):
            _give_it_a_tree(controller, volume_id)
        service.delete(slow)
        service.delete(fast)
        removed = threading.Event()
        for _ in range(300):
            if controller.record_on_disk("fast", "b") is None:
                removed.set()
                break
            threading.Event().wait(0.1)
        assert removed.is_set(), "the healthy file system's removal waited for the hung one"
        assert controller.record_on_disk("slow", "a") is not None
    finally:
        slow_mds_back.set()
        service.stop()


# -- finding 6: symlinked driver directories lead nowhere --------------------------------------
@pytest.mark.parametrize(
    "linked", [".lustre-csi/volumes", ".lustre-csi/projects", ".lustre-csi/trash", "csi-volumes",
               ".lustre-csi"]
)
def test_a_driver_directory_swapped_for_a_symlink_leaves_the_outside_untouched(
    controller: Replica, linked: str
) -> None:
    kept = controller.create("kept")
    doomed = controller.create("doomed")
    _give_it_a_tree(controller, doomed)
    root = controller.root("safe")
    (root / ".lustre-csi/trash").mkdir(exist_ok=True)
    # Outside the driver's directories but in the same file system (and mount), where a
    # rename through the link would land.
    outside = root / "someone-elses"
    shutil.copytree(root / linked, outside, symlinks=True)
    for name in ("n2.json", "1001", "n2", "kept.json"):
        write_file(outside / name, "someone else's file")
    before = _contents(outside)
    shutil.rmtree(root / linked)
    (root / linked).symlink_to(os.path.relpath(outside, (root / linked).parent))

    for attempt in (lambda: controller.create("n2"), lambda: controller.volumes.delete(doomed),
                    controller.volumes.run_pending_removals,
                    lambda: controller.volumes.delete(kept)):
        try:
            attempt()
        except FailedPrecondition as exc:
            assert "symlink" in str(exc) or "not a directory" in str(exc)
        assert _contents(outside) == before  # nothing written, moved or removed out there


def _contents(top: Path) -> dict[Path, bytes | None]:
    """Every entry below `top` (directories as None), with the content of each file."""
    return {
        p.relative_to(top): (p.read_bytes() if p.is_file() and not p.is_symlink() else None)
        for p in top.rglob("*")
    }


def test_a_driver_directory_not_owned_by_root_is_refused(controller: Replica) -> None:
    controller.create("kept")
    root = controller.root("safe")
    os.chown(root / "csi-volumes", 1000, 1000)  # someone else could swap entries in it
    with pytest.raises(FailedPrecondition, match="owned"):
        controller.create("n2")
    assert not list((root / "csi-volumes").glob("n2-*"))


# -- finding 7: the index follows the other replica --------------------------------------------
def test_listing_capacity_and_growth_see_the_other_replicas_changes(
    replicas: tuple[Replica, Replica], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = replicas
    warm = a.create("warm")
    assert b.volumes.get(warm).record.name == "warm"  # b has indexed the file system
    a.create("x", 4 * GiB)
    gone = a.create("y")
    a.volumes.delete(gone)
    assert a.volumes.run_pending_removals() == 0

    assert [r.name for r in b.volumes.list_page("", 0)[0]] == ["warm", "x"]
    params = b.params("z")
    assert b.volumes.capacity(params).available_bytes == a.volumes.capacity(params).available_bytes
    assert b.volumes.catalog.reserved_bytes("safe") == 5 * GiB

    a.create("w", 2 * GiB)
    asked = _capacity_requests(b, monkeypatch)
    b.create("z", GiB)
    assert asked == [8 * GiB]  # warm + x + w (made by a) + z


def _capacity_requests(replica: Replica, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The bytes each of the replica's calls to ensure_capacity asks for, from now on."""
    asked: list[int] = []
    real = replica.sets.ensure_capacity

    def record_request(fsname: str, required_bytes: int):  # type: ignore[no-untyped-def]
        asked.append(required_bytes)
        return real(fsname, required_bytes)

    monkeypatch.setattr(replica.sets, "ensure_capacity", record_request)
    return asked


# -- finding 8: planted records are not counted ------------------------------------------------
def test_a_planted_record_of_an_impossible_size_blocks_no_create(
    controller: Replica, caplog: pytest.LogCaptureFixture
) -> None:
    controller.create("warm")
    osts = len(controller.sets.ledger("safe")["osts"])
    root = controller.root("safe")
    controller.plant_record(record_document("big", 999999, capacity_bytes=1 << 62))
    write_file(root / ".lustre-csi/projects/999999", "v1:shared:safe:big")
    with Replica(controller.state_dir, "c") as fresh:
        with caplog.at_level(logging.WARNING):
            fresh.create("victim")
        assert "big.json" in caplog.text
        assert fresh.volumes.catalog.reserved_bytes("safe") == 2 * GiB
        assert len(fresh.sets.ledger("safe")["osts"]) == osts


def test_a_planted_record_without_its_project_claim_is_not_indexed(
    controller: Replica, caplog: pytest.LogCaptureFixture
) -> None:
    controller.create("warm")
    metadata = controller.root("safe") / ".lustre-csi"
    controller.plant_record(record_document("ghost", 5000, capacity_bytes=8 * GiB))
    controller.plant_record(record_document("thief", 5001, capacity_bytes=8 * GiB))
    write_file(metadata / "projects/5001", "v1:shared:safe:somebody-else")
    with Replica(controller.state_dir, "c") as fresh:
        with caplog.at_level(logging.WARNING):
            assert [r.name for r in fresh.volumes.list_page("", 0)[0]] == ["warm"]
        assert "ghost.json" in caplog.text and "thief.json" in caplog.text
        assert fresh.volumes.catalog.reserved_bytes("safe") == GiB
        with pytest.raises(NotFound):
            fresh.volumes.get("v1:shared:safe:ghost")
        fresh.create("victim", GiB)


def test_expand_counts_the_other_replicas_new_volumes(replicas: tuple[Replica, Replica],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = replicas
    grown = a.create("grown")
    assert b.volumes.get(grown).record.name == "grown"
    a.create("x", 4 * GiB)
    asked = _capacity_requests(b, monkeypatch)
    b.volumes.expand(grown, CapacityRange(required_bytes=2 * GiB))
    assert asked == [6 * GiB]
