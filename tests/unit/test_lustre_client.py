"""LustreClient: exact argv, input validation, and parsing, against a recording CommandRunner."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from csi.errors import ExternalCommandFailed, InvalidArgument
from csi.host.command import DEFAULT_TIMEOUT_S, CommandResult
from csi.lustre.client import (
    MAX_PROJECT_ID,
    LustreClient,
    build_assign_project_argv,
    build_clear_project_quota_argv,
    build_df_argv,
    build_health_check_argv,
    build_mount_argv,
    build_project_of_argv,
    build_project_quota_argv,
    build_set_project_quota_argv,
    kib_rounded_up,
    validate_mount_source,
)
from csi.lustre.parsers import LustreHealth, LustreOutputError

MNT = "/mnt/testfs"

LFS_DF = """\
UUID                   1K-blocks        Used   Available Use% Mounted on
testfs-MDT0000_UUID      1819648       12548     1643432   1% /mnt/testfs[MDT:0]
testfs-OST0000_UUID      3944808     1067428     2651380  29% /mnt/testfs[OST:0]
OST0001             : inactive device

filesystem_summary:      3944808     1067428     2651380  29% /mnt/testfs

"""

LFS_DF_INODES = """\
UUID                      Inodes       IUsed       IFree IUse% Mounted on
testfs-MDT0000_UUID      1048576        3210     1045366   1% /mnt/testfs[MDT:0]
testfs-OST0000_UUID       262144        1503      260641   1% /mnt/testfs[OST:0]

filesystem_summary:       262144        3210      258934   2% /mnt/testfs

"""

LFS_QUOTA = """\
Disk quotas for prj 1000 (pid 1000):
     Filesystem  kbytes   quota   limit   grace   files   quota   limit   grace
    /mnt/testfs 2097156*      0 2097152       -      52       0       0       -
