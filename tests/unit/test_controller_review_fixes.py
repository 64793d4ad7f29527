"""The controller's record store against the adversarial review of issue 8 (no mounts needed)."""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from csi.controller import catalog as catalog_module
from csi.controller.catalog import VolumeCatalog
from csi.controller.driver_dirs import driver_dir
from csi.controller.record_loading import FileSystemLimits
from csi.controller.records import (
    PROJECTS_DIR,
    RECORDS_DIR,
    VolumeRecord,
    new_directory,
    trash_for,
)
from csi.errors import FailedPrecondition
from csi.host.atomicfile import write_json_atomic


def _record(name: str, size: int = 1 << 30, **changes: object) -> VolumeRecord:
    record = VolumeRecord(
        name=name, volume_id=f"v1:shared:fs:{name}", kind="shared", fsname="fs", subdir=name,
        capacity_bytes=size, project_id=1000, state="ready", directory=new_directory(name),
    )
    return replace(record, **changes)  # type: ignore[arg-type]


def _stored(catalog: VolumeCatalog, mountpoint: Path, record: VolumeRecord) -> VolumeRecord:
    """Write a record the way the service does: its project id claimed first."""
    project_id = catalog.allocate_project_id(record.fsname, mountpoint, record.volume_id)
    stored = replace(record, project_id=project_id)
    catalog.write(mountpoint, stored)
    return stored


def test_the_atomic_writer_with_a_directory_fd_never_follows_a_swapped_in_symlink(
    tmp_path: Path,
) -> None:
    records, elsewhere = tmp_path / "records", tmp_path / "elsewhere"
    records.mkdir()
    elsewhere.mkdir()
    fd = os.open(records, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.rename(records, tmp_path / "moved")
        records.symlink_to(elsewhere)  # swapped after the directory was opened
        write_json_atomic("r.json", {"a": 1}, dir_fd=fd)
    finally:
        os.close(fd)
    assert list(elsewhere.iterdir()) == []
    assert json.loads((tmp_path / "moved" / "r.json").read_text()) == {"a": 1}
    with pytest.raises(ValueError, match="not a file name"):
        write_json_atomic("../r.json", {}, dir_fd=os.open(tmp_path, os.O_RDONLY))


@pytest.mark.parametrize("linked", [".lustre-csi", ".lustre-csi/volumes"])
def test_a_driver_directory_that_is_a_symlink_is_refused(tmp_path: Path, linked: str) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    mountpoint = tmp_path / "fs"
    (mountpoint / linked).parent.mkdir(parents=True, exist_ok=True)
    (mountpoint / linked).symlink_to(elsewhere)
    catalog = VolumeCatalog()
    with pytest.raises(FailedPrecondition, match="symlink"):
        catalog.write(mountpoint, _record("a"))
    with pytest.raises(FailedPrecondition, match="symlink"):
        catalog.read(mountpoint, "fs", "v1:shared:fs:a")
    if linked == ".lustre-csi":
        with pytest.raises(FailedPrecondition, match="symlink"):
            catalog.allocate_project_id("fs", mountpoint, "v1:shared:fs:a")
    assert list(elsewhere.iterdir()) == []


def test_a_driver_directory_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    (tmp_path / RECORDS_DIR).mkdir(parents=True)
    os.chown(tmp_path / RECORDS_DIR, 1000, 1000)
    with pytest.raises(FailedPrecondition, match="owned by uid 1000"):
        VolumeCatalog().write(tmp_path, _record("a"))
    assert list((tmp_path / RECORDS_DIR).iterdir()) == []


def test_driver_directories_wider_than_their_mode_are_narrowed_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / PROJECTS_DIR).mkdir(parents=True, mode=0o755)
    os.chmod(tmp_path / ".lustre-csi", 0o755)
    with caplog.at_level(logging.WARNING), driver_dir(tmp_path, PROJECTS_DIR, create=False):
        pass
    assert stat.S_IMODE(os.lstat(tmp_path / ".lustre-csi").st_mode) == 0o700
    assert stat.S_IMODE(os.lstat(tmp_path / PROJECTS_DIR).st_mode) == 0o700
    assert ".lustre-csi was mode 755" in caplog.text


