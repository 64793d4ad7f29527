"""Parsers for what `lfs df`, `lfs quota -p` and `lctl get_param -n health_check` print.

The formats follow lustre/utils/lfs.c (`showdf`, `mntdf`, `print_quota_title`, `print_quota`)
and lustre/obdclass/obd_sysfs.c (`health_check_show`). Every parser is strict: a line it does
not understand raises `LustreOutputError` naming the line, because a capacity or quota figure
read wrongly would be acted on (a volume placed on a full file system, a quota never raised).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator
from dataclasses import dataclass

from csi.errors import ExternalCommandFailed

KIB = 1024


class LustreOutputError(ExternalCommandFailed):
    """A Lustre tool printed something these parsers do not recognise."""


def _error(what: str, number: int, line: str, problem: str) -> LustreOutputError:
    shown = line if len(line) <= 200 else line[:200] + "..."
    return LustreOutputError(f"{what}: line {number}: {problem}: {shown!r}")


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
    r"(?:[-_A-Za-z0-9]{1,8}-)?(?P<kind>MDT|OST)(?P<hex_index>[0-9a-fA-F]{4,8})(?:_UUID)?"
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


def _numbered_lines(text: str) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(text.splitlines(), start=1):
        yield number, line.rstrip()


def parse_lfs_df_all(text: str) -> tuple[LfsDf, ...]:
    """Every file system in `lfs df [-i]` output (lfs with no path lists each mounted one).

    Each file system's block starts with the `UUID ...` header and ends with its
    `filesystem_summary:` row; blank lines between rows are ignored.
    """
    what = "lfs df output"
    sections: list[_DfSection] = []
    current: _DfSection | None = None
    for number, line in _numbered_lines(text):
        if not line.strip():
            continue
        header = _DF_HEADER.fullmatch(line.strip())
        if header:
            if current is not None and current.summary is None:
                raise _error(what, number, line, "new header before the filesystem_summary row")
            if header["unit"] == "bytes":
                raise _error(what, number, line, "human-readable figures (-h) are not parsed")
            current = _DfSection(number, inodes=header["unit"] == "Inodes", targets=[])
            sections.append(current)
            continue
        if current is None or current.summary is not None:
            raise _error(what, number, line, "expected the 'UUID ... Mounted on' header")
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
                raise _error(what, number, line, "summary row names a target")
            _same_mountpoint(section, what, number, line, rest)
            section.summary = (total, used, available)
            return
        place = _DF_TARGET_PLACE.fullmatch(rest)
        if not place or not _TARGET_NAME.fullmatch(row["uuid"]):
            raise _error(what, number, line, "not an MDT/OST row")
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
            raise _error(what, number, line, "not an lfs df row")
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
        raise _error(what, number, line, f"{target.kind}{target.index:04x} is listed twice")
    section.targets.append(target)


def _same_mountpoint(
    section: _DfSection, what: str, number: int, line: str, mountpoint: str
) -> None:
    if section.mountpoint is None:
        section.mountpoint = mountpoint
    elif section.mountpoint != mountpoint:
        raise _error(what, number, line, f"mount point differs from {section.mountpoint!r} above")


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


# ---------------------------------------------------------------------------------------------
# lfs quota -p <id> <mountpoint>
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProjectQuota:
    """A project's usage and limits. A limit of 0 means "no limit" (lfs-setquota(1))."""

    project_id: int
    mountpoint: str
    used_bytes: int
    block_soft_limit_bytes: int
    block_hard_limit_bytes: int
    block_grace: str  # "-" (not over the soft limit), "none" (grace expired), or "6d23h59m"
    used_inodes: int
    inode_soft_limit: int
    inode_hard_limit: int
    inode_grace: str
    over_block_limit: bool  # lfs's '*' after the kbytes figure
    over_inode_limit: bool  # lfs's '*' after the files figure
    # False when lfs bracketed a figure ("[123]") or said some targets did not answer: the
    # figures are then partial sums and should not be trusted for decisions.
    accurate: bool


