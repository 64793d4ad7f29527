"""Parsers on output in the formats lfs and lctl really print.

The samples follow lustre/utils/lfs.c: showdf() prints `%-20s %11s %11s %11s %4s %s` then
`[OST:%d]` and status letters, `%-20s: inactive device` for a target it cannot stat, a blank
line and the `filesystem_summary:` row; print_quota() prints `%15s` for the file system (on a
line of its own when longer) then ` %7s%c %6s %7s %7s` for blocks and again for files.
"""

from __future__ import annotations

import pytest

from csi.errors import DriverError, ExternalCommandFailed
from csi.lustre.df import TargetKind, parse_lfs_df, parse_lfs_df_all
from csi.lustre.parsers import (
    LustreHealth,
    LustreOutputError,
    parse_health_check,
    parse_lfs_project,
    parse_lfs_quota,
)

KIB = 1024

LFS_DF = """\
UUID                   1K-blocks        Used   Available Use% Mounted on
testfs-MDT0000_UUID      1819648       12548     1643432   1% /mnt/testfs[MDT:0]
testfs-OST0000_UUID      3944808     1067428     2651380  29% /mnt/testfs[OST:0]
testfs-OST0001_UUID      3944808     3748564           0 100% /mnt/testfs[OST:1] DS
OST0002             : inactive device
testfs-OST0003_UUID      3944808        2048     3718756   1% /mnt/testfs[OST:3]

filesystem_summary:     11834424     4818040     6370136  44% /mnt/testfs

"""

LFS_DF_INODES = """\
UUID                      Inodes       IUsed       IFree IUse% Mounted on
testfs-MDT0000_UUID      1048576        3210     1045366   1% /mnt/testfs[MDT:0]
testfs-OST0000_UUID       262144        1503      260641   1% /mnt/testfs[OST:0]
testfs-OST0001_UUID       262144        1497      260647   1% /mnt/testfs[OST:1]
OST0002             : inactive device

filesystem_summary:       524498        3210      521288   1% /mnt/testfs

"""


# --- lfs df ----------------------------------------------------------------------------------


def test_df_reads_every_target_in_bytes() -> None:
    df = parse_lfs_df(LFS_DF)

    assert df.mountpoint == "/mnt/testfs"
    assert not df.inodes
    assert [(t.kind, t.index) for t in df.targets] == [
        (TargetKind.MDT, 0),
        (TargetKind.OST, 0),
        (TargetKind.OST, 1),
        (TargetKind.OST, 2),
        (TargetKind.OST, 3),
    ]
    ost0 = df.ost(0)
    assert ost0 is not None
    assert ost0.uuid == "testfs-OST0000_UUID"
    assert ost0.name == "testfs-OST0000"
    assert (ost0.total, ost0.used, ost0.available) == (
        3944808 * KIB,
        1067428 * KIB,
        2651380 * KIB,
    )
    assert ost0.active and ost0.status == ""


def test_df_summary_is_the_filesystem_summary_row() -> None:
    df = parse_lfs_df(LFS_DF)

    assert (df.total, df.used, df.available) == (11834424 * KIB, 4818040 * KIB, 6370136 * KIB)


def test_df_status_letters_are_kept() -> None:
    full = parse_lfs_df(LFS_DF).ost(1)

    assert full is not None
    assert full.active
    assert full.status == "DS"  # degraded, out of space
    assert full.available == 0


def test_df_inactive_ost_is_listed_as_inactive_without_figures() -> None:
    df = parse_lfs_df(LFS_DF)

    inactive = df.ost(2)
    assert inactive is not None
    assert not inactive.active
    assert inactive.status == "inactive device"
    assert (inactive.total, inactive.used, inactive.available) == (0, 0, 0)
    assert [t.index for t in df.active_osts] == [0, 1, 3]
    assert [t.index for t in df.inactive_osts] == [2]
    assert [t.index for t in df.mdts] == [0]


def test_df_inactive_row_with_full_uuid_and_hex_index() -> None:
    text = """\
UUID                   1K-blocks        Used   Available Use% Mounted on
testfs-MDT0000_UUID      1819648       12548     1643432   1% /mnt/testfs[MDT:0]
testfs-OST000a_UUID : inactive device
testfs-OST000b_UUID : Input/output error

filesystem_summary:            0           0           0   0% /mnt/testfs
"""
    df = parse_lfs_df(text)

    assert [(t.uuid, t.index, t.active, t.status) for t in df.osts] == [
        ("testfs-OST000a_UUID", 10, False, "inactive device"),
        ("testfs-OST000b_UUID", 11, False, "Input/output error"),
    ]


