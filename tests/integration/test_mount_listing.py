"""The mounts a call made, from listmount/statmount, against mountinfo on real mounts.

The node takes what a stage or bind made from the kernel's listing where it has one
(csi.host.mount_listing) and from mountinfo otherwise: both must give the same entries, field
for field, or a check that passes on one kernel would fail (or worse, pass wrongly) on another.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from csi.host.mount_listing import kernel_listing, mount_options
from csi.host.mount_table import MountMark, ProcMountTable, mounts_at

needs_listing = pytest.mark.skipif(
    kernel_listing() is None, reason="this kernel has no listmount/statmount (Linux 6.8+)"
)


def _mount(*argv: str) -> None:
    subprocess.run(["mount", *argv], check=True, capture_output=True)


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs to make odd mounts in; everything under it is unmounted afterwards."""
    root = tmp_path / "scratch"
    root.mkdir()
    _mount("-t", "tmpfs", "scratch-src", str(root))
    yield root
    subprocess.run(["umount", "-R", "-l", str(root)], check=False, capture_output=True)


@pytest.fixture(params=[True, False], ids=["listmount", "mountinfo"])
def either_table(request: pytest.FixtureRequest) -> ProcMountTable:
    """The table with the kernel's listing, and with mountinfo alone (older kernels)."""
    if request.param and kernel_listing() is None:
        pytest.skip("this kernel has no listmount/statmount (Linux 6.8+)")
    return ProcMountTable(kernel_listing_if_any=request.param)


def _odd_mounts(root: Path) -> list[str]:
    """Mounts with every field mountinfo escapes or spells from flags; their mount points."""
    source = root / "tree"
    (source / "sub dir\\x").mkdir(parents=True)
    points = []
    for name, options in (
        ("plain", "bind"),
        ("ro", "bind,ro"),
        ("flags", "bind,nosuid,nodev,noexec,noatime,nodiratime"),
        ("strict", "bind,strictatime"),
    ):
        point = root / f"{name} \t\\ \xe9"  # a space, a tab, a backslash, not ASCII
        point.mkdir()
        _mount("--bind", str(source / "sub dir\\x"), str(point))
        if "," in options:
            _mount("-o", f"remount,{options}", str(point))
        points.append(str(point))
    tmpfs = root / "fresh"
    tmpfs.mkdir()
    _mount("-t", "tmpfs", "-o", "size=1m,mode=700", "some source", str(tmpfs))
    points.append(str(tmpfs))
    return points


@needs_listing
def test_what_statmount_says_of_a_mount_is_what_mountinfo_says(scratch: Path) -> None:
    table = ProcMountTable()
    mark = table.mark()
    points = _odd_mounts(scratch)
    made = table.made_since(mark)
    assert [entry.mount_point for entry in made] == points
    for entry in made:
        (from_mountinfo,) = mounts_at(table, entry.mount_point)
        assert entry == from_mountinfo
    assert made[1].readonly and not made[0].readonly
    assert {"nosuid", "nodev", "noexec", "noatime", "nodiratime"} <= set(made[2].options)
    assert "relatime" not in made[3].options and made[3].options == ("rw",)
    assert made[4].source == "some source" and made[4].fstype == "tmpfs"
    assert made[0].root.endswith("/tree/sub dir\\x")


@needs_listing
def test_mounts_made_since_a_mark_are_the_same_from_either_view(scratch: Path) -> None:
    with_listing, mountinfo_only = ProcMountTable(), ProcMountTable(kernel_listing_if_any=False)
    marks = with_listing.mark(), mountinfo_only.mark()
    assert marks[0].newest_id is not None and marks[1].newest_id is None
    for name in ("a", "b"):
        (scratch / name).mkdir()
        _mount("-t", "tmpfs", name, str(scratch / name))
    _mount("-t", "tmpfs", "a-again", str(scratch / "a"))  # stacked on the first
    subprocess.run(["umount", str(scratch / "b")], check=True)  # made since, and gone again
    made = with_listing.made_since(marks[0])
    assert made == mountinfo_only.made_since(marks[1])
    assert [entry.source for entry in made] == ["a", "a-again"]  # the top one last
    # Nothing made since now.
    assert with_listing.made_since(with_listing.mark()) == []
    assert mountinfo_only.made_since(mountinfo_only.mark()) == []


