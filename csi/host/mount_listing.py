"""The mounts made since a moment, and the mount a name leads to, without the mount table:
listmount(2), statmount(2) and statx(2) (Linux 6.8+).

A stage or publish must know which mounts its own mount call made: the one at its path is
checked, and any that landed elsewhere (a path changed under it) are taken back. Reading the
whole of /proc/self/mountinfo before and after did that, and its cost grows with every mount
on the node: at 1,000 staged volumes the two reads were most of a NodeStageVolume (5 ms
each on this machine). Mount ids of these calls are 64-bit and never reused (the kernel
counts them up), so "made since" is "id above the newest id before": one listmount of one id
before, one listmount of the few new ids and a statmount of each after, whatever the node
holds. The mount a held name leads to is statx's mount id of it, then a statmount.

`kernel_listing()` is None where the kernel (or a seccomp profile) has no such calls; the
mount table then reads mountinfo as before (csi.host.mount_table).
"""

from __future__ import annotations

import ctypes
import errno
import functools
import logging
import os
import platform
import struct

from csi.host.libc import check, load_libc
from csi.host.mount_entry import MountEntry

log = logging.getLogger(__name__)

# include/uapi/asm-generic/unistd.h: one number on x86_64 and arm64 alike; statx is older.
_SYS_STATMOUNT, _SYS_LISTMOUNT = 457, 458
_SYS_STATX = {"x86_64": 332, "aarch64": 291}
# statx(2): a mount id only, from what the inode has cached (no server asked: a Lustre
# client honours AT_STATX_DONT_SYNC, ll_getattr_dentry), at the name itself or a descriptor.
_AT_SYMLINK_NOFOLLOW, _AT_NO_AUTOMOUNT, _AT_EMPTY_PATH, _AT_STATX_DONT_SYNC = (
    0x100, 0x800, 0x1000, 0x4000
)
_STATX_MNT_ID, _STATX_MNT_ID_UNIQUE, _STATX_MNT_ID_AT = 0x1000, 0x4000, 0x90
_LSMT_ROOT = 0xFFFFFFFFFFFFFFFF  # every mount of the caller's namespace
_LISTMOUNT_REVERSE = 1  # newest first (Linux 6.14)
_MNT_ID_REQ_SIZE_VER0 = 24
# statmount(2) request bits (include/uapi/linux/mount.h).
_SB_BASIC, _MNT_BASIC, _MNT_ROOT, _MNT_POINT, _FS_TYPE = 0x1, 0x2, 0x8, 0x10, 0x20
_FS_SUBTYPE, _SB_SOURCE = 0x100, 0x200
_WANTED = _SB_BASIC | _MNT_BASIC | _MNT_ROOT | _MNT_POINT | _FS_TYPE | _FS_SUBTYPE | _SB_SOURCE
# struct statmount: the fixed part is 512 bytes; string fields are offsets into what follows.
_STRINGS_AT = 512
_HEADER = struct.Struct("=IIQIIQIIQQIIQ")  # size .. mnt_attr
_ROOT_POINT_AT, _SUBTYPE_SOURCE_AT = 104, 120
# MOUNT_ATTR_* as mountinfo spells them (fs/proc_namespace.c, show_mnt_opts).
_ATTR_RDONLY, _ATTR_NODIRATIME = 0x1, 0x80
_ATTR_FLAGS = ((0x2, "nosuid"), (0x4, "nodev"), (0x8, "noexec"))
_ATIME_MASK, _ATTR_NOATIME, _ATTR_STRICTATIME = 0x70, 0x10, 0x20
_LATER_FLAGS = ((0x200000, "nosymfollow"), (0x100000, "idmapped"))
_BUFFER, _BUFFER_MAX = 4096, 1 << 18
_PAGE = 512  # ids asked per listmount call


class _MountIdRequest(ctypes.Structure):
    _fields_ = [
        ("size", ctypes.c_uint32),
        ("spare", ctypes.c_uint32),
        ("mnt_id", ctypes.c_uint64),
        ("param", ctypes.c_uint64),
    ]


