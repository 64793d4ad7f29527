"""The controller loses nothing: ids, records, directories and replicas tried as an adversary would.

Volume services run in-process on the embedded local server set with real (private) mounts,
as `serve --mode controller` assembles them; two services over one state directory are two
controller replicas over the same file systems (tests/support/controller_replicas.py, the
`replicas` and `controller` fixtures in conftest.py).
"""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import pytest

from csi.controller.parameters import VolumeParameters, dedicated_fsname
from csi.controller.sizes import CapacityRange
from csi.controller.volumes import VolumeService
from csi.errors import (
    AlreadyExists,
    CapacityExhausted,
    ExternalCommandFailed,
    FailedPrecondition,
    InProgress,
    NotFound,
)
from csi.host.bounded import BoundedCalls, CallTimedOut
from tests.support.controller_replicas import GiB, Replica, record_document, write_file


# -- item 1: dedicated file systems ------------------------------------------------------------
def test_forged_dedicated_id_does_not_delete_a_shared_file_system(controller: Replica) -> None:
    controller.create("team-a")
    data = write_file(controller.root("safe") / "admin" / "precious.txt", "keep me")
    controller.volumes.delete("v1:dedicated:safe:anything")
    controller.volumes.delete("v1:dedicated:safe:team-a")  # a real volume's name, wrong kind
    assert controller.sets.list_file_systems() == ["safe"]
    assert data.read_text() == "keep me"
    assert [r.name for r in controller.volumes.catalog] == ["team-a"]


def test_forged_dedicated_id_does_not_delete_another_volumes_file_system(
    controller: Replica,
) -> None:
    volume_id = controller.create("solo", kind="dedicated")
    fsname = dedicated_fsname("solo")
    controller.volumes.delete(f"v1:dedicated:{fsname}:someone-else")
    assert controller.sets.list_file_systems() == [fsname]
    controller.volumes.delete(volume_id)
    assert controller.sets.list_file_systems() == []


def test_a_dedicated_file_system_is_deleted_only_for_the_volume_it_is_dedicated_to(
    controller: Replica,
) -> None:
    # A record that claims a dedicated volume on a shared file system (say, forged, or left
    # by a bug) still does not get the file system deleted: the ledger says it is shared.
    controller.create("team-a")
    controller.plant_record(record_document("intruder", 4000, kind="dedicated"))
    with Replica(controller.state_dir, "c") as fresh:
        # The record is not trusted (the provider says "safe" is shared): nothing of the
        # volume's is there to delete, and the file system stays.
        fresh.volumes.delete("v1:dedicated:safe:intruder")
        assert fresh.sets.list_file_systems() == ["safe"]
        with pytest.raises(FailedPrecondition, match="not dedicated"):  # and the provider
            fresh.sets.delete_file_system("safe", dedicated_to="v1:dedicated:safe:intruder")


def test_two_dedicated_volumes_never_share_a_file_system(controller: Replica) -> None:
    controller.create("first", kind="dedicated")
    fsname = dedicated_fsname("first")
    # Another volume whose name derives the same fsname (a hash collision): forced here by
    # handing it the first one's fsname, which is what a collision amounts to.
    colliding = controller.params("second", kind="dedicated")
    colliding = VolumeParameters(
        kind="dedicated", fsname=fsname, template=colliding.template
    )
    with pytest.raises(AlreadyExists, match="dedicated to volume"):
        controller.volumes.create("second", CapacityRange(required_bytes=GiB), colliding)
    assert [r.name for r in controller.volumes.catalog] == ["first"]


def test_a_dedicated_volume_is_never_made_inside_an_existing_shared_file_system(
    controller: Replica,
) -> None:
    controller.create("team-a", fsname=dedicated_fsname("late"))
    with pytest.raises(AlreadyExists, match="shared file system"):
        controller.create("late", kind="dedicated")
    assert [r.name for r in controller.volumes.catalog] == ["team-a"]


# -- item 3: only directories the driver made ---------------------------------------------------
def test_create_volume_never_adopts_or_deletes_an_existing_directory(controller: Replica) -> None:
    controller.create("warmup")  # the file system exists; an admin keeps a directory in it
    admin = controller.root("safe") / "team"
    admin.mkdir(mode=0o750)
    write_file(admin / "report.txt", "the admin's")
    volume_id = controller.create("team")
    assert (admin.stat().st_mode & 0o777) == 0o750  # not opened to everyone
    assert list(admin.iterdir()) == [admin / "report.txt"]
    volume = controller.volumes.get(volume_id)
    assert volume.record.directory.startswith("csi-volumes/team-")
    assert (controller.root("safe") / volume.record.directory).is_dir()
    controller.volumes.delete(volume_id)
    assert (admin / "report.txt").read_text() == "the admin's"
    assert not (controller.root("safe") / volume.record.directory).exists()


