"""Volume ids that describe the volume: `v1:<kind>:<fsname>:<subdir>` (at most 128 bytes).

The node plugin never parses these (static PVs carry ids written by an admin); it works from
volume_context. The controller parses them to find the file system and directory again.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Literal

from csi.errors import InvalidArgument, NotFound
from csi.lustre.fsname import FSNAME

VolumeKind = Literal["shared", "dedicated"]
KINDS: tuple[VolumeKind, ...] = ("shared", "dedicated")
MAX_ID_BYTES = 128  # CSI spec limit for a volume id
MAX_SUBDIR = 64  # longest directory name taken as it is (longer names get a hashed one)
_SUBDIR = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_SUBDIR - 1}}}$")
_PREFIX = "v1"


@dataclass(frozen=True)
class VolumeId:
    kind: VolumeKind
    fsname: str
    subdir: str

    def __str__(self) -> str:
        return f"{_PREFIX}:{self.kind}:{self.fsname}:{self.subdir}"


def subdir_for_name(name: str) -> str:
    """A directory name for a CO volume name: the name itself when it is short and safe,
    otherwise a readable prefix plus a hash, so the same name always maps to the same place."""
    if _SUBDIR.match(name) and ".." not in name:
        return name
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-._")[:40] or "vol"
    digest = hashlib.sha256(name.encode()).hexdigest()[:20]
    return f"{readable}-{digest}"


def check_volume_id_field(volume_id: str, field: str = "volume_id") -> str:
    """InvalidArgument for ids no CO would send: empty, too long, or with control characters."""
    if not volume_id:
        raise InvalidArgument(f"{field} is required")
    if len(volume_id.encode()) > MAX_ID_BYTES:
        raise InvalidArgument(f"{field} is longer than the CSI limit of {MAX_ID_BYTES} bytes")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in volume_id):
        raise InvalidArgument(f"{field} contains control characters")
    return volume_id


def parse_volume_id(volume_id: str) -> VolumeId:
    """The parts of one of our ids; NotFound for anything this driver could not have made."""
    check_volume_id_field(volume_id)
    parts = volume_id.split(":")
    if (
        len(parts) != 4
        or parts[0] != _PREFIX
        or parts[1] not in KINDS
        or not FSNAME.fullmatch(parts[2])
        or not _SUBDIR.match(parts[3])
        or ".." in parts[3]
    ):
        raise NotFound(f"volume {volume_id!r} does not exist (not an id this driver issues)")
    kind: VolumeKind = "shared" if parts[1] == "shared" else "dedicated"
    return VolumeId(kind=kind, fsname=parts[2], subdir=parts[3])
