"""Plain (bind) mounts and unmounts, and whether a mount answers, for the node and controller.

Binds and unmounts are mount(2)/umount2(2) calls, with mount(8)/umount(8) through a
CommandRunner as the fallback, so tests and the embedded default use real mounts in private
mount namespaces. What is mounted where is read from csi/host/mount_table.py.
"""

from __future__ import annotations

import ctypes
import enum
import errno
import os
from collections.abc import Sequence
from typing import Protocol

from csi.errors import ExternalCommandFailed, InProgress
from csi.host.bounded import NO_KEY, BoundedCalls, CallTimedOut
from csi.host.command import CommandRunner
from csi.host.libc import check, load_libc
from csi.host.mount_table import MountEntry

# What stat(2) on a mount point says about it. ESTALE/ENOTCONN: the mount is dead for good (the
# directory was replaced on the server, the connection is gone), so unmount and mount again.
# EIO/EHOSTDOWN: a Lustre client evicted or waiting for recovery answers these for a while and
# then comes back; a remount would take a live volume from under running pods, so leave it.
_STALE_ERRNOS = {errno.ESTALE, errno.ENOTCONN}
_UNREACHABLE_ERRNOS = {errno.EIO, errno.EHOSTDOWN}


class MountHealth(enum.Enum):
    HEALTHY = "healthy"
    STALE = "stale"  # dead for good: repair by unmounting and mounting again
    UNREACHABLE = "unreachable"  # its server is away or recovering: leave it, retry later


class MountUnreachable(InProgress):
    """A mount answers EIO/EHOSTDOWN or nothing at all: its server is away or in recovery.

    Retryable (UNAVAILABLE): the mount is left alone and the request succeeds once the
    server is back.
    """


class MountProbe(Protocol):
    """The file-system calls that ask a mount whether it answers (a seam for fault tests)."""

    def stat(self, path: str) -> None: ...

    def statvfs(self, path: str) -> os.statvfs_result: ...


class OsMountProbe:
    def stat(self, path: str) -> None:
        os.stat(path)

    def statvfs(self, path: str) -> os.statvfs_result:
        return os.statvfs(path)


def mount_health(
    entry: MountEntry, *, probe: MountProbe, bounded: BoundedCalls, key: str | None = None
) -> tuple[MountHealth, str]:
    """How the mount `entry` is doing, and why, from one stat(2) with a deadline.

    A stat that does not answer in time is UNREACHABLE (a hung server): it never holds the
    caller's thread for longer than the deadline. Stuck stats are counted per `key` (the
    mounted device unless given), so a dead file system cannot use up the calls of healthy ones.
    """
    if entry.source_deleted:
        return MountHealth.STALE, "its directory was removed on the server"
    return path_health(
        entry.mount_point, probe=probe, bounded=bounded, key=entry.device if key is None else key
    )


def path_health(
    path: str, *, probe: MountProbe, bounded: BoundedCalls, key: str = NO_KEY
) -> tuple[MountHealth, str]:
    """`mount_health` from the stat alone, for a caller that has not read the mount table.

    `key`: the file system the path is on, for BoundedCalls' cap of its stuck calls.
    """
    try:
        bounded.run(f"stat {path}", lambda: probe.stat(path), key=key)
    except CallTimedOut as exc:
        return MountHealth.UNREACHABLE, str(exc)
    except OSError as exc:
        reason = f"stat answers {errno.errorcode.get(exc.errno or 0, exc.errno)}"
        if exc.errno in _STALE_ERRNOS:
            return MountHealth.STALE, reason
        if exc.errno in _UNREACHABLE_ERRNOS:
            return MountHealth.UNREACHABLE, reason
    return MountHealth.HEALTHY, "mounted"


# Per-mount flags (mount(2) MS_*) a bind mount can carry; they are set by remounting the bind.
PER_MOUNT_FLAGS: dict[str, int] = {
    "ro": 1,
    "nosuid": 2,
    "nodev": 4,
    "noexec": 8,
    "noatime": 1024,
    "nodiratime": 2048,
    "relatime": 1 << 21,
}
# A bind mount into a pod never carries set-uid binaries or device nodes (see
# csi/lustre/mount_options.py).
BIND_DEFAULT_OPTIONS: tuple[str, ...] = ("nosuid", "nodev")


class HostMounts:
    """Bind mounts and unmounts: mount(2)/umount2(2) directly, mount(8)/umount(8) as fallback."""

    def __init__(self, runner: CommandRunner) -> None:
        self._runner = runner

    def bind(
        self,
        source: str,
        target: str,
        *,
        readonly: bool,
        options: Sequence[str] = BIND_DEFAULT_OPTIONS,
        mounted_at: str | None = None,
    ) -> None:
        """Bind `source` at `target` with per-mount `options` (names of PER_MOUNT_FLAGS).

        `source` and `target` may be descriptor names (`/proc/<pid>/fd/<n>`): the bind is made
        onto the directory that descriptor holds, not onto whatever its path names now.
        `mounted_at` is a name that leads into the new mount once made (default `target`),
        for kernels without the mount API of Linux 5.12, where flags need a remount.
        """
        flags = [*dict.fromkeys([*options, *(["ro"] if readonly else [])])]
        unknown = [flag for flag in flags if flag not in PER_MOUNT_FLAGS]
        if unknown:
            raise ValueError(f"not a per-mount flag of a bind mount: {', '.join(unknown)}")
        remount_at = mounted_at or target
        try:
            if _tree_bind(source, target, flags) or _libc_bind(source, target, remount_at, flags):
                return
        except OSError as exc:
            raise ExternalCommandFailed(
                f"bind mount of {source} at {target} ({','.join(flags) or 'no flags'}) "
                f"failed: {os.strerror(exc.errno or 0)}"
            ) from exc
        # No mount syscalls to be had (no libc, ENOSYS): mount(8), which goes by name.
        self._runner.run(["mount", "--bind", source, target]).check()
        # Bind mounts ignore flags on the first call; ro/nosuid/nodev need a remount.
        if flags:
            argv = ["mount", "-o", ",".join(["remount", "bind", *flags]), remount_at]
            self._runner.run(argv).check()

    def unmount(self, target: str, *, lazy: bool = False, nofollow: bool = False) -> None:
        """umount2(2) `target` (detached when `lazy`; a final symlink is not followed when
        `nofollow`), umount(8) when the syscall fails, for its error message."""
        if _libc_umount(target, lazy=lazy, nofollow=nofollow):
            return
        argv = ["umount", *(["-l"] if lazy else []), target]
        self._runner.run(argv).check()


