"""The seam between the CSI controller and whatever runs Lustre servers.

The controller asks three things of a server-set provider: make sure a file system exists
(creating it from a template if allowed), make sure it has room for a total reservation
(adding OSTs if not), and tear down a dedicated one. Two providers implement it:

- `provisioner.local.LocalServerSets`: the embedded default; a file system is a directory tree
  on this machine and its OSTs are rows in a ledger, so every call completes at once.
- the KubeVirt provider: LustreFileSystem custom resources reconciled into VMs; calls that
  start work answer `InProgress` (retryable) until the servers are Ready.

Providers never block for long: an RPC starts work, records it in the system of record, and
answers InProgress; a retry of the same request finds the work done.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol

from csi.errors import InvalidArgument

FSNAME_PATTERN = re.compile(r"^[-_a-zA-Z0-9]{1,8}$")
# Smallest targets a server set accepts (ldiskfs needs room for its journal and object index).
MIN_MDT_BYTES = 1 << 30
MIN_OST_BYTES = 1 << 30


def validate_fsname(fsname: str, field_name: str = "fsname") -> str:
    """Lustre allows 1-8 characters of [-_a-zA-Z0-9] in a file system name."""
    if not FSNAME_PATTERN.match(fsname):
        raise InvalidArgument(
            f"{field_name}: {fsname!r} is not a Lustre file system name; "
            "use 1-8 characters from a-z, A-Z, 0-9, '-' and '_'"
        )
    return fsname


@dataclass(frozen=True)
class FileSystemEndpoint:
    """What a client needs to mount a file system.

    `mgs_nids` holds one entry per MGS service node (failover partners); an entry may list
    several NIDs of the same node separated by ','. They are joined by ':' in a mount source.
    """

    fsname: str
    mgs_nids: tuple[str, ...]

    def mount_source(self, subdir: str = "") -> str:
        path = f"/{self.fsname}" + (f"/{subdir}" if subdir else "")
        return ":".join(self.mgs_nids) + ":" + path


@dataclass(frozen=True)
class ServerSetTemplate:
    """How to build a new server set; parsed from StorageClass parameters or a CR spec.

    Sizes are bytes. The KubeVirt-only fields are ignored by the local provider.
    """

    mdt_size_bytes: int = 64 << 30
    ost_size_bytes: int = 1 << 40
    osts_per_oss: int = 2
    min_osts: int = 1
    max_osts: int = 64
    # Add OSTs once reserved capacity would exceed this fraction of the total.
    growth_threshold: float = 0.8
    image: str = "ghcr.io/lustre-csi/lustre-server:2.16"
    cpu: str = "2"
    memory: str = "8Gi"
    target_storage_class: str = ""
    network_attachment: str = "lustre-storage"
    ip_pool: str = ""
    storage_interface: str = "eth1"
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FileSystemCapacity:
    """Capacity as the provider accounts it (sum of active OSTs)."""

    total_bytes: int
    ost_count: int
    max_total_bytes: int


class ServerSetProvider(Protocol):
    def ensure_file_system(
        self, fsname: str, template: ServerSetTemplate | None
    ) -> FileSystemEndpoint:
        """The endpoint of a Ready file system.

        Creates it from `template` when missing (NotFound when missing and template is None);
        raises InProgress while it is being created or is not Ready.
        """
        ...

    def ensure_capacity(self, fsname: str, required_bytes: int) -> FileSystemCapacity:
        """Make `required_bytes` of reservations fit under the growth threshold.

        Adds OSTs (never reusing an index) when they do not; raises InProgress while new OSTs
        are not yet serving, CapacityExhausted when even max_osts would not be enough.
        """
        ...

    def capacity(self, fsname: str) -> FileSystemCapacity:
        """Current capacity; NotFound for an unknown file system."""
        ...

    def delete_file_system(self, fsname: str) -> None:
        """Tear a (dedicated) file system down; idempotent; InProgress while it goes."""
        ...

    def list_file_systems(self) -> list[str]:
        """Names of the file systems this provider serves, sorted."""
        ...
