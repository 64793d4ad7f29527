"""The node plugin's check that this node can mount Lustre, and how it is reported."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest

from csi.errors import ExternalCommandFailed
from csi.host.command import CommandResult
from csi.node.readiness import (
    ClientReadiness,
    ClientReadinessWatch,
    check_client,
    node_condition_patch,
)


class ScriptedLctl:
    """Answers lctl the way a node in a given state would."""

    def __init__(self, modules: bool, nids: str) -> None:
        self.modules, self.nids = modules, nids

    def run(self, argv: Sequence[str], *, timeout: float = 60) -> CommandResult:
        args = tuple(argv)
        if not self.modules:
            return CommandResult(args, 2, "", "error: get_param: param_path 'version': No such")
        if args[1] == "list_nids":
            return CommandResult(args, 0, self.nids, "")
        return CommandResult(args, 0, "lustre: 2.16.1\n", "")


class NoLctl:
    def run(self, argv: Sequence[str], *, timeout: float = 60) -> CommandResult:
        raise ExternalCommandFailed("lctl is not installed")


@pytest.mark.parametrize(
    ("runner", "require_network", "reason"),
    [
        (NoLctl(), True, "ToolsMissing"),
        (ScriptedLctl(modules=False, nids=""), True, "ModulesNotLoaded"),
        (ScriptedLctl(modules=True, nids="0@lo\n"), True, "LNetNotConfigured"),
        (ScriptedLctl(modules=True, nids="0@lo\n"), False, "ClientReady"),
        (ScriptedLctl(modules=True, nids="0@lo\n10.0.0.9@tcp\n"), True, "ClientReady"),
    ],
)
def test_check_names_what_is_missing(runner, require_network: bool, reason: str) -> None:
    state = check_client(runner, require_network=require_network)
    assert state.reason == reason
    assert state.ready == (reason == "ClientReady")
    if not state.ready:
        assert "install" in state.message or "configure" in state.message


def test_watch_reports_each_change_once_and_sets_ready_when_the_client_arrives() -> None:
    runner = ScriptedLctl(modules=False, nids="")
    ready = threading.Event()
    reported: list[ClientReadiness] = []
    watch = ClientReadinessWatch(
        lambda: check_client(runner, require_network=True),
        ready,
        reported.append,
        interval_seconds=0.01,
    )
    watch.start()
    assert not ready.is_set() and reported[-1].reason == "ModulesNotLoaded"
    runner.modules = True
    runner.nids = "10.1.1.1@tcp\n"
    assert ready.wait(5)
    watch.stop()
    assert [r.reason for r in reported] == [
        "ModulesNotLoaded",
        "LNetNotConfigured",
        "ClientReady",
    ] or [r.reason for r in reported] == ["ModulesNotLoaded", "ClientReady"]
    condition = node_condition_patch(reported[-1])["status"]["conditions"][0]
    assert condition["type"] == "LustreClientReady" and condition["status"] == "True"
