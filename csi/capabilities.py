"""Which volume capabilities a Lustre volume supports, and the mount options a user may set."""

from __future__ import annotations

from collections.abc import Sequence

from csi.errors import DriverError, InvalidArgument
from csi.lustre.mount_options import validate_mount_options
from csi.rpc import csi_pb2

AccessMode = csi_pb2.VolumeCapability.AccessMode
SUPPORTED_FS_TYPES = ("", "lustre")


def capability_problem(capability: csi_pb2.VolumeCapability) -> str | None:
    """Why this driver cannot serve `capability`, or None when it can.

    Lustre is a shared POSIX file system: every access mode works, block access does not.
    """
    if capability.HasField("block"):
        return "access_type block is not supported: Lustre volumes are file systems (use mount)"
    if not capability.HasField("mount"):
        return "access_type is required (mount)"
    if capability.access_mode.mode == AccessMode.UNKNOWN:
        return "access_mode is required"
    if capability.mount.fs_type not in SUPPORTED_FS_TYPES:
        return f"fs_type {capability.mount.fs_type!r} is not supported; leave it empty or 'lustre'"
    try:
        validate_mount_options(capability.mount.mount_flags)
    except DriverError as exc:
        return str(exc)
    return None


def check_capability(capability: csi_pb2.VolumeCapability, field: str) -> tuple[str, ...]:
    """The capability's validated mount options; InvalidArgument naming `field` otherwise."""
    problem = capability_problem(capability)
    if problem:
        raise InvalidArgument(f"{field}: {problem}")
    return validate_mount_options(capability.mount.mount_flags)


def check_capabilities(capabilities: Sequence[csi_pb2.VolumeCapability]) -> None:
    if not capabilities:
        raise InvalidArgument("volume_capabilities is required")
    for position, capability in enumerate(capabilities):
        check_capability(capability, f"volume_capabilities[{position}]")


def is_readonly_mode(capability: csi_pb2.VolumeCapability) -> bool:
    return capability.access_mode.mode in (
        AccessMode.SINGLE_NODE_READER_ONLY,
        AccessMode.MULTI_NODE_READER_ONLY,
    )