# print_quota_title(): "Disk quotas for %s %s (%cid %u):" with qtype_name() "usr"/"grp"/"prj"
# (older releases spelled it out: "user"/"group"/"project").
_QUOTA_TITLE = re.compile(
    r"Disk quotas for (?P<type>prj|project|usr|user|grp|group) (?P<name>\S+) "
    r"\((?P<letter>[pug])id (?P<id>\d+)\):"
)
_QUOTA_COLUMNS = re.compile(
    r"Filesystem\s+(?P<unit>kbytes|used)\s+quota\s+limit\s+grace\s+files\s+quota\s+limit\s+grace"
)
# A usage figure: digits, bracketed when inaccurate, then up to two '*' (one from -EREMOTEIO,
# one for "over quota").
_USAGE = re.compile(r"(?P<open>\[?)(?P<value>\d+)(?P<close>\]?)(?P<stars>\*{0,2})")
_LIMIT = re.compile(r"(?P<open>\[?)(?P<value>\d+)(?P<close>\]?)")
# diff2str(): "-" when not over, "none" when expired, else weeks..seconds ("1w2d3h4m5s").
_GRACE = re.compile(r"-|none|(?:\d+[wdhms])+")
_QUOTA_VALUES = 8
_QUOTA_TRAILERS = (
    re.compile(r"[pug]id \d+ is using default (?:block|file) quota setting"),
    re.compile(r"Some errors happened when getting quota info\..*"),
)


@dataclass(frozen=True)
class _Figure:
    value: int
    bracketed: bool
    starred: bool


def _figure(pattern: re.Pattern[str], token: str) -> _Figure | None:
    match = pattern.fullmatch(token)
    if not match or bool(match["open"]) != bool(match["close"]):
        return None
    stars = match.groupdict().get("stars") or ""
    return _Figure(int(match["value"]), bracketed=bool(match["open"]), starred=bool(stars))


def parse_lfs_quota(text: str) -> ProjectQuota:
    """`lfs quota -p <id> <mountpoint>` output (not -h, -q or -v).

    The file system column is `%15s`; a longer mount point is printed on its own line and
    the figures on the next, indented by 15 spaces. Both layouts are read.
    """
    what = "lfs quota output"
    lines = [(number, line) for number, line in _numbered_lines(text) if line.strip()]
    if not lines:
        raise LustreOutputError(f"{what}: empty")
    number, line = lines[0]
    title = _QUOTA_TITLE.fullmatch(line.strip())
    if not title:
        raise _error(what, number, line, "expected 'Disk quotas for prj <id> (pid <id>):'")
    if title["letter"] != "p" or title["type"] not in ("prj", "project"):
        raise _error(what, number, line, "not a project quota")
    if len(lines) < 2:
        raise LustreOutputError(f"{what}: no column header after the title")
    number, line = lines[1]
    columns = _QUOTA_COLUMNS.fullmatch(line.strip())
    if not columns:
        raise _error(what, number, line, "expected the 'Filesystem kbytes quota ...' header")
    if columns["unit"] == "used":
        raise _error(what, number, line, "human-readable figures (-h) are not parsed")

    mountpoint, values, rest = _quota_data(what, lines[2:])
    accurate = True
    for number, line in rest:
        if not any(pattern.fullmatch(line.strip()) for pattern in _QUOTA_TRAILERS):
            raise _error(what, number, line, "unexpected line after the quota figures")
        if line.strip().startswith("Some errors happened"):
            accurate = False
    data_number, data_line = values
    tokens = data_line.split()[-_QUOTA_VALUES:]
    used = _figure(_USAGE, tokens[0])
    block_soft, block_hard = _figure(_LIMIT, tokens[1]), _figure(_LIMIT, tokens[2])
    files = _figure(_USAGE, tokens[4])
    inode_soft, inode_hard = _figure(_LIMIT, tokens[5]), _figure(_LIMIT, tokens[6])
    figures = (used, block_soft, block_hard, files, inode_soft, inode_hard)
    graces = (tokens[3], tokens[7])
    if any(figure is None for figure in figures) or not all(
        _GRACE.fullmatch(grace) for grace in graces
    ):
        raise _error(what, data_number, data_line, "quota figures not understood")
    assert used and block_soft and block_hard and files and inode_soft and inode_hard
    if any(figure and figure.bracketed for figure in figures):
        accurate = False
    return ProjectQuota(
        project_id=int(title["id"]),
        mountpoint=mountpoint,
        used_bytes=used.value * KIB,
        block_soft_limit_bytes=block_soft.value * KIB,
        block_hard_limit_bytes=block_hard.value * KIB,
        block_grace=graces[0],
        used_inodes=files.value,
        inode_soft_limit=inode_soft.value,
        inode_hard_limit=inode_hard.value,
        inode_grace=graces[1],
        over_block_limit=used.starred,
        over_inode_limit=files.starred,
        accurate=accurate,
    )


