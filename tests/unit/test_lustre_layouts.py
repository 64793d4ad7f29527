"""Lustre layouts: the parameter forms, the exact `lfs setstripe` argv, the `lfs getstripe -d`
and `lfs pool_list` formats, and the stand-in answering them as Lustre 2.17 does."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from csi.controller.parameters import (
    parse_mutable_parameters,
    parse_volume_parameters,
)
from csi.controller.records import InvalidRecord, parse_record
from csi.errors import ExternalCommandFailed, InvalidArgument
from csi.host.command import SubprocessRunner
from csi.lustre.client import (
    LustreClient,
    build_getstripe_directory_argv,
    build_pool_list_argv,
    build_set_inode_limit_argv,
    build_setstripe_argv,
)
from csi.lustre.layout import (
    Extent,
    LayoutParameters,
    check_layout_fits,
    parse_getstripe_directory,
    parse_layout,
    parse_pool_list,
    parse_pool_members,
)
from csi.server_sets import ServerSetTemplate
from provisioner.local import LocalServerSets
from provisioner.local_lustre import LocalLustreCommands

MiB = 1 << 20
DIR = "/mnt/testfs/csi-volumes/v-0123456789abcdef"

# As lov_dump_user_lmm_header prints a plain directory default (Lustre 2.17 liblustreapi.c).
GETSTRIPE_PLAIN = (
    "stripe_count:  4 stripe_size:   4194304 pattern:       raid0 stripe_offset: -1 "
    "pool:          flash\n\n"
)
# As lov_dump_comp_v1 prints a progressive directory default (header, then each component:
# its lcme_* lines, then its fields on one line, each field after a six-space indent).
_FIELDS = "       stripe_size:   4194304       pattern:       raid0       stripe_offset: -1\n\n"
GETSTRIPE_PFL = f"""\
  lcm_layout_gen:    0
  lcm_mirror_count:  1
  lcm_entry_count:   2
    lcme_id:             N/A
    lcme_mirror_id:      N/A
    lcme_flags:          0
    lcme_extent.e_start: 0
    lcme_extent.e_end:   67108864
      stripe_count:  1{_FIELDS}\
    lcme_id:             N/A
    lcme_mirror_id:      N/A
    lcme_flags:          0
    lcme_extent.e_start: 67108864
    lcme_extent.e_end:   EOF
      stripe_count:  -1{_FIELDS}"""


# --- parameter forms ---------------------------------------------------------------------------


def test_plain_layout_parameters_parse_to_their_values() -> None:
    layout = parse_layout({"stripeCount": "-1", "stripeSize": "4Mi", "ostPool": "flash"})
    assert layout == LayoutParameters(stripe_count=-1, stripe_size=4 * MiB, pool="flash")
    assert layout.to_attributes() == {"stripeCount": "-1", "stripeSize": "4Mi", "ostPool": "flash"}
    assert parse_layout(layout.to_attributes()) == layout


def test_progressive_layout_parses_extents_in_order_to_eof() -> None:
    layout = parse_layout({"progressiveLayout": "64Mi:1, 1Gi:4, eof:-1"})
    assert layout.extents == (Extent(64 * MiB, 1), Extent(1 << 30, 4), Extent(None, -1))
    assert layout.to_attributes() == {"progressiveLayout": "64Mi:1,1Gi:4,eof:-1"}


@pytest.mark.parametrize(
    ("parameters", "named", "why"),
    [
        ({"stripeCount": "0"}, "stripeCount", "-1 (every OST) or a whole number from 1 to 2000"),
        ({"stripeCount": "2001"}, "stripeCount", "from 1 to 2000"),
        ({"stripeCount": "two"}, "stripeCount", "from 1 to 2000"),
        ({"stripeSize": "100Ki"}, "stripeSize", "not a multiple of 64Ki"),
        ({"stripeSize": "1M"}, "stripeSize", "not a multiple of 64Ki"),  # 10^6 bytes
        ({"stripeSize": "4Gi"}, "stripeSize", "is above"),
        ({"stripeSize": "-1"}, "stripeSize", "not a size"),
        ({"ostPool": "a" * 16}, "ostPool", "1-15 characters"),
        ({"ostPool": "fs.pool"}, "ostPool", "1-15 characters"),
        ({"ostPool": "ignore"}, "ostPool", "1-15 characters"),
        ({"progressiveLayout": "eof:1"}, "progressiveLayout", "at least two extents"),
        ({"progressiveLayout": "64Mi:1,32Mi:2,eof:4"}, "progressiveLayout", "does not follow"),
        ({"progressiveLayout": "64Mi:1,1Gi:2"}, "progressiveLayout", "must end at eof"),
        ({"progressiveLayout": "eof:1,64Mi:2"}, "progressiveLayout", "only the last"),
        ({"progressiveLayout": "100Ki:1,eof:2"}, "progressiveLayout", "multiple of 64Ki"),
        ({"progressiveLayout": "64Mi:0,eof:2"}, "progressiveLayout", "must be -1 or 1-2000"),
        ({"progressiveLayout": "64Mi,eof:2"}, "progressiveLayout", "<end>:<stripe count>"),
        ({"stripeCount": "2", "progressiveLayout": "64Mi:1,eof:2"}, "stripeCount", "not both"),
        ({"progressiveLayout": "1Mi:1,eof:2", "stripeSize": "4Mi"}, "progressiveLayout",
         "extent end 1Mi is not a multiple of the stripe size 4Mi"),
    ],
)
def test_bad_layout_values_name_the_parameter_and_what_it_takes(
    parameters: dict[str, str], named: str, why: str
) -> None:
    with pytest.raises(InvalidArgument, match=named) as raised:
        parse_volume_parameters(parameters, volume_name="v", default_fsname="testfs")
    assert why in str(raised.value)


def test_a_layout_must_fit_the_file_systems_osts_and_pools() -> None:
    fits = {"fsname": "testfs", "ost_count": 4, "pools": {"flash": 2}}
    check_layout_fits(parse_layout({"stripeCount": "4"}), **fits)  # type: ignore[arg-type]
    check_layout_fits(parse_layout({"stripeCount": "-1", "ostPool": "flash"}), **fits)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match=r"stripeCount: stripe count 5 is above the 4 OST"):
        check_layout_fits(parse_layout({"stripeCount": "5"}), **fits)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match=r"above the 2 OST\(s\) of pool 'flash'; it takes"):
        check_layout_fits(parse_layout({"stripeCount": "3", "ostPool": "flash"}), **fits)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match=r"progressiveLayout: stripe count 8"):
        check_layout_fits(parse_layout({"progressiveLayout": "1Mi:1,eof:8"}), **fits)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match=r"ostPool: 'disk' is not an OST pool .*flash"):
        check_layout_fits(parse_layout({"ostPool": "disk"}), **fits)  # type: ignore[arg-type]


def test_storage_class_layout_is_part_of_what_a_repeated_create_must_match() -> None:
    plain = parse_volume_parameters({}, volume_name="v", default_fsname="testfs")
    striped = parse_volume_parameters(
        {"stripeCount": "2"}, volume_name="v", default_fsname="testfs"
    )
    assert "layout" not in plain.fingerprint()  # records from before layouts still match
    assert striped.fingerprint() != plain.fingerprint()
    assert striped.fingerprint()["layout"] == {"stripeCount": "2"}


def test_a_volume_attributes_class_overrides_the_storage_class_layout() -> None:
    params = parse_volume_parameters(
        {"stripeCount": "2", "stripeSize": "1Mi"},
        volume_name="v",
        default_fsname="testfs",
        mutable_parameters={"progressiveLayout": "64Mi:1,eof:-1", "inodeLimit": "1000"},
    )
    assert params.layout == LayoutParameters(
        stripe_size=MiB, extents=(Extent(64 * MiB, 1), Extent(None, -1))
    )
    assert params.inode_limit == 1000


def test_modify_takes_only_mutable_keys_and_says_which_are_fixed() -> None:
    with pytest.raises(InvalidArgument, match=r"ostSize cannot change after a volume is made"):
        parse_mutable_parameters({"ostSize": "2Ti"})
    with pytest.raises(InvalidArgument, match=r"unknown mutable parameter\(s\) XXX_FakeKey.*"
                       r"stripeCount, stripeSize, ostPool, progressiveLayout, inodeLimit"):
        parse_mutable_parameters({"XXX_FakeKey": "XXX_FakeValue"})
    with pytest.raises(InvalidArgument, match=r"inodeLimit: '-5' must be a whole number"):
        parse_mutable_parameters({"inodeLimit": "-5"})
    changes = parse_mutable_parameters({"stripeSize": "2Mi", "inodeLimit": "0"})
    assert (changes.given, changes.inode_limit) == ({"stripeSize"}, 0)


def test_a_change_replaces_only_the_keys_given() -> None:
    current = LayoutParameters(stripe_count=2, stripe_size=MiB, pool="flash")
    change = parse_mutable_parameters({"progressiveLayout": "4Mi:1,eof:4"})
    changed = current.changed_by(change.layout, set(change.given))
    # The extents replace the plain count; size and pool stay.
    assert changed == LayoutParameters(
        stripe_size=MiB, pool="flash", extents=(Extent(4 * MiB, 1), Extent(None, 4))
    )
    back = changed.changed_by(LayoutParameters(stripe_count=-1), {"stripeCount"})
    assert back == LayoutParameters(stripe_count=-1, stripe_size=MiB, pool="flash")
    # A new stripe size must still fit the extents the directory keeps.
    with pytest.raises(InvalidArgument, match="extent end 4Mi is not a multiple"):
        changed.changed_by(LayoutParameters(stripe_size=8 * MiB), {"stripeSize"})


# --- argv ----------------------------------------------------------------------------------------


def test_setstripe_argv_for_a_plain_layout() -> None:
    layout = parse_layout({"stripeCount": "-1", "stripeSize": "4Mi", "ostPool": "flash"})
    assert build_setstripe_argv(DIR, layout) == [
        "lfs", "setstripe", "-c", "-1", "-S", "4194304", "-p", "flash", DIR,
    ]
    assert build_setstripe_argv(DIR, parse_layout({"stripeSize": "64Ki"})) == [
        "lfs", "setstripe", "-S", "65536", DIR,
    ]


def test_setstripe_argv_for_a_progressive_layout_repeats_size_and_pool_per_extent() -> None:
    layout = parse_layout(
        {"progressiveLayout": "4Mi:1,64Mi:4,eof:-1", "stripeSize": "1Mi", "ostPool": "flash"}
    )
    assert build_setstripe_argv(DIR, layout) == [
        "lfs", "setstripe",
        "-E", "4194304", "-c", "1", "-S", "1048576", "-p", "flash",
        "-E", "67108864", "-c", "4", "-S", "1048576", "-p", "flash",
        "-E", "eof", "-c", "-1", "-S", "1048576", "-p", "flash",
        DIR,
    ]


def test_getstripe_pool_list_and_inode_limit_argv() -> None:
    assert build_getstripe_directory_argv(DIR) == ["lfs", "getstripe", "-d", DIR]
    assert build_pool_list_argv("/mnt/testfs") == ["lfs", "pool_list", "/mnt/testfs"]
    assert build_pool_list_argv("testfs.flash") == ["lfs", "pool_list", "testfs.flash"]
    assert build_set_inode_limit_argv("/mnt/testfs", 1000, 5000) == [
        "lfs", "setquota", "-p", "1000", "-i", "0", "-I", "5000", "/mnt/testfs",
    ]


def test_a_client_refuses_to_set_a_layout_that_sets_nothing() -> None:
    with pytest.raises(InvalidArgument, match="sets nothing"):
        LustreClient(SubprocessRunner()).set_default_layout(DIR, LayoutParameters())


# --- output formats ------------------------------------------------------------------------------


def test_getstripe_of_a_plain_directory_default() -> None:
    assert parse_getstripe_directory(GETSTRIPE_PLAIN) == LayoutParameters(
        stripe_count=4, stripe_size=4 * MiB, pool="flash"
    )


def test_getstripe_of_a_progressive_directory_default() -> None:
    assert parse_getstripe_directory(GETSTRIPE_PFL) == LayoutParameters(
        stripe_size=4 * MiB, extents=(Extent(64 * MiB, 1), Extent(None, -1))
    )


def test_pool_list_formats() -> None:
    assert parse_pool_list("Pools from testfs:\ntestfs.flash\ntestfs.disk\n", "testfs") == [
        "flash", "disk",
    ]
    members = "Pool: testfs.flash\ntestfs-OST0000_UUID\ntestfs-OST000a_UUID\n"
    assert parse_pool_members(members, "testfs", "flash") == [
        "testfs-OST0000_UUID", "testfs-OST000a_UUID",
    ]


# --- the stand-in speaks the same formats --------------------------------------------------------


@pytest.fixture
def standin(tmp_path: Path) -> tuple[LustreClient, LocalServerSets, Path]:
    sets = LocalServerSets(tmp_path)
    sets.ensure_file_system("testfs", replace(ServerSetTemplate(), min_osts=3))
    directory = sets.namespace_root("testfs") / "csi-volumes" / "v"
    directory.mkdir(parents=True)
    return LustreClient(LocalLustreCommands(sets, SubprocessRunner())), sets, directory


def test_standin_round_trips_plain_and_progressive_layouts(
    standin: tuple[LustreClient, LocalServerSets, Path],
) -> None:
    client, _, directory = standin
    default = client.default_layout(directory)
    assert (default.stripe_count, default.stripe_size) == (1, 4 * MiB)  # the file system's
    plain = parse_layout({"stripeCount": "2", "stripeSize": "4Mi"})
    client.set_default_layout(directory, plain)
    assert client.default_layout(directory) == plain
    progressive = parse_layout({"progressiveLayout": "64Mi:1,eof:-1", "stripeSize": "1Mi"})
    client.set_default_layout(directory, progressive)  # replaces the whole default
    assert client.default_layout(directory) == progressive


def test_standin_prints_getstripe_exactly_as_lustre_does(
    standin: tuple[LustreClient, LocalServerSets, Path],
) -> None:
    _, sets, directory = standin
    runner = LocalLustreCommands(sets, SubprocessRunner())
    runner.run(["lfs", "setstripe", "-E", "64M", "-c", "1", "-E", "-1", "-c", "-1", str(directory)])
    assert runner.run(["lfs", "getstripe", "-d", str(directory)]).stdout == GETSTRIPE_PFL
    runner.run(["lfs", "setstripe", "-c", "4", "-S", "4M", str(directory)])
    shown = runner.run(["lfs", "getstripe", "-d", str(directory)]).stdout
    assert shown == GETSTRIPE_PLAIN.replace(" pool:          flash", "")


def test_standin_lists_pools_and_refuses_an_unknown_pool_as_lfs_does(
    standin: tuple[LustreClient, LocalServerSets, Path],
) -> None:
    client, sets, directory = standin
    root = sets.namespace_root("testfs")
    assert client.pools(root, "testfs") == {}
    with pytest.raises(ExternalCommandFailed, match=r"pool 'testfs.flash' does not exist"):
        client.set_default_layout(directory, parse_layout({"ostPool": "flash"}))
    sets.ensure_file_system("pooled", replace(ServerSetTemplate(), ost_pools="flash:2"))
    pooled = sets.namespace_root("pooled")
    assert client.pools(pooled, "pooled") == {"flash": 2}
    shown = LocalLustreCommands(sets, SubprocessRunner()).run(["lfs", "pool_list", "pooled.flash"])
    assert shown.stdout == "Pool: pooled.flash\npooled-OST0400_UUID\npooled-OST0401_UUID\n"
    directory = pooled / "v"
    directory.mkdir()
    client.set_default_layout(directory, parse_layout({"ostPool": "flash"}))
    assert client.default_layout(directory).pool == "flash"


def test_standin_refuses_a_stripe_size_lfs_refuses(
    standin: tuple[LustreClient, LocalServerSets, Path],
) -> None:
    _, sets, directory = standin
    runner = LocalLustreCommands(sets, SubprocessRunner())
    result = runner.run(["lfs", "setstripe", "-S", "100k", str(directory)])
    assert result.returncode == 22
    assert "invalid stripe size '100k'" in result.stderr
    unaligned = runner.run(["lfs", "setstripe", "-E", "1M", "-S", "4M", "-E", "-1",
                            str(directory)])
    assert unaligned.returncode == 22
    assert "The component end must be aligned by the stripe size" in unaligned.stderr


@pytest.mark.parametrize(
    "layout",
    [{"stripeCount": "0"}, {"stripe_count": "2"}, {"stripeSize": 1048576}, ["stripeCount"]],
)
def test_a_record_with_a_layout_the_driver_never_writes_is_not_trusted(layout: object) -> None:
    document = {
        "name": "v", "volume_id": "v1:shared:testfs:v", "kind": "shared", "fsname": "testfs",
        "subdir": "v", "capacity_bytes": 1 << 30, "project_id": 1000, "parameters": {},
        "state": "ready", "directory": "csi-volumes/v-0123456789abcdef",
    }
    assert parse_record(document, fsname="testfs", subdir="v").layout == {}
    with pytest.raises(InvalidRecord, match="layout"):
        parse_record({**document, "layout": layout}, fsname="testfs", subdir="v")
    with pytest.raises(InvalidRecord, match="inode_limit"):
        parse_record({**document, "inode_limit": -1}, fsname="testfs", subdir="v")
