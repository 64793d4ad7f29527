"""The embedded default: ledger growth, and the Lustre stand-in speaking Lustre's formats."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from csi.errors import AlreadyExists, CapacityExhausted, FailedPrecondition, NotFound
from csi.host.atomicfile import write_json_atomic
from csi.host.command import SubprocessRunner
from csi.lustre.client import LustreClient
from csi.server_sets import ServerSetTemplate
from provisioner.local import LocalServerSets
from provisioner.local_lustre import LocalLustreCommands

GiB = 1 << 30
TEMPLATE = replace(
    ServerSetTemplate(), ost_size_bytes=10 * GiB, min_osts=2, max_osts=5, growth_threshold=0.5
)


def test_file_systems_grow_by_new_osts_and_stop_at_the_limit(tmp_path: Path) -> None:
    sets = LocalServerSets(tmp_path)
    with pytest.raises(NotFound):
        sets.file_system("fs1")
    endpoint = sets.ensure_file_system("fs1", TEMPLATE)
    assert endpoint.mount_source("v") == "0@lo:/fs1/v"
    assert sets.capacity("fs1").ost_count == 2
    grown = sets.ensure_capacity("fs1", 15 * GiB)  # needs 30 GiB at a 0.5 threshold
    assert (grown.ost_count, grown.total_bytes) == (3, 30 * GiB)
    assert [o["index"] for o in sets.ledger("fs1")["osts"]] == [0, 1, 2]
    with pytest.raises(CapacityExhausted, match="maxOsts"):
        sets.ensure_capacity("fs1", 30 * GiB)
    assert sets.capacity("fs1").ost_count == 3  # a refused growth adds nothing
    assert sets.list_file_systems() == ["fs1"]


def test_a_file_system_is_deleted_only_for_the_volume_it_is_dedicated_to(tmp_path: Path) -> None:
    sets = LocalServerSets(tmp_path)
    sets.ensure_file_system("shared", TEMPLATE)
    mine = replace(TEMPLATE, extra={"dedicatedTo": "v1:dedicated:dmine:vol"})
    sets.ensure_file_system("dmine", mine)
    (sets.namespace_root("shared") / "data").write_text("keep")
    with pytest.raises(FailedPrecondition, match="shared file system"):
        sets.delete_file_system("shared", dedicated_to="v1:dedicated:shared:x")
    with pytest.raises(FailedPrecondition, match="dedicated to volume v1:dedicated:dmine:vol"):
        sets.delete_file_system("dmine", dedicated_to="v1:dedicated:dmine:other")
    assert sets.list_file_systems() == ["dmine", "shared"]
    assert (sets.namespace_root("shared") / "data").read_text() == "keep"
    sets.delete_file_system("dmine", dedicated_to="v1:dedicated:dmine:vol")
    sets.delete_file_system("dmine", dedicated_to="v1:dedicated:dmine:vol")  # idempotent
    assert sets.list_file_systems() == ["shared"]
    assert sets.namespaces() == ["shared"]


def test_an_existing_file_system_is_never_adopted_by_another_dedication(tmp_path: Path) -> None:
    sets = LocalServerSets(tmp_path)
    first = replace(TEMPLATE, extra={"dedicatedTo": "v1:dedicated:dx:first"})
    second = replace(TEMPLATE, extra={"dedicatedTo": "v1:dedicated:dx:second"})
    sets.ensure_file_system("dx", first)
    sets.ensure_file_system("dx", first)  # its own volume, again: fine
    sets.file_system("dx")  # a lookup needs no template
    with pytest.raises(AlreadyExists, match="dedicated to volume v1:dedicated:dx:first"):
        sets.ensure_file_system("dx", second)
    with pytest.raises(AlreadyExists, match="dedicated to volume"):
        sets.ensure_file_system("dx", TEMPLATE)  # a shared volume in it
    sets.ensure_file_system("plain", TEMPLATE)
    with pytest.raises(AlreadyExists, match="shared file system"):
        sets.ensure_file_system("plain", second)


def test_ost_indices_are_never_reused(tmp_path: Path) -> None:
    sets = LocalServerSets(tmp_path)
    sets.ensure_file_system("fs1", TEMPLATE)
    ledger = sets.ledger("fs1")
    ledger["osts"] = [ledger["osts"][0], {"index": 7, "size_bytes": 10 * GiB, "state": "lost"}]
    write_json_atomic(tmp_path / "filesystems" / "fs1" / "server-set.json", ledger)
    sets.ensure_capacity("fs1", 10 * GiB)
    assert [o["index"] for o in sets.ledger("fs1")["osts"]] == [0, 7, 8]


def test_stand_in_output_parses_as_lustre_output(tmp_path: Path) -> None:
    sets = LocalServerSets(tmp_path)
    sets.ensure_file_system("fs1", TEMPLATE)
    ledger = sets.ledger("fs1")
    ledger["osts"][1]["state"] = "inactive"
    write_json_atomic(tmp_path / "filesystems" / "fs1" / "server-set.json", ledger)
    root = sets.namespace_root("fs1")
    volume = root / "vol"
    volume.mkdir()
    (volume / "data").write_bytes(b"x" * (1 << 20))
    lustre = LustreClient(LocalLustreCommands(sets, SubprocessRunner()))

    df = lustre.df(root)
    assert [(t.index, t.active) for t in df.osts] == [(0, True), (1, False)]
    assert df.mdts[0].name.startswith("fs1-MDT0000")
    assert df.total == 10 * GiB
    assert lustre.df_inodes(root).inodes

    lustre.assign_project(volume, 1234)
    lustre.set_project_quota(root, 1234, 5 * GiB)
    assert lustre.project_id_of(str(volume)) == 1234
    quota = lustre.project_quota(root, 1234)
    assert quota.block_hard_limit_bytes == 5 * GiB
    assert (1 << 20) <= quota.used_bytes < (2 << 20)
    lustre.clear_project_quota(root, 1234)
    assert lustre.project_quota(root, 1234).block_hard_limit_bytes == 0


def test_stand_in_refuses_what_mount_lustre_would(tmp_path: Path) -> None:
    sets = LocalServerSets(tmp_path)
    sets.ensure_file_system("fs1", TEMPLATE)
    runner = LocalLustreCommands(sets, SubprocessRunner())
    target = str(tmp_path / "mnt")
    for source in ["10.0.0.1@tcp:/fs1", "0@lo:/nofs", "0@lo:/fs1/missing-subdir"]:
        result = runner.run(["mount", "-t", "lustre", "-o", "flock", source, target])
        assert result.returncode != 0 and "mount.lustre" in result.stderr


def test_pools_get_osts_of_their_own_and_growth_never_takes_their_indices(tmp_path: Path) -> None:
    sets = LocalServerSets(tmp_path)
    sets.ensure_file_system("pooled", replace(TEMPLATE, ost_pools="flash:2,disk:1"))
    ledger = sets.ledger("pooled")
    assert ledger is not None
    assert ledger["pools"] == {"flash": [1024, 1025], "disk": [2048]}
    assert sets.capacity("pooled").ost_count == 5  # 2 + 2 + 1: pool OSTs hold data too
    grown = sets.ensure_capacity("pooled", 30 * GiB)  # 60 GiB at 0.5: one more OST
    assert grown.ost_count == 6
    indices = [ost["index"] for ost in sets.ledger("pooled")["osts"]]
    assert sorted(indices) == [0, 1, 2, 1024, 1025, 2048]
