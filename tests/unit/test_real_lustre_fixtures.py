"""Every parser on what real Lustre 2.17 printed (tests/fixtures/lustre-2.17, see its README),
and the local stand-in held to the same formats.

The values asserted are the ones in the fixture text: a figure read wrongly here is a capacity
or a quota the driver would act on wrongly on a real file system.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from csi.host.command import DEFAULT_TIMEOUT_S, CommandResult, SubprocessRunner
from csi.lustre.client import LustreClient
from csi.lustre.df import TargetKind, parse_lfs_df
from csi.lustre.layout import (
    LayoutParameters,
    parse_getstripe_directory,
    parse_pool_list,
    parse_pool_members,
)
from csi.lustre.parsers import (
    LustreHealth,
    parse_health_check,
    parse_lfs_project,
    parse_lfs_quota,
)
from csi.node.readiness import check_client
from csi.server_sets import ServerSetTemplate
from provisioner.local import LocalServerSets
from provisioner.local_lustre import LocalLustreCommands, project_quota_report
from provisioner.lustre_reports import getstripe_directory_report

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "lustre-2.17"
KIB = 1024
GiB = 1 << 30

# Captured for the record and read by no parser in csi/ or provisioner/: the boot script
# (provisioner/kubevirt/cloudinit.py) greps llog_print's output in bash, and the others are
# logs of what the servers did.
NOT_PARSED = {
    "README.md",
    "llog_print-params.txt",
    "boot-log-first-real-mds0.txt",
    "boot-log-first-real-oss0.txt",
    "boot-log-first-real-oss1.txt",
    "tunefs.lustre-dryrun-MDT0000.txt",
    "tunefs.lustre-dryrun-OST0000.txt",
    "tunefs.lustre-dryrun-OST0400.txt",
    # A file's layout: the tier reads it (`lfs getstripe -c/-S/-p` and the obdidx table) to
    # check where a volume's files landed; the driver sets directory defaults only.
    "lfs-getstripe-file-striped.txt",
}
HEALTH_FIXTURES = [
    "lctl-get_param-health_check-mds0.txt",
    "lctl-get_param-health_check-oss0.txt",
    "lctl-get_param-n-health_check-mds0.txt",
    "lctl-get_param-n-health_check-oss0.txt",
    "lctl-get_param-health_check-oss1.txt",
    "lctl-get_param-n-health_check-oss1.txt",
]
PARSED = {
    "lfs-df.txt",
    "lfs-df-i.txt",
    "lfs-df-v.txt",
    "lfs-df-v-i.txt",
    "lfs-df-two-osts.txt",
    "lfs-df-v-pool.txt",
    "lctl-get_param-n-version.txt",
    "lctl-list_nids-client.txt",
    "lfs-getname-i.txt",
    "lctl-get_param-state-connected.txt",
    "lctl-get_param-state-all-mounts-oss-just-killed.txt",
    "lfs-project-d.txt",
    "lfs-quota-p.txt",
    "lfs-quota-p-unknown.txt",
    "lfs-getstripe-d-plain.txt",
    "lfs-getstripe-d-pool.txt",
    "lfs-pool_list-mountpoint.txt",
    "lfs-pool_list-pool.txt",
    "lctl-pool_list-fs.txt",
    "lctl-pool_list-pool.txt",
    *HEALTH_FIXTURES,
}


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_every_captured_output_is_checked_by_a_parser_or_known_to_be_unread() -> None:
    # A new capture must land in PARSED (with a test below) or NOT_PARSED, never go unread.
    assert {path.name for path in FIXTURES.iterdir()} == PARSED | NOT_PARSED


# --- lfs quota -p ----------------------------------------------------------------------------


def test_real_project_quota_reads_usage_and_the_hard_limits() -> None:
    quota = parse_lfs_quota(fixture("lfs-quota-p.txt"))

    assert (quota.project_id, quota.mountpoint) == (1000, "/mnt/real")
    assert quota.used_bytes == 9220 * KIB
    assert (quota.block_soft_limit_bytes, quota.block_hard_limit_bytes) == (0, 10240 * KIB)
    assert quota.used_inodes == 2
    assert (quota.inode_soft_limit, quota.inode_hard_limit) == (0, 1000)
    assert (quota.block_grace, quota.inode_grace) == ("-", "-")
    assert not quota.over_block_limit and not quota.over_inode_limit
    assert quota.accurate


def test_real_quota_of_a_project_with_no_limits_and_no_files_is_all_zero() -> None:
    quota = parse_lfs_quota(fixture("lfs-quota-p-unknown.txt"))

    assert (quota.project_id, quota.mountpoint) == (4242, "/mnt/real")
    assert (quota.used_bytes, quota.used_inodes) == (0, 0)
    assert (quota.block_soft_limit_bytes, quota.block_hard_limit_bytes) == (0, 0)
    assert (quota.inode_soft_limit, quota.inode_hard_limit) == (0, 0)
    assert quota.accurate


def test_real_quota_title_with_a_project_name_instead_of_unknown() -> None:
    # With the id in /etc/projid, lfs prints the name where 2.17 printed "<unknown>".
    text = fixture("lfs-quota-p.txt").replace("prj <unknown> (pid", "prj scratch (pid")

    assert parse_lfs_quota(text).project_id == 1000


def test_real_quota_over_its_limit_keeps_the_star() -> None:
    text = fixture("lfs-quota-p.txt").replace("    9220       0", "   10244*      0")

    quota = parse_lfs_quota(text)
    assert quota.over_block_limit and quota.used_bytes == 10244 * KIB


class _Answers:
    """A CommandRunner that prints a captured output for the one argv expected."""

    def __init__(self, argv: list[str], stdout: str) -> None:
        self._argv, self._stdout = argv, stdout

    def run(self, argv: Sequence[str], *, timeout: float = DEFAULT_TIMEOUT_S) -> CommandResult:
        assert list(argv) == self._argv
        return CommandResult(tuple(argv), 0, self._stdout, "")


def test_real_quota_reaches_the_driver_through_the_client() -> None:
    # What NodeGetVolumeStats and the controller read: LustreClient.project_quota.
    runner = _Answers(["lfs", "quota", "-p", "1000", "/mnt/real"], fixture("lfs-quota-p.txt"))

    quota = LustreClient(runner).project_quota("/mnt/real", 1000)

    assert quota.block_hard_limit_bytes == 10240 * KIB and quota.used_bytes == 9220 * KIB


# --- lfs df [-i] -----------------------------------------------------------------------------


def test_real_df_reads_the_mdt_and_ost_rows_and_the_data_capacity() -> None:
    df = parse_lfs_df(fixture("lfs-df.txt"))

    assert (df.mountpoint, df.inodes) == ("/mnt/real", False)
    assert [(t.name, t.kind, t.index, t.active) for t in df.targets] == [
        ("real-MDT0000", TargetKind.MDT, 0, True),
        ("real-OST0000", TargetKind.OST, 0, True),
    ]
    mdt, ost = df.targets
    assert (mdt.total, mdt.used, mdt.available) == (585656 * KIB, 1776 * KIB, 516676 * KIB)
    assert (ost.total, ost.used, ost.available) == (1908940 * KIB, 9604 * KIB, 1769856 * KIB)
    # The summary is the OSTs' space only: MDT space holds no file data.
    assert (df.total, df.used, df.available) == (ost.total, ost.used, ost.available)
    assert [t.index for t in df.active_osts] == [0] and not df.inactive_osts


def test_real_df_inodes_reads_counts_and_the_file_limit() -> None:
    df = parse_lfs_df(fixture("lfs-df-i.txt"))

    assert df.inodes
    mdt, ost = df.targets
    assert (mdt.kind, mdt.total, mdt.used, mdt.available) == (TargetKind.MDT, 419432, 309, 419123)
    assert (ost.kind, ost.total, ost.used, ost.available) == (TargetKind.OST, 131072, 302, 130770)
    # Files need an MDT inode and an OST object: lfs reports the smaller free count.
    assert (df.total, df.used, df.available) == (131079, 309, 130770)


def test_real_df_as_the_driver_runs_it_with_v_reads_the_same_rows() -> None:
    # csi/lustre/client.py runs `lfs df -v [-i]`: -v only adds rows for deactivated OSTs.
    df = parse_lfs_df(fixture("lfs-df-v.txt"))
    inodes = parse_lfs_df(fixture("lfs-df-v-i.txt"))

    assert [(t.name, t.active) for t in df.targets] == [("real-MDT0000", True),
                                                        ("real-OST0000", True)]
    assert (df.total, df.used, df.available) == (1908940 * KIB, 9588 * KIB, 1769872 * KIB)
    assert inodes.inodes and (inodes.total, inodes.used, inodes.available) == (131079, 309, 130770)
    assert [t.index for t in df.active_osts] == [0] and not df.inactive_osts


def test_real_df_after_growth_sums_both_osts() -> None:
    # After the provisioner added an OSS: OST0001 joined the live file system.
    df = parse_lfs_df(fixture("lfs-df-two-osts.txt"))

    assert [t.index for t in df.active_osts] == [0, 1]
    assert df.total == 2 * 1908940 * KIB == 3817880 * KIB
    assert (df.used, df.available) == (11048 * KIB, 3564352 * KIB)


def test_real_df_counts_an_ost_pools_ost_by_its_index_block() -> None:
    # The tier's file system with the OST pool `flash`: its one OST has index 1024 (the first
    # pool's block) and, as Lustre's own summary says, counts in the file system's capacity.
    df = parse_lfs_df(fixture("lfs-df-v-pool.txt"))

    assert [(t.name, t.index) for t in df.active_osts] == [("real-OST0000", 0),
                                                           ("real-OST0400", 1024)]
    assert (df.total, df.used, df.available) == (3817880 * KIB, 10984 * KIB, 3556176 * KIB)


# --- lctl get_param -n version ---------------------------------------------------------------


def test_real_client_version_and_nid_make_the_node_ready() -> None:
    class Client:
        def run(self, argv: Sequence[str], *, timeout: float = DEFAULT_TIMEOUT_S
                ) -> CommandResult:
            answers = {"version": fixture("lctl-get_param-n-version.txt"),
                       "list_nids": "10.47.0.250@tcp\n"}
            return CommandResult(tuple(argv), 0, answers[argv[-1]], "")

    readiness = check_client(Client(), require_network=True)

    assert readiness.ready and readiness.message == "2.17.0; NIDs 10.47.0.250@tcp"


# --- lfs getname -i, lctl get_param mdc/osc state (csi/lustre/targets.py) --------------------


def test_real_mount_instance_and_its_import_states() -> None:
    from csi.lustre.targets import TargetStates, parse_import_states, parse_instance

    assert parse_instance(fixture("lfs-getname-i.txt")) == "ff25c72d4439e800"
    states = parse_import_states(fixture("lctl-get_param-state-connected.txt"))
    assert states == {"real-MDT0000": "FULL", "real-OST0000": "FULL"}
    assert TargetStates(states).away == {}


def test_real_imports_still_read_full_just_after_a_server_dies() -> None:
    # Captured seconds after the OSS was killed, every mount of the client: the client notices
    # at its next RPC timeout, so until then the bounded statfs is what says "away".
    from csi.lustre.targets import parse_import_states

    text = fixture("lctl-get_param-state-all-mounts-oss-just-killed.txt")
    assert text.count(".state=") == 8
    assert set(parse_import_states(text).values()) == {"FULL"}


def test_real_client_nid_is_on_the_storage_network() -> None:
    assert fixture("lctl-list_nids-client.txt").split() == ["10.47.0.250@tcp"]


# --- lfs project -d --------------------------------------------------------------------------


def test_real_project_of_a_directory_with_inheritance() -> None:
    attribute = parse_lfs_project(fixture("lfs-project-d.txt"))

    assert (attribute.project_id, attribute.inherit, attribute.path) == (
        1000,
        True,
        "/mnt/real/vol",
    )


# --- lctl get_param [-n] health_check --------------------------------------------------------


@pytest.mark.parametrize("name", HEALTH_FIXTURES)
def test_real_health_check_with_and_without_n_is_healthy(name: str) -> None:
    assert parse_health_check(fixture(name)) is LustreHealth.HEALTHY


def test_real_health_check_reaches_the_driver_through_the_client() -> None:
    text = fixture("lctl-get_param-n-health_check-oss0.txt")
    runner = _Answers(["lctl", "get_param", "-n", "health_check"], text)

    assert LustreClient(runner).health() is LustreHealth.HEALTHY


# --- lfs getstripe -d, lfs pool_list ----------------------------------------------------------


def test_real_directory_defaults_read_count_size_and_pool() -> None:
    # A static PV's directory (stripeCount 2, stripeSize 4Mi) and a pool-bound volume's
    # (ostPool flash, stripeCount -1, no size: the file system's 4 MiB).
    assert parse_getstripe_directory(fixture("lfs-getstripe-d-plain.txt")) == LayoutParameters(
        stripe_count=2, stripe_size=4 << 20
    )
    assert parse_getstripe_directory(fixture("lfs-getstripe-d-pool.txt")) == LayoutParameters(
        stripe_count=-1, stripe_size=4 << 20, pool="flash"
    )


def test_real_pool_lists_reach_the_driver_as_each_pool_and_its_ost_count() -> None:
    assert parse_pool_list(fixture("lfs-pool_list-mountpoint.txt"), "real") == ["flash"]
    members = parse_pool_members(fixture("lfs-pool_list-pool.txt"), "real", "flash")
    assert members == ["real-OST0400_UUID"]

    class PoolLists:
        def run(self, argv: Sequence[str], *, timeout: float = DEFAULT_TIMEOUT_S) -> CommandResult:
            name = {"/mnt/real": "lfs-pool_list-mountpoint.txt",
                    "real.flash": "lfs-pool_list-pool.txt"}[argv[-1]]
            assert list(argv[:-1]) == ["lfs", "pool_list"]
            return CommandResult(tuple(argv), 0, fixture(name), "")

    assert LustreClient(PoolLists()).pools("/mnt/real", "real") == {"flash": 1}


def test_real_mgs_pool_lists_have_the_lines_the_boot_script_greps_for() -> None:
    # The MDS boot script (provisioner/kubevirt/cloudinit.py) makes a pool unless
    # `lctl pool_list FS` has the line FS.POOL, and adds an OST unless `lctl pool_list FS.POOL`
    # has FS-OSTxxxx_UUID: both whole lines (grep -qxF), as the MGS printed them here.
    fs_listing = fixture("lctl-pool_list-fs.txt")
    pool_listing = fixture("lctl-pool_list-pool.txt")
    assert "real.flash" in fs_listing.splitlines()
    assert "real-OST0400_UUID" in pool_listing.splitlines()
    # The same format lfs prints on a client, so one parser reads both.
    assert parse_pool_list(fs_listing, "real") == ["flash"]
    assert parse_pool_members(pool_listing, "real", "flash") == ["real-OST0400_UUID"]


# --- the local stand-in speaks the same formats ----------------------------------------------


@pytest.mark.parametrize(
    ("layout", "name"),
    [
        ({"stripe_count": 2, "stripe_size": 4 << 20}, "lfs-getstripe-d-plain.txt"),
        ({"stripe_count": -1, "pool": "flash"}, "lfs-getstripe-d-pool.txt"),
    ],
)
def test_stand_in_getstripe_is_the_real_text(layout: dict, name: str) -> None:
    # Byte for byte, the default stripe size (4 MiB on 2.17) included.
    assert getstripe_directory_report(layout) == fixture(name)


def test_stand_in_pool_lists_are_the_real_text(tmp_path: Path) -> None:
    sets = LocalServerSets(tmp_path)
    sets.ensure_file_system("real", replace(TEMPLATE, min_osts=1, ost_pools="flash:1"))
    stand_in = LocalLustreCommands(sets, SubprocessRunner())
    root = str(sets.namespace_root("real"))
    assert stand_in.run(["lfs", "pool_list", root]).stdout == fixture(
        "lfs-pool_list-mountpoint.txt")
    assert stand_in.run(["lfs", "pool_list", "real.flash"]).stdout == fixture(
        "lfs-pool_list-pool.txt")


def test_stand_in_quota_report_is_the_real_text_for_the_real_figures() -> None:
    assert project_quota_report(
        1000, "/mnt/real", used_kib=9220, block_limits=(0, 10240), files=2, inode_limits=(0, 1000)
    ) == fixture("lfs-quota-p.txt")
    assert project_quota_report(
        4242, "/mnt/real", used_kib=0, block_limits=(0, 0), files=0, inode_limits=(0, 0)
    ) == fixture("lfs-quota-p-unknown.txt")


TEMPLATE = replace(ServerSetTemplate(), ost_size_bytes=10 * GiB, min_osts=2, max_osts=5)


def _column_ends(line: str) -> list[int]:
    return [match.end() for match in re.finditer(r"\S+", line)]


def test_stand_in_quota_of_a_project_parses_like_the_real_one(tmp_path: Path) -> None:
    sets = LocalServerSets(tmp_path)
    sets.ensure_file_system("real", TEMPLATE)
    root = sets.namespace_root("real")
    volume = root / "vol"
    volume.mkdir()
    (volume / "data").write_bytes(b"x" * (1 << 20))
    stand_in = LocalLustreCommands(sets, SubprocessRunner())
    for argv in (
        ["lfs", "project", "-p", "1000", "-s", str(volume)],
        ["lfs", "setquota", "-p", "1000", "-b", "0", "-B", "10240k", "-I", "1000", str(root)],
    ):
        assert stand_in.run(argv).returncode == 0

    answer = stand_in.run(["lfs", "quota", "-p", "1000", str(root)]).stdout
    real_text = fixture("lfs-quota-p.txt")
    ours, real = parse_lfs_quota(answer), parse_lfs_quota(real_text)

    # Same title and header, byte for byte; the figures under the same columns.
    assert answer.splitlines()[:2] == real_text.splitlines()[:2]
    assert _column_ends(answer.splitlines()[-1]) == _column_ends(real_text.splitlines()[-1])[1:]
    assert replace(ours, mountpoint=real.mountpoint, used_bytes=0, used_inodes=0) == replace(
        real, used_bytes=0, used_inodes=0
    )
    assert (1 << 20) <= ours.used_bytes < (2 << 20) and ours.used_inodes == 2


@pytest.mark.parametrize(("flag", "name"), [([], "lfs-df.txt"), (["-i"], "lfs-df-i.txt")])
def test_stand_in_df_prints_the_real_header_and_columns(
    tmp_path: Path, flag: list[str], name: str
) -> None:
    sets = LocalServerSets(tmp_path)
    sets.ensure_file_system("real", replace(TEMPLATE, min_osts=1))
    root = str(sets.namespace_root("real"))
    answer = LocalLustreCommands(sets, SubprocessRunner()).run(["lfs", "df", *flag, root]).stdout
    real_lines = fixture(name).splitlines()
    our_lines = answer.splitlines()

    assert our_lines[0] == real_lines[0]
    # Figures end in the same columns (the mount point after them is a local path).
    for ours, real in zip(our_lines[1:], real_lines[1:], strict=True):
        assert _column_ends(ours)[:5] == _column_ends(real)[:5]
    ours_df, real_df = parse_lfs_df(answer), parse_lfs_df(fixture(name))
    assert [(t.kind, t.index) for t in ours_df.targets] == [
        (t.kind, t.index) for t in real_df.targets
    ]
    if flag:
        # As on real Lustre: used files from the MDT, free the smaller of MDT and OST free.
        mdt, ost = ours_df.targets
        assert ours_df.available == min(mdt.available, ost.available)
        assert ours_df.total == ours_df.used + ours_df.available


@pytest.mark.parametrize(
    "argv", [["lctl", "get_param", "-n", "health_check"], ["lctl", "get_param", "health_check"]]
)
def test_stand_in_health_check_answers_as_real_lustre(tmp_path: Path, argv: list[str]) -> None:
    stand_in = LocalLustreCommands(LocalServerSets(tmp_path), SubprocessRunner())
    name = "lctl-get_param-n-health_check-mds0.txt" if "-n" in argv else HEALTH_FIXTURES[0]

    assert stand_in.run(argv).stdout == fixture(name)