def test_a_directory_left_by_an_interrupted_create_is_finished_by_the_retry(
    controller: Replica, monkeypatch: pytest.MonkeyPatch
) -> None:
    controller.create("warmup")
    calls: list[int] = []
    real = controller.lustre.set_project_quota

    def fail_once(mountpoint, project_id, size):  # type: ignore[no-untyped-def]
        calls.append(project_id)
        if len(calls) == 1:
            raise OSError("server went away")
        return real(mountpoint, project_id, size)

    monkeypatch.setattr(controller.lustre, "set_project_quota", fail_once)
    with pytest.raises(OSError):
        controller.create("resumed")
    creating = next(r for r in controller.volumes.catalog if r.name == "resumed")
    assert creating.state == "creating"
    assert (controller.root("safe") / creating.directory).is_dir()
    volume_id = controller.create("resumed")
    ready = controller.volumes.get(volume_id).record
    assert ready.directory == creating.directory and ready.project_id == creating.project_id


def test_a_failed_removal_is_reported_and_keeps_the_quota_and_project_id(
    controller: Replica,
) -> None:
    volume_id = controller.create("busy", 2 * GiB)
    volume = controller.volumes.get(volume_id)
    directory, claim = controller.directory(volume.record), controller.claim_file(volume.record)
    # A mount on the volume's directory makes it impossible to remove (or move) for now.
    subprocess.run(["mount", "--bind", str(directory), str(directory)], check=True)
    try:
        with pytest.raises(FailedPrecondition, match="Device or resource busy"):
            controller.volumes.delete(volume_id)
        assert controller.quota_bytes(volume) == 2 * GiB
        assert claim.exists() and directory.is_dir()
    finally:
        subprocess.run(["umount", str(directory)], check=True)
    controller.volumes.delete(volume_id)  # the retry finishes it
    assert not directory.exists() and not claim.exists()
    assert controller.quota_bytes(volume) == 0


# -- item 2: records are checked as read --------------------------------------------------------
def test_a_forged_record_never_makes_delete_volume_remove_anything_outside(
    controller: Replica,
) -> None:
    controller.create("team-a")
    outside = write_file(controller.state_dir / "outside" / "keep.txt", "not the driver's")
    # Seen from the controller's mount (<state>/controller-mounts-c/safe), ../../outside is
    # <state>/outside; the second names it by its absolute path.
    controller.plant_record(
        record_document("evil", 4242, subdir="../../outside", directory="../../outside")
    )
    controller.plant_record(
        record_document("evil2", 4242, subdir=str(outside.parent), directory=str(outside.parent))
    )
    with Replica(controller.state_dir, "c") as fresh:
        fresh.volumes.delete("v1:shared:safe:evil")
        fresh.volumes.delete("v1:shared:safe:evil2")
    assert outside.read_text() == "not the driver's"


def test_an_empty_record_does_not_break_calls_on_its_file_system_after_a_restart(
    controller: Replica, caplog: pytest.LogCaptureFixture
) -> None:
    kept = controller.create("kept")
    write_file(controller.root("safe") / ".lustre-csi/volumes/torn.json", "")
    with Replica(controller.state_dir, "c") as restarted:
        with caplog.at_level("WARNING", logger="csi.controller.catalog"):
            assert restarted.volumes.get(kept).record.name == "kept"
        assert ".lustre-csi/volumes/torn.json" in caplog.text
        assert [r.name for r in restarted.volumes.list_page("", 0)[0]] == ["kept"]
        restarted.create("another")
        restarted.volumes.delete(kept)


# -- item 13: failed expansions and refused creates -----------------------------------------------
def _claims(controller: Replica) -> list[str]:
    return sorted(p.name for p in (controller.root("safe") / ".lustre-csi/projects").iterdir())