class KernelMountListing:
    """listmount(2) and statmount(2) of this process's mount namespace."""

    def __init__(self, libc: ctypes.CDLL, statx_number: int) -> None:
        # A function object of its own (item, not attribute: that one is shared), so the
        # wider return type set here is not imposed on the other callers of syscall(2).
        self._syscall = libc["syscall"]
        self._syscall.restype = ctypes.c_long
        self._statx = statx_number

    def mount_id_of(self, path: str) -> int:
        """The unique id of the mount `path` (its last component not followed) lies on: the
        top one mounted there, if any is."""
        flags = _AT_SYMLINK_NOFOLLOW | _AT_NO_AUTOMOUNT
        return self._statx_mount_id(-100, os.fsencode(path), flags, _STATX_MNT_ID_UNIQUE)

    def old_mount_id_of_fd(self, fd: int) -> int:
        """The id (mountinfo's, reused) of the mount an open descriptor lies on: what
        /proc/self/fdinfo says, in one call instead of an open, a read and a close."""
        return self._statx_mount_id(fd, b"", _AT_EMPTY_PATH, _STATX_MNT_ID)

    def _statx_mount_id(self, dir_fd: int, path: bytes, flags: int, wanted: int) -> int:
        buffer = ctypes.create_string_buffer(256)
        check(self._syscall(
            ctypes.c_long(self._statx), ctypes.c_int(dir_fd), path,
            ctypes.c_int(flags | _AT_STATX_DONT_SYNC), ctypes.c_uint(wanted), buffer,
        ))
        (mask,) = struct.unpack_from("=I", buffer.raw, 0)
        if not mask & wanted:
            raise OSError(errno.ENOSYS, "statx gave no mount id")
        (mount_id,) = struct.unpack_from("=Q", buffer.raw, _STATX_MNT_ID_AT)
        return int(mount_id)

    def newest_id(self) -> int:
        """The highest mount id in the namespace now (0 when it cannot say: none made yet)."""
        try:
            newest = self._list(_LSMT_ROOT, 0, 1, _LISTMOUNT_REVERSE)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            return max(self._all_since(0), default=0)  # a kernel before LISTMOUNT_REVERSE
        return newest[0] if newest else 0

    def entries_since(self, newest_before: int) -> list[MountEntry]:
        """The mounts whose id is above `newest_before` (made since), oldest first.

        A mount that went again between the two calls is simply not among them."""
        entries = []
        for mount_id in self._all_since(newest_before):
            try:
                entries.append(self.entry(mount_id))
            except FileNotFoundError:
                continue
        return entries

    def entry(self, mount_id: int) -> MountEntry:
        """The mount's entry as /proc/self/mountinfo would give it."""
        request = _MountIdRequest(_MNT_ID_REQ_SIZE_VER0, 0, mount_id, _WANTED)
        size = _BUFFER
        while True:
            buffer = ctypes.create_string_buffer(size)
            try:
                check(self._syscall(
                    ctypes.c_long(_SYS_STATMOUNT), ctypes.byref(request), buffer,
                    ctypes.c_size_t(size), ctypes.c_uint(0),
                ))
            except OSError as exc:
                # Its strings did not fit (a mount point and root up to PATH_MAX each).
                if exc.errno != errno.EOVERFLOW or size >= _BUFFER_MAX:
                    raise
                size *= 4
                continue
            return parse_statmount(buffer.raw)

    def _all_since(self, newest_before: int) -> list[int]:
        ids: list[int] = []
        last = newest_before
        while True:
            page = self._list(_LSMT_ROOT, last, _PAGE, 0)
            ids += page
            if len(page) < _PAGE:
                return ids
            last = page[-1]

    def _list(self, mount_id: int, after: int, count: int, flags: int) -> list[int]:
        request = _MountIdRequest(_MNT_ID_REQ_SIZE_VER0, 0, mount_id, after)
        out = (ctypes.c_uint64 * count)()
        found = check(self._syscall(
            ctypes.c_long(_SYS_LISTMOUNT), ctypes.byref(request), out,
            ctypes.c_size_t(count), ctypes.c_uint(flags),
        ))
        return list(out[:found])


def parse_statmount(raw: bytes) -> MountEntry:
    """A struct statmount (asked for `_WANTED`) as the mountinfo entry of the same mount."""
    (_, _, mask, major, minor, _, _, fs_type, _, _, old_id, _, attr) = _HEADER.unpack_from(raw)
    root, point = struct.unpack_from("=II", raw, _ROOT_POINT_AT)
    subtype, source = struct.unpack_from("=II", raw, _SUBTYPE_SOURCE_AT)

    def text(offset: int) -> str:
        start = _STRINGS_AT + offset
        return raw[start:raw.index(b"\0", start)].decode("utf-8", "surrogateescape")

    fstype = text(fs_type)
    if mask & _FS_SUBTYPE:
        fstype = f"{fstype}.{text(subtype)}"
    return MountEntry(
        mount_id=old_id,
        device=f"{major}:{minor}",
        root=text(root),
        mount_point=text(point),
        options=mount_options(attr),
        fstype=fstype,
        source=text(source) if mask & _SB_SOURCE else "none",
    )


def mount_options(attr: int) -> tuple[str, ...]:
    """The per-mount options field of mountinfo from MOUNT_ATTR_*, in its order (ro is the
    mount's own flag there too: a read-only super block shows in the super block's field)."""
    options = ["ro" if attr & _ATTR_RDONLY else "rw"]
    options += [name for bit, name in _ATTR_FLAGS if attr & bit]
    atime = attr & _ATIME_MASK
    if atime == _ATTR_NOATIME:
        options.append("noatime")
    if attr & _ATTR_NODIRATIME:
        options.append("nodiratime")
    if atime not in (_ATTR_NOATIME, _ATTR_STRICTATIME):
        options.append("relatime")
    options += [name for bit, name in _LATER_FLAGS if attr & bit]
    return tuple(options)


@functools.cache
def kernel_listing() -> KernelMountListing | None:
    """The kernel's listing, or None when it has none to give (checked once, and logged)."""
    listing, why = _probe()
    if listing is None:
        log.info("mount table: read from /proc/self/mountinfo (%s); on a node with many "
                 "mounts each stage and publish costs more", why)
    else:
        log.info("mount table: the mounts a call made are read with listmount/statmount")
    return listing


def _probe() -> tuple[KernelMountListing | None, str]:
    statx_number = _SYS_STATX.get(platform.machine())
    if os.environ.get("LUSTRE_CSI_MOUNTINFO_ONLY"):
        return None, "LUSTRE_CSI_MOUNTINFO_ONLY is set"
    if statx_number is None:
        return None, f"no system call numbers known for {platform.machine()}"
    libc = load_libc()
    if libc is None:
        return None, "no libc to call them through"
    listing = KernelMountListing(libc, statx_number)
    try:
        listing.entry(listing.newest_id())
        listing.entry(listing.mount_id_of("/"))
    except OSError as exc:  # ENOSYS (before 6.8), EPERM (a seccomp profile), anything else
        return None, f"listmount/statmount/statx answered {exc}"
    return listing, ""
