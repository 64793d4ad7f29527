"""Parsers for what `lfs quota -p`, `lfs project` and `lctl get_param [-n] health_check` print.

The formats follow lustre/utils/lfs.c (`print_quota_title`, `print_quota`) and
lustre/obdclass/obd_sysfs.c (`health_check_show`), checked against real Lustre 2.17 output in
tests/fixtures/lustre-2.17; `lfs df` has its own module (csi.lustre.df).
Every parser is strict: a line it does not understand raises `LustreOutputError` naming the
line, because a capacity or quota figure read wrongly would be acted on (a volume placed on a
full file system, a quota never raised).
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


def output_error(what: str, number: int, line: str, problem: str) -> LustreOutputError:
    shown = line if len(line) <= 200 else line[:200] + "..."
    return LustreOutputError(f"{what}: line {number}: {problem}: {shown!r}")


def numbered_lines(text: str) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(text.splitlines(), start=1):
        yield number, line.rstrip()


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
# The column names: Lustre <= 2.15 prints "quota limit grace" twice; 2.17 (captured in
# tests/fixtures/lustre-2.17) prints "bquota blimit bgrace" and "iquota ilimit igrace". The
# figures under them are the same eight in the same order.
_QUOTA_COLUMNS = re.compile(
    r"Filesystem\s+(?P<unit>kbytes|used)\s+"
    r"(?:quota\s+limit\s+grace\s+files\s+quota\s+limit\s+grace"
    r"|bquota\s+blimit\s+bgrace\s+files\s+iquota\s+ilimit\s+igrace)"
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
    lines = [(number, line) for number, line in numbered_lines(text) if line.strip()]
    if not lines:
        raise LustreOutputError(f"{what}: empty")
    number, line = lines[0]
    title = _QUOTA_TITLE.fullmatch(line.strip())
    if not title:
        raise output_error(what, number, line, "expected 'Disk quotas for prj <id> (pid <id>):'")
    if title["letter"] != "p" or title["type"] not in ("prj", "project"):
        raise output_error(what, number, line, "not a project quota")
    if len(lines) < 2:
        raise LustreOutputError(f"{what}: no column header after the title")
    number, line = lines[1]
    columns = _QUOTA_COLUMNS.fullmatch(line.strip())
    if not columns:
        raise output_error(
            what, number, line, "expected the 'Filesystem kbytes quota|bquota ...' header"
        )
    if columns["unit"] == "used":
        raise output_error(what, number, line, "human-readable figures (-h) are not parsed")

    mountpoint, values, rest = _quota_data(what, lines[2:])
    accurate = True
    for number, line in rest:
        if not any(pattern.fullmatch(line.strip()) for pattern in _QUOTA_TRAILERS):
            raise output_error(what, number, line, "unexpected line after the quota figures")
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
        raise output_error(what, data_number, data_line, "quota figures not understood")
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
        raise output_error(
            what, number, line, "quota figures without a file system name before them"
        )
    # A mount point longer than 15 characters: alone on this line, figures on the next.
    if len(lines) < 2 or len(lines[1][1].split()) != _QUOTA_VALUES:
        raise output_error(what, number, line, "expected quota figures on the line after the path")
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
    lines = [(number, line) for number, line in numbered_lines(text) if line.strip()]
    if len(lines) != 1:
        raise LustreOutputError(f"lfs project output: expected one line, got {text[:200]!r}")
    number, line = lines[0]
    match = _PROJECT_LINE.fullmatch(line)
    if not match or int(match["id"]) > 0xFFFFFFFF:
        raise output_error("lfs project output", number, line, "expected '<id> <P|-> <path>'")
    return ProjectAttribute(int(match["id"]), match["flag"] == "P", match["path"])


# ---------------------------------------------------------------------------------------------
# lctl get_param [-n] health_check
# ---------------------------------------------------------------------------------------------


class LustreHealth(enum.StrEnum):
    HEALTHY = "healthy"
    NOT_HEALTHY = "not healthy"
    LBUG = "lbug"  # the kernel hit an LBUG: the node needs a reboot


_HEALTH_PARAM = "health_check="


def parse_health_check(text: str) -> LustreHealth:
    """health_check_show() prints "healthy", or "NOT HEALTHY" (with "LBUG" and
    "device <name> reported unhealthy" lines before it on releases that keep them).

    The driver reads `lctl get_param -n health_check`; without -n lctl puts
    "health_check=" before the value (2.17 prints `health_check=healthy`), and that form is
    read too. A value of several lines starts on the line after "health_check=".
    """
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if lines and lines[0].startswith(_HEALTH_PARAM):
        first = lines[0].removeprefix(_HEALTH_PARAM).strip()
        lines = [first, *lines[1:]] if first else lines[1:]
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
