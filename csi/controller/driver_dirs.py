"""The driver's own directories of a mounted file system, opened without following links.

Anyone who can write the file system's root could swap `.lustre-csi`, one of its
subdirectories or `csi-volumes` for a symlink, and every write, rename or removal the
controller does by path would then land wherever the link points. So each directory is
reached from the mount root one component at a time, each opened O_NOFOLLOW|O_DIRECTORY
relative to its parent's fd, checked to be on the mount's device and owned by the
controller's user (root), and every create, rename and unlink is done relative to that fd
(`dir_fd=`). A directory that fails a check is refused (FailedPrecondition), nothing written.

Modes: `.lustre-csi` and everything below it 0700 (records and claims are nobody else's
business); `csi-volumes` 0711, so no pod can list other volumes' names (it can still pass
through to a directory it is given, which is how a static volume's path works). The volume
directories themselves stay 0777 (see directories.make_directory). Wider modes, as an older
version left them, are narrowed with a WARNING.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from csi.controller.records import METADATA_DIR, VOLUMES_DIR
from csi.errors import FailedPrecondition

log = logging.getLogger(__name__)

METADATA_MODE = 0o700
VOLUMES_PARENT_MODE = 0o711
# O_RDONLY rather than O_PATH: the same fd lists the directory and fchmods it.
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _mode_for(relative: str) -> int:
    return VOLUMES_PARENT_MODE if relative == VOLUMES_DIR else METADATA_MODE


def open_driver_dir(mountpoint: Path, relative: str, *, create: bool) -> int | None:
    """An fd of `<mountpoint>/<relative>` (e.g. `.lustre-csi/volumes`), reached without
    following links; None when it does not exist and `create` is false. The caller closes it.
    """
    if not (relative == VOLUMES_DIR or relative.startswith(f"{METADATA_DIR}")):
        raise ValueError(f"{relative!r} is not a directory of the driver's")
    current = os.open(mountpoint, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        device = os.fstat(current).st_dev
        parts = relative.split("/")
        for depth, name in enumerate(parts):
            shown = "/".join(parts[: depth + 1])
            child = _open_child(current, name, shown, create=create, device=device)
            os.close(current)
            current = -1
            if child is None:
                return None
            current = child
        opened, current = current, -1
        return opened
    finally:
        if current != -1:
            os.close(current)


@contextlib.contextmanager
def driver_dir(mountpoint: Path, relative: str, *, create: bool) -> Iterator[int | None]:
    fd = open_driver_dir(mountpoint, relative, create=create)
    try:
        yield fd
    finally:
        if fd is not None:
            os.close(fd)


def _open_child(parent: int, name: str, shown: str, *, create: bool, device: int) -> int | None:
    mode = _mode_for(shown)
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        if not create:
            return None
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, mode, dir_fd=parent)
        fd = _open_existing(parent, name, shown)
    except OSError as exc:
        raise _refusal(shown, exc) from exc
    try:
        info = os.fstat(fd)
        if info.st_dev != device:
            raise FailedPrecondition(
                f"{shown} on this file system is another mount; lustre-csi keeps its own data "
                "there and refuses to work through it: unmount it"
            )
        if info.st_uid != os.geteuid():
            raise FailedPrecondition(
                f"{shown} on this file system is owned by uid {info.st_uid}, not by lustre-csi "
                f"(uid {os.geteuid()}): its owner could swap entries in it; refusing. Make it "
                "root-owned (chown 0:0) once its content is checked"
            )
        if stat.S_IMODE(info.st_mode) & ~mode:
            log.warning("%s was mode %o; making it %o", shown, stat.S_IMODE(info.st_mode), mode)
            os.fchmod(fd, mode)
        elif stat.S_IMODE(info.st_mode) != mode:
            os.fchmod(fd, mode)  # mkdir honours the umask
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_existing(parent: int, name: str, shown: str) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent)
    except OSError as exc:
        raise _refusal(shown, exc) from exc


def _refusal(shown: str, exc: OSError) -> Exception:
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        return FailedPrecondition(
            f"{shown} on this file system is a symlink or not a directory; lustre-csi keeps "
            "its own data there and will not follow it: move it away"
        )
    return exc