def test_df_inode_mode_keeps_counts() -> None:
    df = parse_lfs_df(LFS_DF_INODES)

    assert df.inodes
    mdt = df.mdts[0]
    assert (mdt.total, mdt.used, mdt.available) == (1048576, 3210, 1045366)
    assert (df.total, df.used, df.available) == (524498, 3210, 521288)
    assert [t.index for t in df.inactive_osts] == [2]


def test_df_fsname_with_dashes_long_names_and_spaced_mountpoint() -> None:
    # A 21-character UUID overflows %-20s; the mount point may hold spaces and brackets.
    text = """\
UUID                   1K-blocks        Used   Available Use% Mounted on
my-fs-01-MDT0000_UUID      1819648       12548     1643432   1% /mnt/my fs[1][MDT:0]
my-fs-01-OST0000_UUID      3944808     1067428     2651380  29% /mnt/my fs[1][OST:0] f

filesystem_summary:      3944808     1067428     2651380  29% /mnt/my fs[1]
"""
    df = parse_lfs_df(text)

    assert df.mountpoint == "/mnt/my fs[1]"
    assert [t.uuid for t in df.targets] == ["my-fs-01-MDT0000_UUID", "my-fs-01-OST0000_UUID"]
    assert df.osts[0].status == "f"


def test_df_local_stand_in_layout() -> None:
    # Wider columns than lfs prints, one space before the mount point: the parser reads by
    # field, not by column (the real 2.17 layout is in tests/unit/test_real_lustre_fixtures.py).
    text = (
        "UUID                   1K-blocks        Used   Available Use% Mounted on\n"
        "local-MDT0000_UUID       67108864           4    67108860   1% /var/lib/x/mnt[MDT:0]\n"
        "local-OST0000_UUID      268435456        1024   268434432   1% /var/lib/x/mnt[OST:0]\n"
        "OST0001             : inactive device\n"
        "\n"
        "filesystem_summary:     268435456        1024   268434432   1% /var/lib/x/mnt\n"
    )
    df = parse_lfs_df(text)

    assert [t.index for t in df.active_osts] == [0]
    assert df.total == 268435456 * KIB


def test_df_lists_several_file_systems_only_through_parse_all() -> None:
    other = LFS_DF.replace("testfs", "scratch")
    both = LFS_DF + other

    file_systems = parse_lfs_df_all(both)

    assert [fs.mountpoint for fs in file_systems] == ["/mnt/testfs", "/mnt/scratch"]
    with pytest.raises(LustreOutputError, match="2 file systems"):
        parse_lfs_df(both)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "no 'UUID"),
        ("lfs df: cannot open '/mnt/x': No such file or directory\n", "expected the 'UUID"),
        (LFS_DF.split("\n\n")[0] + "\n", "no filesystem_summary"),
        (
            LFS_DF.replace("3944808     1067428", "3.8G     1067428"),
            "not an lfs df row",
        ),
        (
            LFS_DF.replace("     1067428     2651380", "    -1067428     2651380"),
            "not an lfs df row",
        ),
        (LFS_DF.replace("/mnt/testfs[OST:3]", "/mnt/other[OST:3]"), "mount point differs"),
        (LFS_DF.replace("[OST:3]", "[OST:0]"), "listed twice"),
        (LFS_DF.replace("44% /mnt/testfs", "44% /mnt/testfs[OST:9]"), "summary row names"),
        (LFS_DF.replace("OST0002             :", "garbage here        :"), "not an lfs df row"),
        (LFS_DF.replace("[OST:3]", "[XYZ:3]"), "not an MDT/OST row"),
        (LFS_DF + "trailing junk\n", "expected the 'UUID"),
        (
            LFS_DF.replace("UUID                   1K-blocks", "UUID                       bytes"),
            "human-readable",
        ),
    ],
)
def test_df_refuses_what_it_does_not_understand(text: str, problem: str) -> None:
    with pytest.raises(LustreOutputError, match=problem):
        parse_lfs_df(text)


def test_parse_errors_are_driver_errors_that_name_the_line() -> None:
    with pytest.raises(ExternalCommandFailed) as caught:
        parse_lfs_df(LFS_DF.replace("[OST:3]", "[XYZ:3]"))

    assert isinstance(caught.value, DriverError)
    assert "line 6" in str(caught.value)
    assert "[XYZ:3]" in str(caught.value)


