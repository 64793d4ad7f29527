"""Volume directories on a file system: made under csi-volumes/, moved to the trash, removed.

Removal never follows a symlink: it works from open directory fds, so a link a pod planted
in its volume (or swapped in while the removal runs) cannot lead outside the volume.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import time
from pathlib import Path

from csi.controller.records import TRASH_DIR, VOLUMES_DIR, VolumeRecord
from csi.errors import FailedPrecondition

log = logging.getLogger(__name__)


def make_directory(mountpoint: Path, record: VolumeRecord, *, made_before: bool) -> None:
    ensure_owned_parent(mountpoint / VOLUMES_DIR)
    directory = mountpoint / record.directory
    try:
        directory.mkdir(mode=0o777)
    except FileExistsError:
        if not made_before or not directory.is_dir() or directory.is_symlink():
            raise FailedPrecondition(
                f"{record.directory} on {record.fsname} exists but lustre-csi did not "
                "make it for this volume; it is left alone"
            ) from None
    # mkdir honours the umask; a volume root must be writable by the pod's user.
    directory.chmod(0o777)


def move_to_trash(mountpoint: Path, record: VolumeRecord) -> None:
    """Rename the volume's directory into the trash (same file system: atomic). Idempotent."""
    parent = mountpoint / VOLUMES_DIR
    try:
        if stat.S_ISLNK(os.lstat(parent).st_mode):
            raise FailedPrecondition(f"{VOLUMES_DIR} on {record.fsname} is a symlink; refusing")
    except FileNotFoundError:
        return  # no volume directory was ever made here
    (mountpoint / TRASH_DIR).mkdir(parents=True, exist_ok=True)
    try:
        os.rename(mountpoint / record.directory, mountpoint / record.trash)
    except FileNotFoundError:
        pass  # moved already (or never made)
    except OSError as exc:
        raise FailedPrecondition(
            f"volume {record.volume_id}: moving {record.directory} away failed ({exc}); the "
            "volume, its quota and project id are kept, and DeleteVolume will retry"
        ) from exc


PROGRESS_EVERY = 10_000  # entries between progress lines of a long removal
SMALL_TREE = 64  # top-level entries (files only) a DeleteVolume removes itself


def remove_tree(path: Path, volume_id: str, *, small_only: bool) -> bool:
    """Remove a tree without following symlinks; False (nothing removed) when `small_only`
    and the tree is not a few plain files. Raises OSError when something cannot be removed."""
    try:
        top = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return True
    try:
        if small_only:
            with os.scandir(top) as entries:
                names: list[str] = []
                for entry in entries:
                    if len(names) == SMALL_TREE or entry.is_dir(follow_symlinks=False):
                        return False
                    names.append(entry.name)
            for name in names:
                os.unlink(name, dir_fd=top)
        else:
            _remove_below(top, path, volume_id)
    finally:
        os.close(top)
    path.rmdir()
    return True


def _remove_below(top: int, path: Path, volume_id: str) -> None:
    """Everything below the directory open at `top` (fd-relative, so a symlink swapped in
    by a pod still using the volume cannot lead outside it), with progress in the log."""
    started = time.monotonic()
    removed = 0
    log.info("volume %s: removing %s", volume_id, path)
    walk = os.fwalk(".", topdown=False, follow_symlinks=False, dir_fd=top)
    for _, directories, files, here in walk:
        for name in files:
            os.unlink(name, dir_fd=here)
        for name in directories:
            try:
                os.rmdir(name, dir_fd=here)
            except NotADirectoryError:
                os.unlink(name, dir_fd=here)  # a symlink to a directory
        before, removed = removed, removed + len(files) + len(directories)
        if removed // PROGRESS_EVERY != before // PROGRESS_EVERY:
            log.info(
                "volume %s: %d entries removed so far (%.0f s)",
                volume_id, removed, time.monotonic() - started,
            )
    log.info("volume %s: removed %d entries in %.1f s", volume_id, removed,
             time.monotonic() - started)


def ensure_owned_parent(parent: Path) -> None:
    """The driver's `csi-volumes/`: a real directory (not a link), writable by nobody else.

    Nobody but root can then add or swap entries beside the volume directories.
    """
    with contextlib.suppress(FileExistsError):
        parent.mkdir(mode=0o755)
    info = os.lstat(parent)
    if not stat.S_ISDIR(info.st_mode):
        raise FailedPrecondition(
            f"{parent.name} on this file system is not a directory; lustre-csi keeps its "
            "volumes there: move it away"
        )
    if info.st_mode & 0o022:
        log.warning("%s was writable by group or others; making it 0755", parent)
        os.chmod(parent, stat.S_IMODE(info.st_mode) & ~0o022)
