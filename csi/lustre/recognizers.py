"""Recognising a Lustre mount in the mount table.

The node and the controller both need to know whether a path already holds the Lustre mount
they want (idempotency, stale-mount repair). With the kernel client that is an entry of type
`lustre` whose source is the mount source; with the embedded default's stand-in it is a bind
mount of the local server set's tree. `LustreMountRecognizer` hides that difference.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Protocol

from csi.host.mount_table import MountEntry
from csi.lustre.fsname import FSNAME_CHARS


class LustreMountRecognizer(Protocol):
    def lustre_source(self, entry: MountEntry) -> str | None:
        """The Lustre mount source (`<nids>:/<fsname>[/<subdir>]`) an entry mounts, if any."""
        ...


class KernelLustreRecognizer:
    def lustre_source(self, entry: MountEntry) -> str | None:
        return entry.source.rstrip("/") if entry.fstype == "lustre" else None


class LocalTreeRecognizer:
    """For the Lustre stand-in: a bind mount of `<state>/filesystems/<fs>/root[/sub]`.

    The NIDs are the ones the stand-in recorded when it mounted the file system (`mgs-nids`
    beside the tree), or the local server sets' own NID.
    """

    _ROOT = re.compile(rf"/filesystems/(?P<fsname>{FSNAME_CHARS})/root(?P<subdir>/[^/].*)?$")

    def __init__(self, filesystems_dir: Path, default_nid: str) -> None:
        info = os.stat(filesystems_dir)
        self._filesystems_dir = filesystems_dir
        self._device = f"{os.major(info.st_dev)}:{os.minor(info.st_dev)}"
        self._default_nid = default_nid

    def lustre_source(self, entry: MountEntry) -> str | None:
        match = self._ROOT.search(entry.root)
        if entry.device != self._device or not match:
            return None
        try:
            nids = (self._filesystems_dir / match["fsname"] / "mgs-nids").read_text().strip()
        except FileNotFoundError:
            nids = self._default_nid
        return f"{nids}:/{match['fsname']}{match['subdir'] or ''}"


def same_source(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")