"""


@dataclass
class RecordingRunner:
    """A CommandRunner stand-in: records every argv, answers from a queue of canned results."""

    answers: list[tuple[int, str, str]] = field(default_factory=list)
    calls: list[tuple[list[str], float]] = field(default_factory=list)

    def answer(self, stdout: str = "", *, returncode: int = 0, stderr: str = "") -> None:
        self.answers.append((returncode, stdout, stderr))

    def run(self, argv: Sequence[str], *, timeout: float = DEFAULT_TIMEOUT_S) -> CommandResult:
        self.calls.append((list(argv), timeout))
        returncode, stdout, stderr = self.answers.pop(0) if self.answers else (0, "", "")
        return CommandResult(tuple(argv), returncode, stdout, stderr)

    @property
    def argvs(self) -> list[list[str]]:
        return [argv for argv, _ in self.calls]


@pytest.fixture
def runner() -> RecordingRunner:
    return RecordingRunner()


@pytest.fixture
def client(runner: RecordingRunner) -> LustreClient:
    return LustreClient(runner)


# --- argv builders ---------------------------------------------------------------------------


def test_mount_argv() -> None:
    assert build_mount_argv("10.0.0.5@tcp:/testfs/vol", "/stage", ["flock", "ro"]) == [
        "mount",
        "-t",
        "lustre",
        "-o",
        "flock,ro",
        "10.0.0.5@tcp:/testfs/vol",
        "/stage",
    ]
    assert build_mount_argv("0@lo:/local", "/stage", []) == [
        "mount",
        "-t",
        "lustre",
        "0@lo:/local",
        "/stage",
    ]


def test_lfs_argv() -> None:
    assert build_assign_project_argv(f"{MNT}/vol", 1000) == [
        "lfs", "project", "-p", "1000", "-s", "-r", f"{MNT}/vol",
    ]  # fmt: skip
    assert build_set_project_quota_argv(MNT, 1000, 1 << 30) == [
        "lfs", "setquota", "-p", "1000", "-b", "0", "-B", "1048576k", MNT,
    ]  # fmt: skip
    assert build_clear_project_quota_argv(MNT, 1000) == [
        "lfs", "setquota", "-p", "1000", "-b", "0", "-B", "0", "-i", "0", "-I", "0", MNT,
    ]  # fmt: skip
    assert build_project_quota_argv(MNT, 1000) == ["lfs", "quota", "-p", "1000", MNT]
    assert build_project_of_argv(f"{MNT}/vol") == ["lfs", "project", "-d", f"{MNT}/vol"]
    assert build_df_argv(MNT) == ["lfs", "df", "-v", MNT]
    assert build_df_argv(MNT, inodes=True) == ["lfs", "df", "-v", "-i", MNT]
    assert build_health_check_argv() == ["lctl", "get_param", "-n", "health_check"]


@pytest.mark.parametrize(
    ("size", "kib"),
    [(1, 1), (1023, 1), (1024, 1), (1025, 2), (1 << 30, 1 << 20), ((1 << 30) + 1, (1 << 20) + 1)],
)
def test_quota_limits_round_up_to_whole_kib(size: int, kib: int) -> None:
    assert kib_rounded_up(size) == kib
    assert build_set_project_quota_argv(MNT, 7, size)[-2] == f"{kib}k"


# --- mount -----------------------------------------------------------------------------------


def test_mount_runs_mount_t_lustre(client: LustreClient, runner: RecordingRunner) -> None:
    client.mount("10.0.0.5@tcp0:/testfs/pvc-1", "/var/lib/kubelet/stage", ["flock", "noatime"])

    assert runner.argvs == [
        [
            "mount",
            "-t",
            "lustre",
            "-o",
            "flock,noatime",
            "10.0.0.5@tcp0:/testfs/pvc-1",
            "/var/lib/kubelet/stage",
        ]
    ]


@pytest.mark.parametrize(
    "source",
    [
        "10.0.0.5@tcp:/testfs",
        "10.0.0.5@tcp0:/testfs",
        "192.168.1.2@o2ib:/testfs",
        "0@lo:/local",
        "27@gni:/cray",
        "mgs1@tcp0:/testfs",
        "mgs1.example.org@tcp:/testfs",
        "10.0.0.5@tcp,192.168.1.2@o2ib1:10.0.0.6@tcp,192.168.1.3@o2ib1:/testfs",
        "10.0.0.5@tcp:10.0.0.6@tcp:/my-fs_1/volumes/pvc-0a1b.2c",
        "10.0.0.5@tcp:/abcdefgh",
    ],
)
def test_valid_sources(source: str) -> None:
    assert validate_mount_source(source) == source


@pytest.mark.parametrize(
    "source",
    [
        "",
        "testfs",
        "10.0.0.5@tcp/testfs",
        ":/testfs",
        "10.0.0.5:/testfs",
        "10.0.0.300@tcp:/testfs",
        "10.0.0.5@eth0:/testfs",
        "10.0.0.5@tcp,:/testfs",
        "10.0.0.5@tcp::/testfs",
        "-o@tcp:/testfs",
        "10.0.0.5@tcp:/",
        "10.0.0.5@tcp:/toolongfs",
        "10.0.0.5@tcp:/test.fs",
        "10.0.0.5@tcp:/testfs/",
        "10.0.0.5@tcp:/testfs//vol",
        "10.0.0.5@tcp:/testfs/../etc",
        "10.0.0.5@tcp:/testfs/vol/..",
        "10.0.0.5@tcp:/testfs/./vol",
        "10.0.0.5@tcp:/testfs/my vol",
        "10.0.0.5@tcp:/testfs/$(id)",
        "10.0.0.5@tcp:/testfs/vol\n",
    ],
)
def test_invalid_sources_never_reach_mount(
    source: str, client: LustreClient, runner: RecordingRunner
) -> None:
    with pytest.raises(InvalidArgument, match="Lustre source"):
        client.mount(source, "/stage", ["flock"])
    assert runner.calls == []


@pytest.mark.parametrize("options", [["flock", "bind"], ["flock,remount"], ["x-mount.mkdir"]])
def test_mount_options_go_through_the_allow_list(
    options: list[str], client: LustreClient, runner: RecordingRunner
) -> None:
    with pytest.raises(InvalidArgument):
        client.mount("10.0.0.5@tcp:/testfs", "/stage", options)
    assert runner.calls == []


@pytest.mark.parametrize("target", ["stage", "", "-o", "/stage\n"])
def test_mount_target_must_be_an_absolute_path(
    target: str, client: LustreClient, runner: RecordingRunner
) -> None:
    with pytest.raises(InvalidArgument, match="mount target"):
        client.mount("10.0.0.5@tcp:/testfs", target, ["flock"])
    assert runner.calls == []


def test_failed_mount_names_the_command_and_its_error(
    client: LustreClient, runner: RecordingRunner
) -> None:
    runner.answer(
        returncode=5,
        stderr="mount.lustre: mount 10.0.0.5@tcp:/testfs at /stage failed: Input/output error\n",
    )

    with pytest.raises(ExternalCommandFailed) as caught:
        client.mount("10.0.0.5@tcp:/testfs", "/stage", ["flock"])

    message = str(caught.value)
    assert "mount -t lustre -o flock 10.0.0.5@tcp:/testfs /stage exited 5" in message
    assert "Input/output error" in message


# --- projects and quotas ---------------------------------------------------------------------


def test_assign_project_and_set_quota(client: LustreClient, runner: RecordingRunner) -> None:
    client.assign_project(f"{MNT}/pvc-1", 1000)
    client.set_project_quota(MNT, 1000, 5 * (1 << 30))
    client.clear_project_quota(MNT, 1000)

    assert runner.argvs == [
        ["lfs", "project", "-p", "1000", "-s", "-r", f"{MNT}/pvc-1"],
        ["lfs", "setquota", "-p", "1000", "-b", "0", "-B", "5242880k", MNT],
        ["lfs", "setquota", "-p", "1000", "-b", "0", "-B", "0", "-i", "0", "-I", "0", MNT],
    ]


def test_paths_may_be_pathlike(client: LustreClient, runner: RecordingRunner) -> None:
    from pathlib import Path

    client.assign_project(Path(MNT) / "pvc-1", 1)

    assert runner.argvs == [["lfs", "project", "-p", "1", "-s", "-r", f"{MNT}/pvc-1"]]


@pytest.mark.parametrize("project_id", [1, 1000, MAX_PROJECT_ID])
def test_project_ids_in_range_are_accepted(
    project_id: int, client: LustreClient, runner: RecordingRunner
) -> None:
    client.set_project_quota(MNT, project_id, 1 << 20)

    assert runner.argvs[0][3] == str(project_id)


@pytest.mark.parametrize("project_id", [0, -1, MAX_PROJECT_ID + 1, True, "1000", 1.0])
def test_project_ids_out_of_range_are_refused(
    project_id: object, client: LustreClient, runner: RecordingRunner
) -> None:
    with pytest.raises(InvalidArgument, match="project id"):
        client.assign_project(f"{MNT}/pvc-1", project_id)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="project id"):
        client.project_quota(MNT, project_id)  # type: ignore[arg-type]
    assert runner.calls == []


@pytest.mark.parametrize("size", [0, -1, True, 1.5, "1Gi"])
def test_quota_sizes_must_be_positive_bytes(
    size: object, client: LustreClient, runner: RecordingRunner
) -> None:
    with pytest.raises(InvalidArgument, match="hard limit"):
        client.set_project_quota(MNT, 1000, size)  # type: ignore[arg-type]
    assert runner.calls == []


def test_relative_mountpoint_is_refused(client: LustreClient, runner: RecordingRunner) -> None:
    with pytest.raises(InvalidArgument, match="mount point"):
        client.set_project_quota("mnt/testfs", 1000, 1 << 20)
    assert runner.calls == []


def test_failing_setquota_raises_with_argv_and_stderr(
    client: LustreClient, runner: RecordingRunner
) -> None:
    runner.answer(returncode=1, stderr="lfs setquota: quotactl failed: Operation not permitted\n")

    with pytest.raises(ExternalCommandFailed) as caught:
        client.set_project_quota(MNT, 1000, 1 << 20)

    message = str(caught.value)
    assert "lfs setquota -p 1000 -b 0 -B 1024k /mnt/testfs exited 1" in message
    assert "Operation not permitted" in message


def test_project_id_of(client: LustreClient, runner: RecordingRunner) -> None:
    runner.answer(f" 1000 P {MNT}/pvc-1\n")
    runner.answer(f"    0 - {MNT}\n")

    assert client.project_id_of(f"{MNT}/pvc-1") == 1000
    assert client.project_id_of(MNT) == 0
    assert runner.argvs == [
        ["lfs", "project", "-d", f"{MNT}/pvc-1"],
        ["lfs", "project", "-d", MNT],
    ]


def test_project_quota_reads_usage_and_limits(
    client: LustreClient, runner: RecordingRunner
) -> None:
    runner.answer(LFS_QUOTA)

    quota = client.project_quota(MNT, 1000)

    assert runner.argvs == [["lfs", "quota", "-p", "1000", MNT]]
    assert quota.used_bytes == 2097156 * 1024
    assert quota.block_hard_limit_bytes == 2097152 * 1024
    assert quota.over_block_limit
    assert quota.used_inodes == 52


def test_project_quota_for_another_project_is_refused(
    client: LustreClient, runner: RecordingRunner
) -> None:
    runner.answer(LFS_QUOTA)

    with pytest.raises(LustreOutputError, match="reported project 1000, not 1001"):
        client.project_quota(MNT, 1001)


def test_unparseable_output_names_the_command(
    client: LustreClient, runner: RecordingRunner
) -> None:
    runner.answer("Disk quotas for prj 1000 (pid 1000):\nsomething else\n")

    with pytest.raises(LustreOutputError) as caught:
        client.project_quota(MNT, 1000)

    assert str(caught.value).startswith("lfs quota -p 1000 /mnt/testfs: ")


# --- df and health ---------------------------------------------------------------------------


def test_df(client: LustreClient, runner: RecordingRunner) -> None:
    runner.answer(LFS_DF)

    df = client.df(MNT)

    assert runner.argvs == [["lfs", "df", "-v", MNT]]
    assert not df.inodes
    assert df.available == 2651380 * 1024
    assert [t.index for t in df.active_osts] == [0]
    assert [t.index for t in df.inactive_osts] == [1]


def test_df_inodes(client: LustreClient, runner: RecordingRunner) -> None:
    runner.answer(LFS_DF_INODES)

    df = client.df_inodes(MNT)

    assert runner.argvs == [["lfs", "df", "-v", "-i", MNT]]
    assert df.inodes
    assert (df.total, df.used, df.available) == (262144, 3210, 258934)


def test_df_with_garbage_output_raises(client: LustreClient, runner: RecordingRunner) -> None:
    runner.answer("not lfs output\n")

    with pytest.raises(LustreOutputError, match=r"^lfs df -v /mnt/testfs: "):
        client.df(MNT)


@pytest.mark.parametrize(
    ("stdout", "health"),
    [
        ("healthy\n", LustreHealth.HEALTHY),
        ("NOT HEALTHY\n", LustreHealth.NOT_HEALTHY),
        ("LBUG\nNOT HEALTHY\n", LustreHealth.LBUG),
    ],
)
def test_health(
    stdout: str, health: LustreHealth, client: LustreClient, runner: RecordingRunner
) -> None:
    runner.answer(stdout)

    assert client.health() is health
    assert runner.argvs == [["lctl", "get_param", "-n", "health_check"]]


def test_missing_lctl_is_a_failed_command(client: LustreClient, runner: RecordingRunner) -> None:
    runner.answer(returncode=2, stderr="error: get_param: param_path 'health_check': No such file")

    with pytest.raises(ExternalCommandFailed, match="lctl get_param -n health_check exited 2"):
        client.health()


def test_timeout_is_passed_to_the_runner(runner: RecordingRunner) -> None:
    LustreClient(runner, timeout=12.5).assign_project(f"{MNT}/pvc-1", 1000)

    assert runner.calls[0][1] == 12.5