@needs_listing
def test_a_mark_from_an_empty_listing_still_tells_new_mounts(scratch: Path) -> None:
    table = ProcMountTable()
    (scratch / "n").mkdir()
    _mount("-t", "tmpfs", "n", str(scratch / "n"))
    made = table.made_since(MountMark(newest_id=0))  # every mount is newer than none
    assert str(scratch / "n") in {entry.mount_point for entry in made}
    assert len(made) == len(table.entries())


def test_options_follow_mountinfo_order() -> None:
    assert mount_options(0) == ("rw", "relatime")
    assert mount_options(0x1 | 0x8 | 0x10 | 0x80) == ("ro", "noexec", "noatime", "nodiratime")
    assert mount_options(0x20 | 0x200000) == ("rw", "nosymfollow")


def test_a_mount_that_takes_the_id_of_one_just_unmounted_is_still_the_one_made(
    scratch: Path, either_table: ProcMountTable
) -> None:
    # mountinfo's ids are reused at once: a stage's mount can take the id of a mount another
    # thread unmounted after the stage's mark. It must still be found as the one made (under
    # 8 concurrent stages and unstages this happened dozens of times a run).
    table = either_table
    (scratch / "old").mkdir()
    (scratch / "new").mkdir()
    _mount("-t", "tmpfs", "old", str(scratch / "old"))
    mark = table.mark()
    (old,) = mounts_at(table, str(scratch / "old"))
    subprocess.run(["umount", str(scratch / "old")], check=True)
    _mount("-t", "tmpfs", "new", str(scratch / "new"))
    made = table.top_made_since(mark, str(scratch / "new"))
    assert made is not None and made.source == "new"
    if table.mark().newest_id is None:  # mountinfo's view
        assert made.mount_id == old.mount_id  # the id was indeed taken again
    assert table.top_made_since(mark, str(scratch / "old")) is None


def test_the_top_mount_a_name_leads_to_is_the_top_mountinfo_shows_there(
    scratch: Path, either_table: ProcMountTable
) -> None:
    table = either_table
    points = _odd_mounts(scratch)
    _mount("-t", "tmpfs", "stacked", points[0])  # on top of the first bind
    for point in points:
        assert table.top_at(point, point) == mounts_at(table, point)[-1]
    assert table.top_at(points[0], points[0]).source == "stacked"  # type: ignore[union-attr]
    (scratch / "plain dir").mkdir()
    (scratch / "link").symlink_to(points[1])
    assert table.top_at(str(scratch / "plain dir"), str(scratch / "plain dir")) is None
    assert table.top_at(str(scratch / "link"), str(scratch / "link")) is None  # not followed
    assert table.top_at(str(scratch / "gone"), str(scratch / "gone")) is None


@needs_listing
def test_the_mount_id_of_a_descriptor_is_the_one_fdinfo_and_mountinfo_give(scratch: Path) -> None:
    # A held path's walk asks each component's mount id; statx answers it in one call.
    listing = kernel_listing()
    assert listing is not None
    table = ProcMountTable()
    for point in [*_odd_mounts(scratch), "/", "/proc"]:
        fd = os.open(point, os.O_PATH | os.O_NOFOLLOW)
        try:
            with open(f"/proc/self/fdinfo/{fd}") as info:
                fdinfo = next(int(line.split()[1]) for line in info if line.startswith("mnt_id:"))
            assert listing.old_mount_id_of_fd(fd) == fdinfo == mounts_at(table, point)[-1].mount_id
        finally:
            os.close(fd)


@needs_listing
def test_a_mount_whose_strings_outgrow_the_first_buffer_is_still_read(scratch: Path) -> None:
    # A mount point and a root of nearly PATH_MAX each do not fit statmount's first 4 KiB.
    deep = scratch
    for _ in range(14):
        deep = deep / ("d" * 250)
        deep.mkdir()
    table = ProcMountTable()
    mark = table.mark()
    _mount("--bind", str(deep), str(deep))
    (made,) = table.made_since(mark)
    assert made == mounts_at(table, str(deep))[-1]
    assert len(made.mount_point) > 3500 and made.root.endswith("d" * 250)
