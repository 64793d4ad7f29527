"""The mount table: /proc/self/mountinfo read and parsed into entries.

mountinfo (or statmount(2), csi.host.mount_listing) is the only view that shows a bind
mount's root inside its source file system. The mounts themselves (bind, unmount, health
probes) are csi/host/mounts.py.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from csi.host.mount_entry import MountEntry
from csi.host.mount_listing import KernelMountListing, kernel_listing

MOUNTINFO = Path("/proc/self/mountinfo")
_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    """Undo the kernel's octal escapes (space, tab, newline, backslash).

    `field` is mountinfo decoded with surrogateescape, so bytes that are not UTF-8 survive as
    surrogates and `os.fsencode` gives the kernel's bytes back; an escaped byte is re-decoded
    the same way, so an escaped non-ASCII byte cannot turn into a different character.
    """
    return _OCTAL_ESCAPE.sub(
        lambda m: bytes([int(m.group(1), 8) & 0xFF]).decode("utf-8", "surrogateescape"), field
    )


def parse_mountinfo(text: str) -> list[MountEntry]:
    """Entries in kernel order (later entries are stacked on top of earlier ones)."""
    entries = []
    for line in text.splitlines():
        if not line.strip():
            continue
        before, _, after = line.partition(" - ")
        fields = before.split()
        fstype, source, *_ = [*after.split(), ""]
        entries.append(
            MountEntry(
                mount_id=int(fields[0]),
                device=fields[2],
                root=_unescape(fields[3]),
                mount_point=_unescape(fields[4]),
                options=tuple(fields[5].split(",")),
                fstype=fstype,
                source=_unescape(source),
            )
        )
    return entries


@dataclass(frozen=True)
class MountMark:
    """The mount table at a moment, enough to tell the mounts made since: the newest mount
    id then (listmount's ids are never reused), or every id then (mountinfo's are)."""

    newest_id: int | None = None
    ids: frozenset[int] = frozenset()


class MountTable(Protocol):
    def entries(self) -> list[MountEntry]: ...

    def mark(self) -> MountMark: ...

    def made_since(self, mark: MountMark) -> list[MountEntry]: ...

    def top_made_since(self, mark: MountMark, mount_point: str) -> MountEntry | None: ...

    def top_at(self, name: str, mount_point: str) -> MountEntry | None: ...


class ProcMountTable:
    """The kernel's mount table of this process (/proc/self/mountinfo).

    Besides every entry, it answers the questions node calls ask most without parsing every
    line: the entries at one mount point, and the mounts a call made (`mark`, then
    `made_since`: without reading the table at all where the kernel has listmount). A node
    with a thousand pods has thousands of mounts, and each NodePublishVolume asked the whole
    table several times, so its latency grew with the mounts already there."""

    def __init__(self, path: Path = MOUNTINFO, *, kernel_listing_if_any: bool = True) -> None:
        """`kernel_listing_if_any`: `mark` and `made_since` use listmount/statmount where the
        kernel has them (False: mountinfo alone, as on a kernel before 6.8)."""
        self._path = path
        self._listing: KernelMountListing | None = (
            kernel_listing() if kernel_listing_if_any else None
        )

    def mark(self) -> MountMark:
        """The table now, to ask `made_since` after a mount call."""
        if self._listing is not None:
            return MountMark(newest_id=self._listing.newest_id())
        return MountMark(ids=frozenset(self.mount_ids()))

    def made_since(self, mark: MountMark) -> list[MountEntry]:
        """The mounts made since `mark` that are still there, oldest first (bottom first
        where they stack). From mountinfo, a mount whose id was freed and taken again since
        the mark is missed (see `top_made_since`)."""
        if mark.newest_id is not None:
            assert self._listing is not None  # marked with it
            return self._listing.entries_since(mark.newest_id)
        return [entry for entry in self.entries() if entry.mount_id not in mark.ids]

    def top_made_since(self, mark: MountMark, mount_point: str) -> MountEntry | None:
        """The top mount at `mount_point` (normalized) if it was made since `mark`.

        From mountinfo, whose ids the kernel reuses at once (a mount made while another
        thread unmounts can take the id that one had at the mark), the top mount at the path
        is taken for the one just made there, whatever its id: the caller has just mounted
        there and found nothing before (listmount's ids are never reused)."""
        if mark.newest_id is None:
            at = self.entries_at(mount_point)
        else:
            at = [entry for entry in self.made_since(mark) if entry.mount_point == mount_point]
        return at[-1] if at else None

    def top_at(self, name: str, mount_point: str) -> MountEntry | None:
        """The top mount at `mount_point` (normalized), which `name` leads to (a held
        directory's name: its last component is not followed); None when nothing is mounted
        there. From the mount `name` lies on where the kernel can say (statx, statmount),
        else from mountinfo."""
        if self._listing is None:
            at = self.entries_at(mount_point)
            return at[-1] if at else None
        try:
            entry = self._listing.entry(self._listing.mount_id_of(name))
        except FileNotFoundError:
            return None
        return entry if entry.mount_point == mount_point else None

    def entries(self) -> list[MountEntry]:
        return parse_mountinfo(self._text())

    def entries_at(self, mount_point: str) -> list[MountEntry]:
        """The entries whose mount point is exactly `mount_point` (normalized), bottom first.

        Only lines holding the escaped path as a whole field are parsed (the match is then
        checked on the parsed mount point, so a root field that happens to match is not
        taken for one)."""
        field = f" {_escape(mount_point)} "
        lines = [line for line in self._text().splitlines() if field in line]
        return [entry for entry in parse_mountinfo("\n".join(lines))
                if entry.mount_point == mount_point]

    def mount_ids(self) -> set[int]:
        """The id (the first field) of every mount."""
        return {int(line.split(" ", 1)[0]) for line in self._text().splitlines() if line.strip()}

    def _text(self) -> str:
        # Mount points are byte strings: one directory with a name that is not UTF-8 (made by
        # anyone on the node) must not make every node call fail to read the table.
        return self._path.read_bytes().decode("utf-8", "surrogateescape")


def _escape(path: str) -> str:
    """A path as mountinfo writes it: space, tab, newline and backslash as octal escapes."""
    return "".join(f"\\{ord(c):03o}" if c in " \t\n\\" else c for c in path)


def mounts_at(table: MountTable, path: str) -> list[MountEntry]:
    """Mounts whose mount point is exactly `path`, bottom first."""
    normalized = os.path.normpath(path)
    if isinstance(table, ProcMountTable):
        return table.entries_at(normalized)
    return [entry for entry in table.entries() if entry.mount_point == normalized]
