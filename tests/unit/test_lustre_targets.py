"""Import states: how the node plugin sees that a mounted file system's server is away."""

from __future__ import annotations

import pytest

from csi.lustre.parsers import LustreOutputError
from csi.lustre.targets import (
    TargetConnections,
    build_states_argv,
    parse_import_states,
    parse_instance,
)
from csi.node.stats import VolumeStatsReader
from tests.unit.test_lustre_client import RecordingRunner

# lprocfs_state_seq_show's format (lustre/obdclass/lprocfs_status.c in Lustre 2.17).
STATES = """\
mdc.real-MDT0000-mdc-ffff8e2c41b6d800.state=
current_state: FULL
state_history:
 - [ 1764640000, CONNECTING ]
 - [ 1764640001, FULL ]
osc.real-OST0000-osc-ffff8e2c41b6d800.state=
current_state: CONNECTING
state_history:
 - [ 1764640001, FULL ]
 - [ 1764640100, DISCONN ]
 - [ 1764640101, CONNECTING ]
osc.real-OST0001-osc-ffff8e2c41b6d800.state=
current_state: IDLE
state_history:
 - [ 1764640001, FULL ]
 - [ 1764640021, IDLE ]
"""


@pytest.fixture
def runner() -> RecordingRunner:
    return RecordingRunner()


def test_every_target_of_the_mount_gets_its_current_state():
    assert parse_import_states(STATES) == {
        "real-MDT0000": "FULL", "real-OST0000": "CONNECTING", "real-OST0001": "IDLE"}


def test_a_state_line_without_its_target_is_refused():
    with pytest.raises(LustreOutputError, match="names no target"):
        parse_import_states("current_state: FULL\n")


def test_the_instance_must_be_one_hex_token():
    assert parse_instance("ffff8e2c41b6d800\n") == "ffff8e2c41b6d800"
    with pytest.raises(LustreOutputError):
        parse_instance("real-ffff8e2c41b6d800 /mnt/real")


def test_only_the_mounts_own_imports_are_asked_for():
    assert build_states_argv("ffff8e2c41b6d800") == [
        "lctl", "get_param", "mdc.*-mdc-ffff8e2c41b6d800.state",
        "osc.*-osc-ffff8e2c41b6d800.state"]


def test_an_ost_that_reconnects_is_away_and_an_idle_one_is_not(runner: RecordingRunner):
    runner.answer("ffff8e2c41b6d800\n")
    runner.answer(STATES)
    states = TargetConnections(runner).of_mount("/var/lib/kubelet/x/globalmount")
    assert states.away == {"real-OST0000": "CONNECTING"}
    assert runner.argvs[0] == ["lfs", "getname", "-i", "/var/lib/kubelet/x/globalmount"]


def test_stats_report_nothing_away_when_the_tools_do_not_answer(runner: RecordingRunner):
    runner.answer("", returncode=2, stderr="lfs: not a Lustre file system")
    reader = VolumeStatsReader(lustre=None, targets=TargetConnections(runner))  # type: ignore[arg-type]
    assert reader.targets_away("/mnt/x") == {}
    assert VolumeStatsReader(lustre=None).targets_away("/mnt/x") == {}  # type: ignore[arg-type]
