"""The mount table: /proc/self/mountinfo read and parsed into entries.

mountinfo is the only view that shows a bind mount's root inside its source file system.
The mounts themselves (bind, unmount, health probes) are csi/host/mounts.py.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

MOUNTINFO = Path("/proc/self/mountinfo")
_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True)
class MountEntry:
    mount_id: int
    device: str  # "major:minor" of the mounted super block
    root: str  # path inside the source file system that is mounted here
    mount_point: str
    options: tuple[str, ...]
    fstype: str
    source: str

    @property
    def readonly(self) -> bool:
        return "ro" in self.options

    @property
    def source_deleted(self) -> bool:
        """The mounted directory was removed from its file system after mounting."""
        return self.root.endswith("//deleted")


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


class MountTable(Protocol):
    def entries(self) -> list[MountEntry]: ...


class ProcMountTable:
    """The kernel's mount table of this process (/proc/self/mountinfo).

    Besides every entry, it answers the two questions node calls ask most without parsing
    every line: the entries at one mount point, and the mount ids. A node with a thousand
    pods has thousands of mounts, and each NodePublishVolume asked the whole table several
    times, so its latency grew with the mounts already there."""

    def __init__(self, path: Path = MOUNTINFO) -> None:
        self._path = path

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


def mount_ids(table: MountTable) -> set[int]:
    """The ids of every mount in `table` now."""
    if isinstance(table, ProcMountTable):
        return table.mount_ids()
    return {entry.mount_id for entry in table.entries()}