# Bind mounts and unmounts are plain syscalls: calling them directly instead of forking
# mount(8) halves NodePublishVolume's latency, and lets a bind go onto a held descriptor.
_MS_REMOUNT, _MS_BIND, _MNT_DETACH, _UMOUNT_NOFOLLOW = 32, 4096, 2, 8
# The mount API of Linux 5.12 (open_tree, move_mount, mount_setattr): one number on every
# architecture (include/uapi/asm-generic/unistd.h).
_SYS_OPEN_TREE, _SYS_MOVE_MOUNT, _SYS_MOUNT_SETATTR = 428, 429, 442
_OPEN_TREE_CLONE, _AT_EMPTY_PATH = 1, 0x1000
_MOVE_MOUNT_F_EMPTY_PATH, _MOVE_MOUNT_T_EMPTY_PATH = 0x4, 0x40
_MOUNT_ATTR_ATIME_MASK = 0x70
# PER_MOUNT_FLAGS as mount_setattr(2) attributes: (set, clear).
_MOUNT_ATTRS: dict[str, tuple[int, int]] = {
    "ro": (0x1, 0),
    "nosuid": (0x2, 0),
    "nodev": (0x4, 0),
    "noexec": (0x8, 0),
    "noatime": (0x10, _MOUNT_ATTR_ATIME_MASK),
    "nodiratime": (0x80, 0),
    "relatime": (0x0, _MOUNT_ATTR_ATIME_MASK),
}


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def _tree_bind(source: str, target: str, flags: Sequence[str]) -> bool:
    """A bind made with the mount API: its flags are set before it is attached, and it is
    attached onto the directory `target` names (a held descriptor's, if it is one).

    False: this kernel has no such calls (fall back). OSError: they failed.
    """
    libc = load_libc()
    if libc is None:
        return False
    attr = _MountAttr()
    for flag in flags:
        to_set, to_clear = _MOUNT_ATTRS[flag]
        attr.attr_set |= to_set
        attr.attr_clr |= to_clear
    source_fd = os.open(source, os.O_PATH | os.O_CLOEXEC)
    try:
        tree = libc.syscall(
            _SYS_OPEN_TREE, source_fd, b"", _OPEN_TREE_CLONE | os.O_CLOEXEC | _AT_EMPTY_PATH
        )
        if tree < 0 and ctypes.get_errno() == errno.ENOSYS:
            return False
        tree = check(tree)
    finally:
        os.close(source_fd)
    try:
        if flags:
            check(
                libc.syscall(
                    _SYS_MOUNT_SETATTR,
                    tree,
                    b"",
                    _AT_EMPTY_PATH,
                    ctypes.byref(attr),
                    ctypes.c_size_t(ctypes.sizeof(attr)),
                )
            )
        target_fd = os.open(target, os.O_PATH | os.O_CLOEXEC | os.O_DIRECTORY)
        try:
            check(
                libc.syscall(
                    _SYS_MOVE_MOUNT,
                    tree,
                    b"",
                    target_fd,
                    b"",
                    _MOVE_MOUNT_F_EMPTY_PATH | _MOVE_MOUNT_T_EMPTY_PATH,
                )
            )
        finally:
            os.close(target_fd)
    finally:
        os.close(tree)  # a tree never attached is dissolved with its descriptor
    return True


def _libc_bind(source: str, target: str, remount_at: str, flags: Sequence[str]) -> bool:
    """mount(2) MS_BIND, then a remount with `flags` at `remount_at`, which must lead into the
    new mount (a descriptor held before the bind still shows the directory beneath it).

    False: no libc (fall back). OSError: a call failed (a failed remount undoes the bind).
    """
    libc = load_libc()
    if libc is None:
        return False
    check(libc.mount(os.fsencode(source), os.fsencode(target), None, _MS_BIND, None))
    if not flags:
        return True
    bits = _MS_BIND | _MS_REMOUNT
    for flag in flags:
        bits |= PER_MOUNT_FLAGS[flag]
    if libc.mount(None, os.fsencode(remount_at), None, bits, None) != 0:
        number = ctypes.get_errno()
        libc.umount2(os.fsencode(remount_at), _MNT_DETACH)
        raise OSError(number, os.strerror(number))
    return True


def _libc_umount(target: str, *, lazy: bool, nofollow: bool = False) -> bool:
    libc = load_libc()
    if libc is None:
        return False
    flags = (_MNT_DETACH if lazy else 0) | (_UMOUNT_NOFOLLOW if nofollow else 0)
    return libc.umount2(os.fsencode(target), flags) == 0
