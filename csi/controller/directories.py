"""Volume directories on a file system: made under csi-volumes/, moved to the trash, removed.

Nothing here follows a symlink: `csi-volumes/` and the trash are reached through
driver_dirs, and the removal works from open directory fds, so a link a pod planted in its
volume (or swapped in while the removal runs) cannot lead outside the volume.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from csi.controller.driver_dirs import driver_dir
from csi.controller.records import TRASH_DIR, VOLUMES_DIR, VolumeRecord
from csi.errors import FailedPrecondition

log = logging.getLogger(__name__)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def make_directory(mountpoint: Path, record: VolumeRecord, *, made_before: bool) -> None:
    """mkdir the volume's directory in `csi-volumes/` (reached without following links)."""
    name = _leaf(record.directory, VOLUMES_DIR)
    with driver_dir(mountpoint, VOLUMES_DIR, create=True) as parent:
        try:
            os.mkdir(name, 0o777, dir_fd=parent)
        except FileExistsError:
            if not made_before:
                raise _not_ours(record) from None
        try:
            directory = os.open(name, _DIR_FLAGS, dir_fd=parent)
        except OSError as exc:  # a symlink or a file where the directory should be
            raise _not_ours(record) from exc
        try:
            # mkdir honours the umask; a volume root must be writable by the pod's user
            # (any uid: the volume's quota, not its mode, is what keeps pods apart).
            os.fchmod(directory, 0o777)
        finally:
            os.close(directory)


def _not_ours(record: VolumeRecord) -> FailedPrecondition:
    return FailedPrecondition(
        f"{record.directory} on {record.fsname} exists but lustre-csi did not make it for "
        "this volume; it is left alone"
    )


def _leaf(relative: str, parent: str) -> str:
    """The last component of `relative`, which must be directly in `parent`."""
    head, _, name = relative.rpartition("/")
    if head != parent or not name or name in (".", ".."):
        raise FailedPrecondition(f"{relative!r} is not an entry of {parent}/; refusing")
    return name


def move_to_trash(mountpoint: Path, record: VolumeRecord) -> None:
    """Rename the volume's directory into the trash (same file system: atomic). Idempotent."""
    name = _leaf(record.directory, VOLUMES_DIR)
    with driver_dir(mountpoint, VOLUMES_DIR, create=False) as volumes:
        if volumes is None:
            return  # no volume directory was ever made here
        with driver_dir(mountpoint, TRASH_DIR, create=True) as trash:
            try:
                os.rename(name, _leaf(record.trash, TRASH_DIR), src_dir_fd=volumes,
                          dst_dir_fd=trash)
            except FileNotFoundError:
                pass  # moved already (or never made)
            except OSError as exc:
                raise FailedPrecondition(
                    f"volume {record.volume_id}: moving {record.directory} away failed "
                    f"({exc}); the volume, its quota and project id are kept, and "
                    "DeleteVolume will retry"
                ) from exc


PROGRESS_EVERY = 10_000  # entries between progress lines of a long removal
SMALL_TREE = 64  # top-level entries (files only) a DeleteVolume removes itself


def remove_tree(mountpoint: Path, trash: str, volume_id: str, *, small_only: bool) -> bool:
    """Remove a deleted volume's tree in the trash (`trash`: its path below the root)
    without following symlinks; False (nothing removed) when `small_only` and the tree is not
    a few plain files. Raises OSError when something cannot be removed."""
    name = _leaf(trash, TRASH_DIR)
    with driver_dir(mountpoint, TRASH_DIR, create=False) as parent:
        if parent is None:
            return True
        try:
            top = os.open(name, _DIR_FLAGS, dir_fd=parent)
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
                for entry_name in names:
                    os.unlink(entry_name, dir_fd=top)
            else:
                _remove_below(top, mountpoint / trash, volume_id)
        finally:
            os.close(top)
        os.rmdir(name, dir_fd=parent)
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
