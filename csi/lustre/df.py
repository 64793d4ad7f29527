"""The parser for what `lfs df [-i] [-v]` prints (lustre/utils/lfs.c `showdf`, `mntdf`).

Strict like every parser here: a line it does not understand raises `LustreOutputError`
naming the line, because a capacity figure read wrongly would be acted on.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from csi.lustre.fsname import FSNAME_CHARS
from csi.lustre.parsers import KIB, LustreOutputError, numbered_lines, output_error

# ---------------------------------------------------------------------------------------------
# lfs df [-i] [-v] <mountpoint>
# ---------------------------------------------------------------------------------------------


class TargetKind(enum.StrEnum):
    MDT = "MDT"
    OST = "OST"


@dataclass(frozen=True)
class LfsDfTarget:
    """One MDT or OST row. Sizes are bytes (`lfs df`) or inode counts (`lfs df -i`)."""

    uuid: str  # as printed: "testfs-OST0002_UUID", or "OST0003" when lfs knew no UUID
    kind: TargetKind
    index: int
    total: int
    used: int
    available: int
    active: bool
    # lfs's status letters for an active target ("D" degraded, "R" read-only, "N"
    # no-precreate, "S" out of space, "I" out of inodes, lower case informational), or the
    # message lfs printed instead of figures ("inactive device", an errno string).
    status: str = ""

    @property
    def name(self) -> str:
        """The target name without the `_UUID` suffix: "testfs-OST0002"."""
        return self.uuid.removesuffix("_UUID")


@dataclass(frozen=True)
class LfsDf:
    """One file system's `lfs df` output: every target listed, and the summary row.

    `total`/`used`/`available` come from lfs's `filesystem_summary:` row. In block mode lfs
    sums only the OSTs when there are any (MDT space holds no file data), so the summary is
    the data capacity; with `-i` it is the file count the MDTs (and OST objects) allow.
    """

    mountpoint: str
    inodes: bool  # True for `lfs df -i`: figures are counts, not bytes
    targets: tuple[LfsDfTarget, ...]
    total: int
    used: int
    available: int

    @property
    def mdts(self) -> tuple[LfsDfTarget, ...]:
        return tuple(target for target in self.targets if target.kind is TargetKind.MDT)

    @property
    def osts(self) -> tuple[LfsDfTarget, ...]:
        return tuple(target for target in self.targets if target.kind is TargetKind.OST)

    @property
    def active_osts(self) -> tuple[LfsDfTarget, ...]:
        return tuple(target for target in self.osts if target.active)

    @property
    def inactive_osts(self) -> tuple[LfsDfTarget, ...]:
        return tuple(target for target in self.osts if not target.active)

    def ost(self, index: int) -> LfsDfTarget | None:
        return next((target for target in self.osts if target.index == index), None)


_DF_HEADER = re.compile(
    r"UUID\s+(?P<unit>1K-blocks|Inodes|bytes)\s+I?Used\s+(?:Available|IFree)\s+I?Use%"
    r"\s+Mounted on"
)
# showdf(): UUF" "CSF" "CSF" "CSF" "RSF" %-s" then "[%s:%d]" for a target, then " <flags>".
_DF_ROW = re.compile(
    r"(?P<uuid>\S+)\s+(?P<total>\d+)\s+(?P<used>\d+)\s+(?P<available>\d+)\s+(?P<percent>\d+)%"
    r"\s+(?P<rest>\S.*)"
)
_DF_TARGET_PLACE = re.compile(
    r"(?P<mountpoint>.+?)\[(?P<kind>MDT|OST):(?P<index>\d+)\](?: (?P<status>[A-Za-z?]+))?"
)
# A target name as lfs prints it: "<fsname>-OST0003_UUID", or "OST0003" (hex index) when
# llapi_obd_fstatfs() filled in no UUID for an unreachable target.
_TARGET_NAME = re.compile(
    rf"(?:{FSNAME_CHARS}-)?(?P<kind>MDT|OST)(?P<hex_index>[0-9a-fA-F]{{4,8}})(?:_UUID)?"
)
# showdf() for a target it could not stat: UUF": inactive device" or UUF": <strerror>".
_DF_UNAVAILABLE = re.compile(r"(?P<uuid>\S+?)\s*: (?P<message>\S.*)")
_SUMMARY = "filesystem_summary:"


@dataclass
class _DfSection:
    header_line: int
    inodes: bool
    mountpoint: str | None = None
    targets: list[LfsDfTarget] | None = None
    summary: tuple[int, int, int] | None = None




def parse_lfs_df_all(text: str) -> tuple[LfsDf, ...]:
    """Every file system in `lfs df [-i]` output (lfs with no path lists each mounted one).

    Each file system's block starts with the `UUID ...` header and ends with its
    `filesystem_summary:` row; blank lines between rows are ignored.
    """
    what = "lfs df output"
    sections: list[_DfSection] = []
    current: _DfSection | None = None
    for number, line in numbered_lines(text):
        if not line.strip():
            continue
        header = _DF_HEADER.fullmatch(line.strip())
        if header:
            if current is not None and current.summary is None:
                raise output_error(
                    what, number, line, "new header before the filesystem_summary row"
                )
            if header["unit"] == "bytes":
                raise output_error(what, number, line, "human-readable figures (-h) are not parsed")
            current = _DfSection(number, inodes=header["unit"] == "Inodes", targets=[])
            sections.append(current)
            continue
        if current is None or current.summary is not None:
            raise output_error(what, number, line, "expected the 'UUID ... Mounted on' header")
        _parse_df_line(current, what, number, line)
    if current is None:
        raise LustreOutputError(f"{what}: no 'UUID ... Mounted on' header in {text[:200]!r}")
    if current.summary is None:
        raise LustreOutputError(
            f"{what}: the file system whose header is on line {current.header_line} has no "
            "filesystem_summary row (output cut short?)"
        )
    return tuple(_finish_df_section(section) for section in sections)


def parse_lfs_df(text: str) -> LfsDf:
    """`lfs df [-i] <mountpoint>` output: exactly one file system."""
    file_systems = parse_lfs_df_all(text)
    if len(file_systems) != 1:
        mountpoints = ", ".join(fs.mountpoint for fs in file_systems)
        raise LustreOutputError(
            f"lfs df output lists {len(file_systems)} file systems ({mountpoints}); "
            "expected one: run lfs df with a mount point"
        )
    return file_systems[0]


def _parse_df_line(section: _DfSection, what: str, number: int, line: str) -> None:
    assert section.targets is not None
    scale = 1 if section.inodes else KIB
    row = _DF_ROW.fullmatch(line)
    if row:
        total, used, available = (int(row[key]) * scale for key in ("total", "used", "available"))
        rest = row["rest"].rstrip()
        if row["uuid"] == _SUMMARY:
            if _DF_TARGET_PLACE.fullmatch(rest):
                raise output_error(what, number, line, "summary row names a target")
            _same_mountpoint(section, what, number, line, rest)
            section.summary = (total, used, available)
            return
        place = _DF_TARGET_PLACE.fullmatch(rest)
        if not place or not _TARGET_NAME.fullmatch(row["uuid"]):
            raise output_error(what, number, line, "not an MDT/OST row")
        _same_mountpoint(section, what, number, line, place["mountpoint"])
        target = LfsDfTarget(
            uuid=row["uuid"],
            kind=TargetKind(place["kind"]),
            index=int(place["index"]),
            total=total,
            used=used,
            available=available,
            active=True,
            status=place["status"] or "",
        )
    else:
        unavailable = _DF_UNAVAILABLE.fullmatch(line)
        name = _TARGET_NAME.fullmatch(unavailable["uuid"]) if unavailable else None
        if not unavailable or not name:
            raise output_error(what, number, line, "not an lfs df row")
        target = LfsDfTarget(
            uuid=unavailable["uuid"],
            kind=TargetKind(name["kind"]),
            # lfs names targets by their index in hex: OST000a is index 10.
            index=int(name["hex_index"], 16),
            total=0,
            used=0,
            available=0,
            active=False,
            status=unavailable["message"].strip(),
        )
    if any(t.kind is target.kind and t.index == target.index for t in section.targets):
        raise output_error(what, number, line, f"{target.kind}{target.index:04x} is listed twice")
    section.targets.append(target)


def _same_mountpoint(
    section: _DfSection, what: str, number: int, line: str, mountpoint: str
) -> None:
    if section.mountpoint is None:
        section.mountpoint = mountpoint
    elif section.mountpoint != mountpoint:
        raise output_error(
            what, number, line, f"mount point differs from {section.mountpoint!r} above"
        )


def _finish_df_section(section: _DfSection) -> LfsDf:
    assert section.summary is not None and section.mountpoint is not None
    assert section.targets is not None
    total, used, available = section.summary
    return LfsDf(
        mountpoint=section.mountpoint,
        inodes=section.inodes,
        targets=tuple(section.targets),
        total=total,
        used=used,
        available=available,
    )
