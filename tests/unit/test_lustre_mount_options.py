"""The mount option allow-list: what a CSI user may ask for, and what is refused."""

from __future__ import annotations

import pytest

from csi.errors import InvalidArgument
from csi.lustre.mount_options import (
    DEFAULT_MOUNT_OPTIONS,
    FLAG_OPTIONS,
    merge_mount_options,
    validate_mount_options,
)


@pytest.mark.parametrize("option", sorted(FLAG_OPTIONS))
def test_every_allowed_flag_is_accepted(option: str) -> None:
    assert validate_mount_options([option]) == (option,)


@pytest.mark.parametrize("value", ["tcp", "tcp0", "tcp12", "o2ib", "o2ib1", "gni0", "kfi"])
def test_network_takes_an_lnet_network(value: str) -> None:
    assert validate_mount_options([f"network={value}"]) == (f"network={value}",)


def test_entries_are_split_trimmed_and_deduplicated_in_order() -> None:
    flags = ["noatime, nodev", "nosuid,noatime", "network=o2ib1", "nodev"]

    assert validate_mount_options(flags) == ("noatime", "nodev", "nosuid", "network=o2ib1")


def test_no_flags_is_no_options() -> None:
    assert validate_mount_options([]) == ()


@pytest.mark.parametrize(
    "flag",
    [
        # options that change what is mounted, or drive the mount helper
        "bind",
        "rbind",
        "remount",
        "loop",
        "loop=/dev/loop0",
        "x-mount.mkdir",
        "x-systemd.automount",
        "skpath=/etc/shadow",
        "exclude=testfs-OST0000",
        "mgssec=null",
        "defaults",
        "context=system_u:object_r:tmp_t:s0",
        # options that widen a pod's powers over the node
        "suid",
        "dev",
        "exec",
        "user_fid2path",
        "user",
        "users",
        "uid=0",
        # injection attempts and malformed text
        "flock,bind",
        "noatime;rm -rf /",
        "$(id)",
        "`id`",
        "ro\n",
        "ro\r",
        "\tro",
        "ro\x00",
        "no atime",
        "'ro'",
        '"ro"',
        "NOATIME",
        "ro=1",
        "flock=yes",
        "network",
        "network=",
        "network=eth0",
        "network=tcp0,o2ib0",
        "network=tcp0;id",
        "network= tcp0",
        "network=tcp01",
    ],
)
def test_unsafe_or_malformed_options_are_refused(flag: str) -> None:
    with pytest.raises(InvalidArgument):
        validate_mount_options([flag])


@pytest.mark.parametrize("flag", ["", ",", "noatime,,nodev", "noatime,", ",noatime", " "])
def test_empty_options_are_refused(flag: str) -> None:
    with pytest.raises(InvalidArgument, match="empty mount option"):
        validate_mount_options([flag])


def test_refusal_names_the_option_and_lists_what_is_allowed() -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_mount_options(["noatime", "flock,bind"])

    message = str(caught.value)
    assert "'bind'" in message
    assert "is not allowed" in message
    assert "flock" in message and "noatime" in message and "network=<lnet network" in message


def test_refusal_quotes_control_characters_instead_of_printing_them() -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_mount_options(["ro\n"])

    assert "'ro\\n'" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_value_on_a_flag_is_explained() -> None:
    with pytest.raises(InvalidArgument, match="'ro' is a flag that takes none"):
        validate_mount_options(["ro=1"])


@pytest.mark.parametrize(
    "flags",
    [
        ["ro", "rw"],
        ["flock,noflock"],
        ["localflock", "flock"],
        ["sync,async"],
        ["atime", "noatime"],
        ["user_xattr,nouser_xattr"],
        ["network=tcp0", "network=o2ib1"],
    ],
)
def test_alternatives_of_one_setting_conflict(flags: list[str]) -> None:
    with pytest.raises(InvalidArgument, match="conflict"):
        validate_mount_options(flags)


def test_a_string_instead_of_a_list_is_a_programming_error() -> None:
    with pytest.raises(TypeError):
        validate_mount_options("noatime")


# --- merge_mount_options ---------------------------------------------------------------------


def test_defaults_come_first() -> None:
    assert merge_mount_options([], readonly=False) == ("flock", "nosuid", "nodev")
    assert merge_mount_options(["noatime,nodev"], readonly=False) == (
        "flock",
        "nosuid",
        "noatime",
        "nodev",
    )


def test_every_mount_is_nosuid_and_nodev_by_default() -> None:
    # A set-uid binary or device node put in a shared file system must not work on the node.
    assert {"nosuid", "nodev"} <= set(DEFAULT_MOUNT_OPTIONS)
    for user in ([], ["noexec"], ["localflock", "ro"]):
        assert {"nosuid", "nodev"} <= set(merge_mount_options(user, readonly=False))
    for widening in ("suid", "dev"):
        with pytest.raises(InvalidArgument, match="is not allowed"):
            merge_mount_options([widening], readonly=False)


def test_user_fid2path_is_not_offered_to_users() -> None:
    # It resolves any file id to its path across the whole file system, other volumes' too.
    with pytest.raises(InvalidArgument, match="'user_fid2path' is not allowed"):
        validate_mount_options(["user_fid2path"])
    assert validate_mount_options(["nouser_fid2path"]) == ("nouser_fid2path",)


def test_a_user_choice_replaces_the_default_it_contradicts() -> None:
    assert merge_mount_options(["localflock"], readonly=False) == ("nosuid", "nodev", "localflock")
    assert merge_mount_options(["noflock", "noatime"], readonly=False) == (
        "nosuid",
        "nodev",
        "noflock",
        "noatime",
    )


def test_a_user_repeating_a_default_does_not_duplicate_it() -> None:
    assert merge_mount_options(["noatime", "flock"], readonly=False) == (
        "nosuid",
        "nodev",
        "noatime",
        "flock",
    )


def test_readonly_appends_ro_once() -> None:
    assert merge_mount_options(["noatime"], readonly=True) == (
        "flock",
        "nosuid",
        "nodev",
        "noatime",
        "ro",
    )
    assert merge_mount_options(["ro"], readonly=True) == ("flock", "nosuid", "nodev", "ro")


def test_user_ro_on_a_writable_volume_is_kept() -> None:
    assert merge_mount_options(["ro"], readonly=False) == ("flock", "nosuid", "nodev", "ro")


def test_readonly_volume_refuses_rw() -> None:
    with pytest.raises(InvalidArgument, match="'rw' conflicts with a read-only volume"):
        merge_mount_options(["rw"], readonly=True)


def test_merge_validates_the_user_options() -> None:
    with pytest.raises(InvalidArgument, match="'bind'"):
        merge_mount_options(["bind"], readonly=False)