def test_a_failed_expand_leaves_the_volume_at_its_old_size(
    controller: Replica, monkeypatch: pytest.MonkeyPatch
) -> None:
    volume_id = controller.create("grow", GiB)

    def refuse(*args: object) -> None:
        raise ExternalCommandFailed("lfs setquota: Connection timed out")

    monkeypatch.setattr(controller.lustre, "set_project_quota", refuse)
    with pytest.raises(ExternalCommandFailed):
        controller.volumes.expand(volume_id, CapacityRange(required_bytes=2 * GiB))
    assert controller.volumes.get(volume_id).record.capacity_bytes == GiB
    assert controller.volumes.catalog.reserved_bytes("safe") == GiB
    monkeypatch.setattr(controller.sets, "ensure_capacity", _in_progress)
    with pytest.raises(InProgress):
        controller.volumes.expand(volume_id, CapacityRange(required_bytes=3 * GiB))
    assert controller.volumes.get(volume_id).record.capacity_bytes == GiB
    assert controller.volumes.catalog.reserved_bytes("safe") == GiB


def _in_progress(*args: object) -> None:
    raise InProgress("OSTs are being added")


def test_create_retries_that_end_in_resource_exhausted_or_in_progress_claim_no_project_ids(
    controller: Replica, monkeypatch: pytest.MonkeyPatch
) -> None:
    controller.create("first")
    before = _claims(controller)
    for _ in range(3):
        with pytest.raises(CapacityExhausted):
            controller.create("huge", 100 * GiB)
    monkeypatch.setattr(controller.sets, "ensure_capacity", _in_progress)
    for _ in range(3):
        with pytest.raises(InProgress):
            controller.create("later", GiB)
    assert _claims(controller) == before
    assert controller.volumes.catalog.reserved_bytes("safe") == GiB
    monkeypatch.undo()
    later = controller.volumes.get(controller.create("later", GiB)).record
    assert _claims(controller) == sorted([*before, str(later.project_id)])


# -- item 12: two replicas over one file system -------------------------------------------------
def test_a_volume_made_by_one_replica_is_found_expanded_and_deleted_by_the_other(
    replicas: tuple[Replica, Replica],
) -> None:
    first, second = replicas
    before = first.create("before")
    assert [r.name for r in second.volumes.list_page("", 0)[0]] == ["before"]  # b indexed
    volume_id = first.create("after", GiB)  # ... then a leader change
    record = first.volumes.get(volume_id).record
    directory, claim = first.directory(record), first.claim_file(record)

    assert second.volumes.get(volume_id).record.directory == record.directory
    assert second.create("after", GiB) == volume_id  # the same volume, not a second one
    assert second.volumes.expand(volume_id, CapacityRange(required_bytes=2 * GiB))
    assert {r.name for r in second.volumes.list_page("", 0)[0]} == {"before", "after"}
    second.volumes.delete(volume_id)
    assert not directory.exists() and not claim.exists()
    mountpoint = second.volumes.get(before).mountpoint
    assert second.lustre.project_quota(mountpoint, record.project_id).block_hard_limit_bytes == 0


def test_a_volume_deleted_by_one_replica_is_gone_for_the_other(
    replicas: tuple[Replica, Replica],
) -> None:
    first, second = replicas
    volume_id = first.create("short-lived")
    assert second.volumes.get(volume_id).record.name == "short-lived"
    first.volumes.delete(volume_id)
    with pytest.raises(NotFound):
        second.volumes.get(volume_id)
    with pytest.raises(NotFound):
        second.volumes.expand(volume_id, CapacityRange(required_bytes=2 * GiB))
    assert second.volumes.catalog.reserved_bytes("safe") == 0


# -- item 18: long deletions outside the RPC, bounded file-system calls ------------------------
def _fill(directory: Path, dirs: int = 3, files: int = 5) -> None:
    for d in range(dirs):
        for f in range(files):
            write_file(directory / f"d{d}" / f"f{f}.bin", "x" * 100)


def test_delete_volume_moves_a_large_tree_away_and_removes_it_in_the_background(
    controller: Replica,
) -> None:
    volume_id = controller.create("large", 2 * GiB)
    volume = controller.volumes.get(volume_id)
    directory, claim = controller.directory(volume.record), controller.claim_file(volume.record)
    _fill(directory)

    controller.volumes.delete(volume_id)  # answers without walking the tree
    assert not directory.exists()  # unreachable under its name at once
    pending = controller.record_on_disk("safe", "large")
    assert pending is not None and pending["state"] == "deleting"
    trash = controller.root("safe") / pending["trash"]
    assert (trash / "d0" / "f0.bin").exists()  # the data waits in the trash ...
    assert controller.quota_bytes(volume) == 2 * GiB  # ... and keeps its quota and project id
    assert claim.exists()
    with pytest.raises(NotFound):
        controller.volumes.get(volume_id)
    assert controller.volumes.list_page("", 0)[0] == []
    controller.volumes.delete(volume_id)  # a repeated DeleteVolume is fine
    with pytest.raises(InProgress, match="being deleted"):
        controller.create("large", 2 * GiB)

    assert controller.volumes.run_pending_removals() == 0
    assert not trash.exists() and not claim.exists()
    assert controller.quota_bytes(volume) == 0
    assert controller.volumes.catalog.reserved_bytes("safe") == 0
    assert controller.record_on_disk("safe", "large") is None
    controller.create("large", 2 * GiB)  # the name is free again


