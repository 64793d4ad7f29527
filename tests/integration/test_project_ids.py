"""A new volume never takes a project id something else on its file system already uses.

An admin's own projects (`lfs project -p` on their directories, `lfs setquota -p` limits) are
invisible to lustre-csi's claims; csi.controller.project_ids asks the file system (`lfs
quota -p`) before an id is given to a volume. In-process volume services on the embedded
local server set with real (private) mounts, as in test_controller_data_safety.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from csi.controller.project_ids import MAX_SKIPPED_PER_CALL
from csi.errors import ExternalCommandFailed, InProgress
from tests.support.controller_replicas import GiB, Replica, write_file


def _claims(controller: Replica) -> list[int]:
    return sorted(int(p.name) for p in (controller.root("safe") / ".lustre-csi/projects").iterdir())


def _admin_project(controller: Replica, mountpoint: Path, project_id: int) -> Path:
    """An admin's directory tagged with `project_id` (`lfs project -p ID -s`), a file in it."""
    directory = mountpoint / "admin" / f"project-{project_id}"
    write_file(directory / "results.dat", "an admin's data")
    controller.lustre.assign_project(str(directory), project_id)
    return directory


def test_ids_an_admin_uses_are_skipped_and_their_quotas_left_alone(controller: Replica) -> None:
    first = controller.volumes.get(controller.create("first")).record
    mountpoint = controller.volumes.get(first.volume_id).mountpoint
    tagged, limited = first.project_id + 1, first.project_id + 2
    directory = _admin_project(controller, mountpoint, tagged)  # files, no limit
    controller.lustre.set_project_quota(str(mountpoint), limited, 5 * GiB)  # a limit, no files

    second = controller.volumes.get(controller.create("second")).record

    assert second.project_id == first.project_id + 3
    assert _claims(controller) == [first.project_id, second.project_id]  # the skipped: given back
    controller.volumes.delete(second.volume_id)
    controller.volumes.run_pending_removals()
    limits = controller.lustre.project_quota(str(mountpoint), limited)
    assert limits.block_hard_limit_bytes == 5 * GiB
    assert controller.lustre.project_quota(str(mountpoint), tagged).used_inodes == 2  # dir + file
    assert (directory / "results.dat").read_text() == "an admin's data"


def test_a_long_run_of_used_ids_answers_unavailable_and_the_retry_goes_past_it(
    controller: Replica,
) -> None:
    first = controller.volumes.get(controller.create("first")).record
    mountpoint = controller.volumes.get(first.volume_id).mountpoint
    used = range(first.project_id + 1, first.project_id + 1 + MAX_SKIPPED_PER_CALL + 3)
    for project_id in used:
        controller.lustre.set_project_quota(str(mountpoint), project_id, GiB)

    with pytest.raises(InProgress, match="used outside lustre-csi"):
        controller.create("later")
    assert _claims(controller) == [first.project_id]
    assert controller.volumes.catalog.reserved_bytes("safe") == GiB  # nothing held for it

    later = controller.volumes.get(controller.create("later")).record
    assert later.project_id == used[-1] + 1


def test_a_failed_check_gives_the_claim_back(
    controller: Replica, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = controller.volumes.get(controller.create("first")).record

    def unreachable(*args: object) -> None:
        raise ExternalCommandFailed("lfs quota: Connection timed out")

    monkeypatch.setattr(controller.lustre, "project_quota", unreachable)
    with pytest.raises(ExternalCommandFailed):
        controller.create("second")
    assert _claims(controller) == [first.project_id]
    monkeypatch.undo()
    assert controller.volumes.get(controller.create("second")).record.project_id > first.project_id