# --- lfs quota -p ---------------------------------------------------------------------------

# The column names of Lustre <= 2.15; 2.17's ("bquota blimit bgrace ... igrace") are read in
# tests/unit/test_real_lustre_fixtures.py from captured output.
QUOTA_HEADER = (
    "Disk quotas for prj 1000 (pid 1000):\n"
    "     Filesystem  kbytes   quota   limit   grace   files   quota   limit   grace\n"
)


def test_quota_within_limit() -> None:
    text = QUOTA_HEADER + (
        "    /mnt/testfs    1024       0 1048576       -       3       0       0       -\n"
    )
    quota = parse_lfs_quota(text)

    assert quota.project_id == 1000
    assert quota.mountpoint == "/mnt/testfs"
    assert quota.used_bytes == 1024 * KIB
    assert quota.block_soft_limit_bytes == 0
    assert quota.block_hard_limit_bytes == 1048576 * KIB
    assert quota.used_inodes == 3
    assert (quota.inode_soft_limit, quota.inode_hard_limit) == (0, 0)
    assert (quota.block_grace, quota.inode_grace) == ("-", "-")
    assert not quota.over_block_limit and not quota.over_inode_limit
    assert quota.accurate


def test_quota_over_the_hard_limit_carries_a_star() -> None:
    text = QUOTA_HEADER + (
        "    /mnt/testfs 2097156*      0 2097152       -      52       0       0       -\n"
    )
    quota = parse_lfs_quota(text)

    assert quota.over_block_limit
    assert quota.used_bytes == 2097156 * KIB
    assert not quota.over_inode_limit


def test_quota_soft_limit_grace_and_inode_star() -> None:
    text = QUOTA_HEADER + (
        "    /mnt/testfs 1048580* 1048576 2097152 6d23h59m    1001*   1000    2000    none\n"
    )
    quota = parse_lfs_quota(text)

    assert quota.block_grace == "6d23h59m"
    assert quota.inode_grace == "none"
    assert quota.over_block_limit and quota.over_inode_limit
    assert quota.inode_soft_limit == 1000 and quota.inode_hard_limit == 2000


def test_quota_long_mountpoint_sits_on_its_own_line() -> None:
    text = QUOTA_HEADER + (
        "/mnt/lustre-csi/testfs\n"
        "                   1024       0 1048576       -       3       0       0       -\n"
    )
    quota = parse_lfs_quota(text)

    assert quota.mountpoint == "/mnt/lustre-csi/testfs"
    assert quota.used_bytes == 1024 * KIB
    assert quota.block_hard_limit_bytes == 1048576 * KIB


def test_quota_long_mountpoint_on_the_same_line_is_read_too() -> None:
    # lfs wraps a mount point longer than 15 columns; read it unwrapped too.
    text = QUOTA_HEADER + (
        "/var/lib/lustre-csi/mounts/testfs    1024       0 1048576       -       3       0"
        "       0       -\n"
    )
    assert parse_lfs_quota(text).mountpoint == "/var/lib/lustre-csi/mounts/testfs"


def test_quota_bracketed_figures_are_marked_inaccurate() -> None:
    text = QUOTA_HEADER + (
        "    /mnt/testfs [1048580]      0 2097152       -    [12]       0       0       -\n"
        "Some errors happened when getting quota info. Some devices may be not working or "
        'deactivated. The data in "[]" is inaccurate.\n'
    )
    quota = parse_lfs_quota(text)

    assert not quota.accurate
    assert quota.used_bytes == 1048580 * KIB
    assert quota.used_inodes == 12


def test_quota_default_limit_note_is_accepted() -> None:
    text = QUOTA_HEADER + (
        "    /mnt/testfs       4       0  102400       -       1       0       0       -\n"
        "pid 1000 is using default block quota setting\n"
    )
    quota = parse_lfs_quota(text)

    assert quota.block_hard_limit_bytes == 102400 * KIB
    assert quota.accurate


def test_quota_older_spelling_of_the_title() -> None:
    text = QUOTA_HEADER.replace("for prj 1000", "for project 1000") + (
        "    /mnt/testfs       4       0  102400       -       1       0       0       -\n"
    )
    assert parse_lfs_quota(text).project_id == 1000