def _quota_data(
    what: str, lines: list[tuple[int, str]]
) -> tuple[str, tuple[int, str], list[tuple[int, str]]]:
    """(mount point, the line holding the 8 figures, the lines after it)."""
    if not lines:
        raise LustreOutputError(f"{what}: no quota figures after the column header")
    number, line = lines[0]
    tokens = line.split()
    if len(tokens) > _QUOTA_VALUES:
        # "<mountpoint> <8 figures>": the mount point is whatever precedes the last 8 tokens.
        figures = re.fullmatch(r"\s*(?P<mountpoint>.*?)\s+(?:\S+\s+){7}\S+", line)
        assert figures is not None
        return figures["mountpoint"], (number, line), lines[1:]
    if len(tokens) == _QUOTA_VALUES:
        raise _error(what, number, line, "quota figures without a file system name before them")
    # A mount point longer than 15 characters: alone on this line, figures on the next.
    if len(lines) < 2 or len(lines[1][1].split()) != _QUOTA_VALUES:
        raise _error(what, number, line, "expected quota figures on the line after the path")
    return line.strip(), lines[1], lines[2:]


# ---------------------------------------------------------------------------------------------
# lfs project -d <path>
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProjectAttribute:
    """A file's or directory's project id and whether new children inherit it."""

    project_id: int  # 0: in no project
    inherit: bool  # PROJID_INHERIT, shown by lfs as 'P'
    path: str


# project_list_one(): "%5u %c %s\n" (id, 'P' or '-', path).
_PROJECT_LINE = re.compile(r"\s*(?P<id>\d{1,10}) (?P<flag>[P-]) (?P<path>\S.*)")


def parse_lfs_project(text: str) -> ProjectAttribute:
    """`lfs project -d <path>` output: one line for the path itself."""
    lines = [(number, line) for number, line in _numbered_lines(text) if line.strip()]
    if len(lines) != 1:
        raise LustreOutputError(f"lfs project output: expected one line, got {text[:200]!r}")
    number, line = lines[0]
    match = _PROJECT_LINE.fullmatch(line)
    if not match or int(match["id"]) > 0xFFFFFFFF:
        raise _error("lfs project output", number, line, "expected '<id> <P|-> <path>'")
    return ProjectAttribute(int(match["id"]), match["flag"] == "P", match["path"])


# ---------------------------------------------------------------------------------------------
# lctl get_param -n health_check
# ---------------------------------------------------------------------------------------------


class LustreHealth(enum.StrEnum):
    HEALTHY = "healthy"
    NOT_HEALTHY = "not healthy"
    LBUG = "lbug"  # the kernel hit an LBUG: the node needs a reboot


def parse_health_check(text: str) -> LustreHealth:
    """health_check_show() prints "healthy", or "NOT HEALTHY" (with "LBUG" and
    "device <name> reported unhealthy" lines before it on releases that keep them)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if "LBUG" in lines:
        return LustreHealth.LBUG
    if lines == ["healthy"]:
        return LustreHealth.HEALTHY
    if (
        lines
        and lines[-1] == "NOT HEALTHY"
        and all(re.fullmatch(r"device \S+ reported unhealthy", line) for line in lines[:-1])
    ):
        return LustreHealth.NOT_HEALTHY
    raise LustreOutputError(f"lctl get_param health_check: unexpected output {text[:200]!r}")
