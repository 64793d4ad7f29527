"""`kubectl lustre status` on clusters the API-server test does not build: empty, booting."""

from __future__ import annotations

import json
from typing import Any

import pytest

from csi.cli.kubectl_lustre import main


class Cluster:
    def __init__(self, file_systems: list[dict[str, Any]]) -> None:
        self.items = file_systems

    def file_systems(self) -> list[dict[str, Any]]:
        return self.items

    def persistent_volumes(self) -> list[dict[str, Any]]:
        return []

    def events_of(self, name: str) -> list[dict[str, Any]]:
        return []


BOOTING = {"metadata": {"name": "scratch"}, "spec": {"fsname": "scr"}}


def test_an_empty_cluster_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status"], reader=Cluster([])) == 0
    assert capsys.readouterr().out == "No LustreFileSystems.\n"
    assert main(["status", "-o", "json"], reader=Cluster([])) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_a_file_system_not_reported_on_yet_reads_as_pending_with_nothing_planned(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "scr"], reader=Cluster([BOOTING])) == 0  # found by its fsname
    out = capsys.readouterr().out.splitlines()
    assert out[:3] == ["LustreFileSystem scratch (fsname scr): Pending",
                       "  MGS NIDs:  (none yet)",
                       "  Capacity:  - serving of - planned"]
    assert "    (none planned yet)" in out and "    (none yet)" in out


def test_an_unknown_name_is_an_error_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "nope"], reader=Cluster([BOOTING])) == 1
    assert "no LustreFileSystem named 'nope'" in capsys.readouterr().err