GOOD_QUOTA_ROW = "    /mnt/testfs    1024       0 1048576       -       3       0       0       -\n"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty"),
        (GOOD_QUOTA_ROW, "expected 'Disk quotas for prj"),
        (QUOTA_HEADER.replace("prj 1000 (pid", "usr bob (uid") + GOOD_QUOTA_ROW, "not a project"),
        (QUOTA_HEADER, "no quota figures"),
        ("Disk quotas for prj 1000 (pid 1000):\n", "no column header"),
        (QUOTA_HEADER.replace("kbytes", "  used") + GOOD_QUOTA_ROW, "human-readable"),
        # Old and 2.17 column names mixed: neither release prints that.
        (QUOTA_HEADER.replace("kbytes   quota", "kbytes  bquota") + GOOD_QUOTA_ROW, "header"),
        (
            QUOTA_HEADER + GOOD_QUOTA_ROW.replace("1024", "1.5G"),
            "quota figures not understood",
        ),
        (
            QUOTA_HEADER + GOOD_QUOTA_ROW.replace("1024", "[1024"),
            "quota figures not understood",
        ),
        (
            QUOTA_HEADER + GOOD_QUOTA_ROW.replace("       -       3", "    soon       3"),
            "quota figures not understood",
        ),
        (
            QUOTA_HEADER + "                   1024       0 1048576       -       3       0       0"
            "       -\n",
            "without a file system name",
        ),
        (QUOTA_HEADER + "/mnt/lustre-csi/testfs\n", "expected quota figures"),
        (QUOTA_HEADER + GOOD_QUOTA_ROW + GOOD_QUOTA_ROW, "unexpected line"),
        (QUOTA_HEADER + GOOD_QUOTA_ROW + "quotactl ost0 failed.\n", "unexpected line"),
    ],
)
def test_quota_refuses_what_it_does_not_understand(text: str, problem: str) -> None:
    with pytest.raises(LustreOutputError, match=problem):
        parse_lfs_quota(text)


# --- lfs project -d --------------------------------------------------------------------------


def test_project_of_a_directory() -> None:
    attribute = parse_lfs_project(" 1000 P /mnt/testfs/pvc-1\n")

    assert (attribute.project_id, attribute.inherit, attribute.path) == (
        1000,
        True,
        "/mnt/testfs/pvc-1",
    )


def test_project_zero_without_inheritance() -> None:
    attribute = parse_lfs_project("    0 - /mnt/testfs/my dir\n")

    assert (attribute.project_id, attribute.inherit, attribute.path) == (
        0,
        False,
        "/mnt/testfs/my dir",
    )


def test_project_id_wider_than_the_column() -> None:
    assert parse_lfs_project("4294967294 P /mnt/testfs/x\n").project_id == 4294967294


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1000 P\n",
        "1000 X /mnt/testfs/x\n",
        "abc P /mnt/testfs/x\n",
        "4294967296 P /mnt/testfs/x\n",
        " 1000 P /mnt/testfs/a\n 1000 P /mnt/testfs/b\n",
    ],
)
def test_project_output_not_understood(text: str) -> None:
    with pytest.raises(LustreOutputError):
        parse_lfs_project(text)


# --- lctl get_param -n health_check ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "health"),
    [
        ("healthy\n", LustreHealth.HEALTHY),
        ("NOT HEALTHY\n", LustreHealth.NOT_HEALTHY),
        (
            "device testfs-OST0001-osc-ffff8800 reported unhealthy\nNOT HEALTHY\n",
            LustreHealth.NOT_HEALTHY,
        ),
        ("LBUG\nNOT HEALTHY\n", LustreHealth.LBUG),
        # Without -n, lctl prints the parameter's name first.
        ("health_check=healthy\n", LustreHealth.HEALTHY),
        (
            "health_check=\ndevice testfs-OST0001 reported unhealthy\nNOT HEALTHY\n",
            LustreHealth.NOT_HEALTHY,
        ),
    ],
)
def test_health_check(text: str, health: LustreHealth) -> None:
    assert parse_health_check(text) is health


@pytest.mark.parametrize(
    "text",
    [
        "",
        "ok\n",
        "healthy\nhealthy\n",
        "garbage\nNOT HEALTHY\n",
        "health_check=\n",
        "health_check=ok\n",
        "other=healthy\n",
    ],
)
def test_health_check_refuses_unknown_output(text: str) -> None:
    with pytest.raises(LustreOutputError):
        parse_health_check(text)