def test_pending_removals_resume_after_a_restart(controller: Replica) -> None:
    volume_id = controller.create("interrupted")
    record = controller.volumes.get(volume_id).record
    _fill(controller.directory(record))
    controller.volumes.delete(volume_id)  # ... and the controller stops before the removal
    with Replica(controller.state_dir, "c") as restarted:
        restarted.volumes.resume_removals()
        assert restarted.volumes.run_pending_removals() == 0
        assert list((restarted.root("safe") / ".lustre-csi/trash").iterdir()) == []
        assert not restarted.claim_file(record).exists()


def test_a_background_removal_that_fails_keeps_the_quota_and_is_retried(
    controller: Replica,
) -> None:
    volume_id = controller.create("stuck", 2 * GiB)
    volume = controller.volumes.get(volume_id)
    _fill(controller.directory(volume.record))
    inner = controller.directory(volume.record) / "d0"
    subprocess.run(["mount", "--bind", str(inner), str(inner)], check=True)
    controller.volumes.delete(volume_id)
    trash = controller.root("safe") / ".lustre-csi/trash" / volume.record.directory.split("/")[1]
    try:
        assert controller.volumes.run_pending_removals() == 1  # EBUSY: still pending
        assert controller.quota_bytes(volume) == 2 * GiB
    finally:
        subprocess.run(["umount", str(trash / "d0")], check=True)
    assert controller.volumes.run_pending_removals() == 0
    assert not trash.exists()
    assert controller.quota_bytes(volume) == 0


def test_two_replicas_finishing_one_removal_release_it_once(
    replicas: tuple[Replica, Replica],
) -> None:
    first, second = replicas
    volume_id = first.create("both")
    record = first.volumes.get(volume_id).record
    _fill(first.directory(record))
    first.volumes.delete(volume_id)
    second.volumes.resume_removals()  # the other replica finds the same pending removal
    assert second.volumes.run_pending_removals() == 0
    assert first.volumes.run_pending_removals() == 0
    metadata = first.root("safe") / ".lustre-csi"
    assert list((metadata / "volumes").glob("both.json*")) == []
    assert not first.claim_file(record).exists()
    assert list((metadata / "trash").iterdir()) == []
    # A volume that gets the released id afterwards keeps its claim: nobody releases it twice.
    successor = first.volumes.get(first.create("successor")).record
    second.volumes.resume_removals()
    assert second.volumes.run_pending_removals() == 0
    assert first.claim_holder("safe", successor.project_id) == successor.volume_id


def test_a_hung_file_system_answers_unavailable_instead_of_holding_the_thread(
    controller: Replica, monkeypatch: pytest.MonkeyPatch
) -> None:
    volume_id = controller.create("alive")
    hung = threading.Event()
    real = controller.mounts.mountpoint

    def hang(endpoint):  # type: ignore[no-untyped-def]
        hung.wait()
        return real(endpoint)

    service = VolumeService(
        controller.sets, controller.mounts, controller.lustre,
        bounded=BoundedCalls(timeout_s=0.2), background_removals=False,
    )
    monkeypatch.setattr(controller.mounts, "mountpoint", hang)
    try:
        with pytest.raises(CallTimedOut):
            service.get(volume_id)
        with pytest.raises(CallTimedOut):
            service.delete(volume_id)
    finally:
        hung.set()
    assert service.get(volume_id).record.name == "alive"  # nothing was lost meanwhile


def test_the_background_removal_never_follows_a_symlink_out_of_the_volume(
    controller: Replica,
) -> None:
    volume_id = controller.create("linked")
    directory = controller.directory(controller.volumes.get(volume_id).record)
    outside = write_file(controller.state_dir / "elsewhere" / "keep.txt", "not the volume's")
    _fill(directory)
    (directory / "d0" / "to-dir").symlink_to(outside.parent)
    (directory / "to-file").symlink_to(outside)
    controller.volumes.delete(volume_id)
    assert controller.volumes.run_pending_removals() == 0
    assert outside.read_text() == "not the volume's"
    assert list((controller.root("safe") / ".lustre-csi/trash").iterdir()) == []
