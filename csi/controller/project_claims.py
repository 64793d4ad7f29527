"""Project-id claims: one O_EXCL file per project id in use, naming the volume that holds it.

Split from the index (csi.controller.catalog) because a claim is the file system's word, not
the index's: two controller replicas (around a leader change) can never hand out the same id,
even if one's in-memory index is behind; the index only makes the first guess right. Only the
volume a claim names may clear that project's quota or give the id back.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

from csi.controller.driver_dirs import driver_dir
from csi.controller.records import PROJECTS_DIR


def claim_project_id(mountpoint: Path, volume_id: str, next_guess: Callable[[], int]) -> int:
    """Claim the first id `next_guess` offers (called again after each taken one) for
    `volume_id`, with a claim file created O_EXCL."""
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    with driver_dir(mountpoint, PROJECTS_DIR, create=True) as claims:
        while True:
            project_id = next_guess()
            try:
                fd = os.open(str(project_id), flags, 0o600, dir_fd=claims)
            except FileExistsError:
                continue
            with os.fdopen(fd, "w") as claim:
                claim.write(volume_id)
            return project_id


def project_holder(mountpoint: Path, project_id: int) -> str:
    """The volume id a project id's claim file names ('' when unclaimed or unreadable)."""
    with driver_dir(mountpoint, PROJECTS_DIR, create=False) as claims:
        return holder_in(claims, project_id)


def holder_in(claims: int | None, project_id: int) -> str:
    """`project_holder` in the claims directory already opened as `claims`."""
    if claims is None:
        return ""
    try:
        fd = os.open(str(project_id), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=claims)
    except OSError:
        return ""
    try:
        with os.fdopen(fd, encoding="utf-8") as claim:
            return claim.read().strip()
    except (OSError, ValueError):
        return ""


def release_project_id(mountpoint: Path, project_id: int) -> None:
    with driver_dir(mountpoint, PROJECTS_DIR, create=False) as claims:
        if claims is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(str(project_id), dir_fd=claims)
