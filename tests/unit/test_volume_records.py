"""Volume records are checked as they are read: a bad one is skipped, named, and harms nothing."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from csi.controller.catalog import VolumeCatalog
from csi.controller.records import RECORDS_DIR, VolumeRecord, new_directory, record_path

GOOD: dict[str, Any] = {
    "name": "good",
    "volume_id": "v1:shared:fs:good",
    "kind": "shared",
    "fsname": "fs",
    "subdir": "good",
    "capacity_bytes": 1 << 30,
    "project_id": 1000,
    "parameters": {},
    "state": "ready",
    "directory": "csi-volumes/good-0123456789abcdef",
}


def _put(mountpoint: Path, file_name: str, content: str | bytes) -> Path:
    path = mountpoint / RECORDS_DIR / file_name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


def _loaded(mountpoint: Path) -> VolumeCatalog:
    catalog = VolumeCatalog()
    catalog.load("fs", mountpoint)
    return catalog


def test_a_well_formed_record_loads(tmp_path: Path) -> None:
    _put(tmp_path, "good.json", json.dumps(GOOD))
    assert [r.volume_id for r in _loaded(tmp_path)] == ["v1:shared:fs:good"]


def test_the_index_keeps_one_copy_of_the_parameters_every_volume_of_a_class_shares(
    tmp_path: Path,
) -> None:
    parameters = {"kind": "shared", "fsname": "fs", "template": {"ost_count": 2}}

    def document(name: str) -> dict[str, Any]:
        return {**GOOD, "name": name, "volume_id": f"v1:shared:fs:{name}", "subdir": name,
                "directory": f"csi-volumes/{name}-0123456789abcdef",
                "project_id": 1000 + ord(name), "parameters": parameters,
                "layout": {"stripeCount": "2"}, "trash": "", "inode_limit": 0}

    for name in ("a", "b"):
        _put(tmp_path, f"{name}.json", json.dumps(document(name)))  # each read on its own
    a, b = _loaded(tmp_path)
    assert a.parameters == b.parameters == parameters
    assert a.parameters is b.parameters and a.layout is b.layout  # one copy for the class
    assert not hasattr(a, "__dict__")  # slotted: no per-record attribute dict either
    assert json.loads(json.dumps(a.to_json())) == document("a")  # written as it was read
    changed = replace(a, layout={"stripeCount": "1"})  # a change is a new record
    assert b.layout == {"stripeCount": "2"} and changed.layout == {"stripeCount": "1"}


@pytest.mark.parametrize(
    "content",
    [
        pytest.param("", id="empty"),
        pytest.param('{"name": "good", "volu', id="torn"),
        pytest.param(b"\xff\xfe\x00garbage", id="not-utf8"),
        pytest.param("[]", id="a-list"),
        pytest.param("null", id="null"),
        pytest.param(json.dumps({"name": "x"}), id="missing-fields"),
    ],
)
def test_an_empty_or_corrupt_record_is_skipped_and_named_without_breaking_the_others(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: str | bytes
) -> None:
    _put(tmp_path, "good.json", json.dumps(GOOD))
    bad = _put(tmp_path, "broken.json", content)
    with caplog.at_level(logging.WARNING, logger="csi.controller.catalog"):
        catalog = _loaded(tmp_path)
    assert [r.volume_id for r in catalog] == ["v1:shared:fs:good"]
    assert str(bad) in caplog.text


@pytest.mark.parametrize(
    ("file_name", "changes"),
    [
        pytest.param("good.json", {"subdir": "../../etc"}, id="subdir-dotdot"),
        pytest.param("good.json", {"subdir": "/etc"}, id="subdir-absolute"),
        pytest.param("good.json", {"directory": "../../etc"}, id="directory-dotdot"),
        pytest.param("good.json", {"directory": "/etc"}, id="directory-absolute"),
        pytest.param("good.json", {"directory": "csi-volumes/good-0123456789abcdef/../.."},
                     id="directory-escape"),
        pytest.param("good.json", {"directory": "csi-volumes/other-0123456789abcdef"},
                     id="directory-of-another-volume"),
        pytest.param("good.json", {"directory": "team"}, id="directory-not-ours"),
        pytest.param("evil.json", {}, id="file-name-not-the-ids-subdir"),
        pytest.param("good.json", {"volume_id": "v1:shared:fs:other"}, id="id-names-another"),
        pytest.param("good.json", {"volume_id": "v1:shared:otherfs:good"}, id="other-fs"),
        pytest.param("good.json", {"fsname": "otherfs"}, id="fsname-field"),
        pytest.param("good.json", {"kind": "dedicated"}, id="kind-not-the-ids"),
        pytest.param("good.json", {"volume_id": "not-an-id"}, id="id-unparsable"),
        pytest.param("good.json", {"name": "someone-else"}, id="name-not-the-subdirs"),
        pytest.param("good.json", {"state": "gone"}, id="unknown-state"),
        pytest.param("good.json", {"capacity_bytes": "1Gi"}, id="size-a-string"),
        pytest.param("good.json", {"capacity_bytes": True}, id="size-a-bool"),
        pytest.param("good.json", {"project_id": 0}, id="project-id-zero"),
        pytest.param("good.json", {"parameters": []}, id="parameters-a-list"),
    ],
)
def test_a_record_that_could_point_outside_its_volume_is_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, file_name: str, changes: dict[str, Any]
) -> None:
    bad = _put(tmp_path, file_name, json.dumps({**GOOD, **changes}))
    with caplog.at_level(logging.WARNING, logger="csi.controller.catalog"):
        catalog = _loaded(tmp_path)
    assert list(catalog) == []
    assert str(bad) in caplog.text


def test_a_record_that_is_a_symlink_is_not_followed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps(GOOD))
    link = tmp_path / RECORDS_DIR / "good.json"
    link.parent.mkdir(parents=True)
    os.symlink(elsewhere, link)
    with caplog.at_level(logging.WARNING, logger="csi.controller.catalog"):
        assert list(_loaded(tmp_path)) == []
    assert str(link) in caplog.text


def test_two_records_claiming_one_project_id_leave_it_to_the_claims_holder(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    catalog = VolumeCatalog()
    catalog.load("fs", tmp_path)
    project_id = catalog.allocate_project_id("fs", tmp_path, "v1:shared:fs:owner")
    owner = VolumeRecord(
        name="owner", volume_id="v1:shared:fs:owner", kind="shared", fsname="fs",
        subdir="owner", capacity_bytes=1 << 30, project_id=project_id, state="ready",
        directory=new_directory("owner"),
    )
    catalog.write(tmp_path, owner)
    # A copy under a name sorting first, claiming the same project id (whose quota a later
    # DeleteVolume of it would clear).
    copy = {**owner.to_json(), "name": "aaa", "volume_id": "v1:shared:fs:aaa", "subdir": "aaa",
            "directory": "csi-volumes/aaa-0123456789abcdef"}
    bad = _put(tmp_path, "aaa.json", json.dumps(copy))
    with caplog.at_level(logging.WARNING, logger="csi.controller.record_loading"):
        assert [r.volume_id for r in _loaded(tmp_path)] == ["v1:shared:fs:owner"]
    assert "v1:shared:fs:aaa" in caplog.text or str(bad) in caplog.text
    assert record_path(tmp_path, "aaa") == bad


def test_reload_catches_up_with_another_replica_and_keeps_in_flight_reservations(
    tmp_path: Path,
) -> None:
    def record(name: str, project_id: int) -> VolumeRecord:
        return VolumeRecord(
            name=name, volume_id=f"v1:shared:fs:{name}", kind="shared", fsname="fs",
            subdir=name, capacity_bytes=100, project_id=project_id, state="ready",
            directory=new_directory(name),
        )

    active, standby = VolumeCatalog(), VolumeCatalog()
    active.load("fs", tmp_path)
    standby.load("fs", tmp_path)
    active.write(tmp_path, record("made", 1000))
    active.write(tmp_path, record("dropped", 1001))
    standby.reload("fs", tmp_path)
    standby.hold(replace(record("in-flight", 1002), state="creating"))
    active.remove(tmp_path, record("dropped", 1001))
    standby.reload("fs", tmp_path)
    assert sorted(r.name for r in standby) == ["in-flight", "made"]
    assert standby.reserved_bytes("fs") == 200