def test_an_index_reloads_only_when_another_replica_changed_the_records(tmp_path: Path) -> None:
    active, standby = VolumeCatalog(), VolumeCatalog()
    active.load("fs", tmp_path)
    _stored(active, tmp_path, _record("first"))
    standby.load("fs", tmp_path)
    active.refresh("fs", tmp_path)  # it loaded before its records directory existed
    assert not standby.refresh("fs", tmp_path)  # nothing changed: no reload
    _stored(active, tmp_path, _record("second", 2 << 30))
    assert not active.refresh("fs", tmp_path)  # its own write is no news to it
    assert standby.refresh("fs", tmp_path)
    assert standby.reserved_bytes("fs") == 3 << 30
    assert not standby.refresh("fs", tmp_path)


def test_concurrent_writes_of_one_process_are_no_news_to_its_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eight writers inside their record writes at once (as under 8 clients) and refreshes
    between them: none reloads the index, while another replica still sees the change."""
    active, standby = VolumeCatalog(), VolumeCatalog()
    active.load("fs", tmp_path)
    _stored(active, tmp_path, _record("first"))
    standby.load("fs", tmp_path)
    inside = threading.Barrier(8)
    real_write = catalog_module.write_json_atomic

    def write_together(*args: object, **kwargs: object) -> None:
        real_write(*args, **kwargs)  # type: ignore[arg-type]
        inside.wait(timeout=10)  # every writer has renamed its record; no token step yet
        assert not active.refresh("fs", tmp_path)

    monkeypatch.setattr(catalog_module, "write_json_atomic", write_together)
    reloads: list[str] = []
    monkeypatch.setattr(active, "reload", lambda fsname, mountpoint: reloads.append(fsname))
    writers = [threading.Thread(target=_stored, args=(active, tmp_path, _record(f"w{i}")))
               for i in range(8)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=20)
    assert not active.refresh("fs", tmp_path) and reloads == []
    assert standby.refresh("fs", tmp_path)
    assert standby.reserved_bytes("fs") == 9 << 30


def test_the_last_removal_step_takes_only_the_record_of_the_removal_it_finishes(
    tmp_path: Path,
) -> None:
    catalog = VolumeCatalog()
    catalog.load("fs", tmp_path)
    old = _stored(catalog, tmp_path, _record("n"))
    finishing = replace(old, state="deleting", trash=trash_for(old.directory))
    again = _stored(catalog, tmp_path, _record("n"))  # the same name made again since
    assert catalog.take_for_removal(tmp_path, "fs", finishing) == []
    assert json.loads((tmp_path / RECORDS_DIR / "n.json").read_text())["directory"] == (
        again.directory
    )
    deleting_again = replace(again, state="deleting", trash=trash_for(again.directory))
    catalog.write(tmp_path, deleting_again)
    assert catalog.take_for_removal(tmp_path, "fs", finishing) == []  # deleting, but not it
    assert (tmp_path / RECORDS_DIR / "n.json").exists()
    [(name, taken)] = catalog.take_for_removal(tmp_path, "fs", deleting_again)
    assert taken == deleting_again and not (tmp_path / RECORDS_DIR / "n.json").exists()
    catalog.drop_taken(tmp_path, "fs", name)
    assert not (tmp_path / RECORDS_DIR / name).exists()


def test_records_the_file_system_cannot_hold_or_does_not_claim_are_not_indexed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    writer = VolumeCatalog()
    writer.load("fs", tmp_path)
    kept = _stored(writer, tmp_path, _record("kept"))
    _stored(writer, tmp_path, _record("huge", 1 << 62))
    writer.write(tmp_path, _record("unclaimed", project_id=4000))
    _stored(writer, tmp_path, _record("solo", kind="dedicated", volume_id="v1:dedicated:fs:solo"))
    limits = FileSystemLimits(max_volume_bytes=20 << 30, dedicated_to="")
    reader = VolumeCatalog()
    with caplog.at_level(logging.WARNING):
        reader.load("fs", tmp_path, limits)
    assert [r.name for r in reader] == ["kept"]
    assert reader.reserved_bytes("fs") == kept.capacity_bytes
    for name in ("huge.json", "unclaimed.json", "solo.json"):
        assert name in caplog.text
    assert reader.read(tmp_path, "fs", "v1:shared:fs:unclaimed") is None
