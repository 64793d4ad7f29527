"""Reading a file system's records for the index: only those it may trust, with their stamp.

Split from the index (csi.controller.catalog): what a record on disk may claim is checked
here against the file system as the provider reports it (`FileSystemLimits`): a record is
indexed only when its project-id claim names it, its size fits the file system's maximum,
and a dedicated-kind record only on a file system dedicated to that very volume. Anything
else is skipped with a WARNING naming the file. The stamp (csi.controller.records) taken
before the read tells the index later whether another replica has changed the records since.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from csi.controller.driver_dirs import driver_dir
from csi.controller.project_claims import holder_in
from csi.controller.records import (
    PROJECTS_DIR,
    RECORDS_DIR,
    Stamp,
    VolumeRecord,
    read_record,
    records_stamp,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileSystemLimits:
    """What the provider says of a file system, which its records must agree with."""

    max_volume_bytes: int  # the file system's largest size (0: no limit known)
    dedicated_to: str  # the volume id it is dedicated to ('' for a shared one)


def read_trusted_records(
    fsname: str, mountpoint: Path, limits: FileSystemLimits | None
) -> tuple[list[VolumeRecord], Stamp]:
    """Every valid, trusted record of a file system (others skipped, see `parse_record`
    and `trusted`), and the stamp of the directory taken before they were read."""
    records: list[VolumeRecord] = []
    claimed: dict[int, VolumeRecord] = {}
    with (
        driver_dir(mountpoint, RECORDS_DIR, create=False) as directory,
        driver_dir(mountpoint, PROJECTS_DIR, create=False) as claims,
    ):
        stamp = records_stamp(directory)
        if directory is None:
            return records, stamp
        for name in sorted(os.listdir(directory)):
            if not name.endswith(".json") or name.startswith("."):
                continue
            path = mountpoint / RECORDS_DIR / name
            record = read_record(path, fsname, dir_fd=directory)
            if record is None or not trusted(path, record, claims, limits):
                continue
            rival = claimed.get(record.project_id)
            if rival is not None:
                # Two records, one project id: only the one the claim file names keeps
                # it (and may ever clear its quota); the other is not trusted.
                if holder_in(claims, record.project_id) != record.volume_id:
                    log.warning(
                        "skipping volume record %s: project id %d belongs to %s",
                        path, record.project_id, rival.volume_id,
                    )
                    continue
                log.warning(
                    "skipping volume record of %s: project id %d belongs to %s",
                    rival.volume_id, record.project_id, record.volume_id,
                )
                records.remove(rival)
            claimed[record.project_id] = record
            records.append(record)
    return records, stamp


def trusted(
    path: Path, record: VolumeRecord, claims: int | None, limits: FileSystemLimits | None
) -> bool:
    """Whether a well-formed record may be indexed on its file system (module docstring).
    Without `limits`, only each record's own checks apply."""
    if limits is None:
        return True
    problem = ""
    holder = holder_in(claims, record.project_id)
    if holder != record.volume_id:
        problem = (f"its project id {record.project_id} is claimed by "
                   f"{holder or 'no volume'}, not by {record.volume_id}")
    elif limits.max_volume_bytes and record.capacity_bytes > limits.max_volume_bytes:
        problem = (f"capacity_bytes {record.capacity_bytes} is more than the file "
                   f"system's maximum ({limits.max_volume_bytes})")
    elif record.kind == "dedicated" and limits.dedicated_to != record.volume_id:
        holder = limits.dedicated_to or "no volume (a shared file system)"
        problem = f"its file system is dedicated to {holder}, not to {record.volume_id}"
    if problem:
        log.warning("skipping volume record %s: %s", path, problem)
        return False
    return True
