"""The index over the volume records of every loaded file system (see csi.controller.records).

It answers ListVolumes pages in O(log n + page) and sums reservations per file system
without I/O; project ids are claimed beside the records, one O_EXCL file each. Every file
is reached through the driver's directories opened without following links (driver_dirs).

What a record on disk may claim is checked against the file system as the provider reports
it (`FileSystemLimits`): a record is indexed only when its project-id claim names it, its
size fits the file system's maximum, and a dedicated-kind record only on a file system
dedicated to that very volume. Anything else is skipped with a WARNING naming the file.

Other replicas change records too: writers replace a generation token beside the records,
and `refresh` reloads a file system's index only when that token (or the directory's times)
changed since this index last read it.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import os
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from csi.controller.driver_dirs import driver_dir
from csi.controller.records import (
    FIRST_PROJECT_ID,
    PROJECTS_DIR,
    RECORDS_DIR,
    TAKEN_MARK,
    VolumeRecord,
    read_record,
    record_path,
)
from csi.host.atomicfile import read_json, write_json_atomic
from csi.volume_id import parse_volume_id

log = logging.getLogger(__name__)

GENERATION_FILE = "generation"  # in RECORDS_DIR: a token every writer replaces
# What the index last saw of a records directory: the token, its mtime_ns and ctime_ns.
Stamp = tuple[str, int, int]


@dataclass(frozen=True)
class FileSystemLimits:
    """What the provider says of a file system, which its records must agree with."""

    max_volume_bytes: int  # the file system's largest size (0: no limit known)
    dedicated_to: str  # the volume id it is dedicated to ('' for a shared one)


class VolumeCatalog:
    """Index over the records of every file system loaded so far."""

    def __init__(self) -> None:
        self._by_id: dict[str, VolumeRecord] = {}
        self._sorted_ids: list[str] = []
        self._loaded: set[str] = set()
        # Ids indexed from memory only (a size being reserved), not from a record on disk.
        self._held: set[str] = set()
        # Per file system: the next project id to hand out and the bytes reserved, kept as
        # running figures so neither costs more with more volumes.
        self._next_project_id: dict[str, int] = {}
        self._reserved: dict[str, int] = {}
        self._limits: dict[str, FileSystemLimits] = {}
        self._stamps: dict[str, Stamp] = {}
        # Guards the in-memory index only; never held across file-system I/O.
        self._guard = threading.Lock()

    def is_loaded(self, fsname: str) -> bool:
        return fsname in self._loaded

    def load(
        self, fsname: str, mountpoint: Path, limits: FileSystemLimits | None = None
    ) -> None:
        """Index every record on one file system (once, on first use after start).

        `limits`: records are also checked against their project claims and these (the
        VolumeService always gives them; without, only each record's own checks apply).
        """
        if limits is not None:
            with self._guard:
                self._limits[fsname] = limits
        records, stamp = self._read_all(fsname, mountpoint)
        with self._guard:
            if fsname in self._loaded:
                return
            for record in records:
                self._index(record)
            self._loaded.add(fsname)
            self._stamps[fsname] = stamp

    def refresh(self, fsname: str, mountpoint: Path) -> bool:
        """Reload one file system's index if its records changed since it was read (another
        replica wrote); True when it did. One stat and one small read when nothing changed."""
        with driver_dir(mountpoint, RECORDS_DIR, create=False) as records:
            current = _stamp(records)
        with self._guard:
            if self._stamps.get(fsname) == current:
                return False
        log.info("records of %s changed (another replica); reloading its index", fsname)
        self.reload(fsname, mountpoint)
        return True

    def reload(self, fsname: str, mountpoint: Path) -> None:
        """Make the index of one file system what its records say now.

        For a replica that was not the active one: another replica may have created or
        deleted volumes meanwhile. In-flight reservations (holds) are kept.
        """
        records, stamp = self._read_all(fsname, mountpoint)
        with self._guard:
            self._stamps[fsname] = stamp
            for volume_id in [
                v for v, r in self._by_id.items() if r.fsname == fsname and v not in self._held
            ]:
                self._unindex(volume_id)
            for record in records:
                if record.volume_id not in self._held:
                    self._index(record)
            self._loaded.add(fsname)

    def read(self, mountpoint: Path, fsname: str, volume_id: str) -> VolumeRecord | None:
        """The record of `volume_id` as the file system has it now (None: none, or a bad or
        untrusted one, see the module docstring)."""
        subdir = parse_volume_id(volume_id).subdir
        with driver_dir(mountpoint, RECORDS_DIR, create=False) as records:
            if records is None:
                return None
            path = record_path(mountpoint, subdir)
            record = read_record(path, fsname, skip_io_errors=False, dir_fd=records)
        if record is None or record.volume_id != volume_id:
            return None
        with driver_dir(mountpoint, PROJECTS_DIR, create=False) as claims:
            return record if self._trusted(path, record, claims) else None

    def take_for_removal(
        self, mountpoint: Path, fsname: str, finishing: VolumeRecord
    ) -> list[tuple[str, VolumeRecord]]:
        """Take the record of the removal being finished (`finishing`, as read when it
        started) for the last step, with any a crashed taker of the same removal left.

        Only a record in state deleting naming the same directory is taken: a volume made
        again under the same name (same id, another directory) is never touched. Each is
        renamed to a name of this caller's (`<subdir>.json.removing-<directory token>-<own
        token>`): of two replicas finishing the same removal, one rename wins and only the
        winner releases the quota and project id. The caller drops the taken file when done.
        """
        subdir = finishing.subdir
        mark = f"{subdir}{TAKEN_MARK}{finishing.directory.rsplit('-', 1)[-1]}-"
        taken: list[tuple[str, VolumeRecord]] = []
        with driver_dir(mountpoint, RECORDS_DIR, create=False) as records:
            if records is None:
                return taken
            # Any taken file of this volume may be a crashed taker's; only content decides.
            leftovers = sorted(
                n for n in os.listdir(records) if n.startswith(f"{subdir}{TAKEN_MARK}")
            )
            with self._changing(fsname, records):
                self._take(records, mountpoint, fsname, finishing, mark,
                           [f"{subdir}.json", *leftovers], taken)
        return taken

    @staticmethod
    def _take(
        records: int,
        mountpoint: Path,
        fsname: str,
        finishing: VolumeRecord,
        mark: str,
        names: list[str],
        taken: list[tuple[str, VolumeRecord]],
    ) -> None:
        subdir = finishing.subdir
        for name in names:
            path = mountpoint / RECORDS_DIR / name
            if not _finishes(read_record(path, fsname, subdir=subdir, dir_fd=records), finishing):
                continue  # another volume's (or nothing): never taken
            mine = f"{mark}{secrets.token_hex(8)}"
            try:
                os.rename(name, mine, src_dir_fd=records, dst_dir_fd=records)
            except FileNotFoundError:
                continue  # another taker has it
            record = read_record(
                mountpoint / RECORDS_DIR / mine, fsname, subdir=subdir, dir_fd=records
            )
            if record is None or not _finishes(record, finishing):
                # Replaced between the read and the rename: it goes back, untouched.
                _put_back(records, mine, name)
                continue
            taken.append((mine, record))

    def taken_record(self, mountpoint: Path, fsname: str, volume_id: str) -> VolumeRecord | None:
        """A deleted volume's record a taker left behind (it crashed before the last step
        was done), or None."""
        subdir = parse_volume_id(volume_id).subdir
        with driver_dir(mountpoint, RECORDS_DIR, create=False) as records:
            if records is None:
                return None
            for name in sorted(os.listdir(records)):
                if not name.startswith(f"{subdir}{TAKEN_MARK}"):
                    continue
                record = read_record(mountpoint / RECORDS_DIR / name, fsname, subdir=subdir,
                                     dir_fd=records)
                if record is not None and record.volume_id == volume_id:
                    return record
        return None

    def drop_taken(self, mountpoint: Path, fsname: str, name: str) -> None:
        """Remove a record taken by `take_for_removal` (its removal is finished)."""
        with driver_dir(mountpoint, RECORDS_DIR, create=False) as records:
            if records is None:
                return
            with self._changing(fsname, records), contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=records)

    def pending_removals(self, fsname: str, mountpoint: Path) -> list[str]:
        """Ids of the deleted volumes of a file system whose removal is not finished."""
        with self._guard:
            pending = {
                r.volume_id
                for r in self._by_id.values()
                if r.fsname == fsname and r.state == "deleting"
            }
        with driver_dir(mountpoint, RECORDS_DIR, create=False) as records:
            if records is None:
                return sorted(pending)
            for name in os.listdir(records):
                if TAKEN_MARK not in name or name.startswith("."):
                    continue
                subdir = name.split(TAKEN_MARK, 1)[0]
                record = read_record(mountpoint / RECORDS_DIR / name, fsname, subdir=subdir,
                                     dir_fd=records)
                if record is not None:
                    pending.add(record.volume_id)
        return sorted(pending)

    def sync(self, fsname: str, volume_id: str, record: VolumeRecord | None) -> None:
        """Index what the file system said about one volume (`read`): the record, or none."""
        with self._guard:
            if volume_id in self._held:
                return
            if record is None:
                self._unindex(volume_id)
            else:
                self._index(record)

    def _read_all(self, fsname: str, mountpoint: Path) -> tuple[list[VolumeRecord], Stamp]:
        """Every valid, trusted record of a file system (others skipped, see `parse_record`
        and `_trusted`), and the stamp of the directory taken before they were read."""
        records: list[VolumeRecord] = []
        claimed: dict[int, VolumeRecord] = {}
        with (
            driver_dir(mountpoint, RECORDS_DIR, create=False) as directory,
            driver_dir(mountpoint, PROJECTS_DIR, create=False) as claims,
        ):
            stamp = _stamp(directory)
            if directory is None:
                return records, stamp
            for name in sorted(os.listdir(directory)):
                if not name.endswith(".json") or name.startswith("."):
                    continue
                path = mountpoint / RECORDS_DIR / name
                record = read_record(path, fsname, dir_fd=directory)
                if record is None or not self._trusted(path, record, claims):
                    continue
                rival = claimed.get(record.project_id)
                if rival is not None:
                    # Two records, one project id: only the one the claim file names keeps
                    # it (and may ever clear its quota); the other is not trusted.
                    if _holder(claims, record.project_id) != record.volume_id:
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

    def _trusted(self, path: Path, record: VolumeRecord, claims: int | None) -> bool:
        """Whether a well-formed record may be indexed on its file system (module docstring)."""
        with self._guard:
            limits = self._limits.get(record.fsname)
        if limits is None:
            return True
        problem = ""
        holder = _holder(claims, record.project_id)
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

    def forget_file_system(self, fsname: str) -> None:
        with self._guard:
            for volume_id in [v for v, r in self._by_id.items() if r.fsname == fsname]:
                self._held.discard(volume_id)
                self._unindex(volume_id)
            self._loaded.discard(fsname)
            self._next_project_id.pop(fsname, None)
            self._reserved.pop(fsname, None)
            self._limits.pop(fsname, None)
            self._stamps.pop(fsname, None)

    def allocate_project_id(self, fsname: str, mountpoint: Path, volume_id: str) -> int:
        """A project id no other volume of this file system holds.

        The claim is a marker file created with O_EXCL on the file system itself, so two
        controller replicas (around a leader change) can never hand out the same id, even if
        one's in-memory index is behind; the index only makes the first guess right.
        """
        flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
        with driver_dir(mountpoint, PROJECTS_DIR, create=True) as claims:
            while True:
                with self._guard:
                    project_id = self._next_project_id.get(fsname, FIRST_PROJECT_ID)
                    self._next_project_id[fsname] = project_id + 1
                try:
                    fd = os.open(str(project_id), flags, 0o600, dir_fd=claims)
                except FileExistsError:
                    continue
                with os.fdopen(fd, "w") as claim:
                    claim.write(volume_id)
                return project_id

    @staticmethod
    def project_holder(mountpoint: Path, project_id: int) -> str:
        """The volume id a project id's claim file names ('' when unclaimed or unreadable)."""
        with driver_dir(mountpoint, PROJECTS_DIR, create=False) as claims:
            return _holder(claims, project_id)

    @staticmethod
    def release_project_id(mountpoint: Path, project_id: int) -> None:
        with driver_dir(mountpoint, PROJECTS_DIR, create=False) as claims:
            if claims is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(str(project_id), dir_fd=claims)

    def write(self, mountpoint: Path, record: VolumeRecord) -> None:
        with driver_dir(mountpoint, RECORDS_DIR, create=True) as records:
            assert records is not None  # created
            with self._changing(record.fsname, records):
                write_json_atomic(f"{record.subdir}.json", record.to_json(), dir_fd=records)
        with self._guard:
            self._held.discard(record.volume_id)
            self._index(record)

    def hold(self, record: VolumeRecord) -> None:
        """Index a record in memory only: its size counts as reserved while growth is checked."""
        with self._guard:
            self._held.add(record.volume_id)
            self._index(record)

    def release_hold(self, record: VolumeRecord) -> None:
        with self._guard:
            self._held.discard(record.volume_id)
            self._unindex(record.volume_id)

    def restore(self, record: VolumeRecord) -> None:
        """Index a record as it is on disk again, replacing a hold (a change that failed)."""
        with self._guard:
            self._held.discard(record.volume_id)
            self._index(record)

    def remove(self, mountpoint: Path, record: VolumeRecord) -> None:
        with driver_dir(mountpoint, RECORDS_DIR, create=False) as records:
            if records is not None:
                with self._changing(record.fsname, records), contextlib.suppress(
                    FileNotFoundError
                ):
                    os.unlink(f"{record.subdir}.json", dir_fd=records)
        self.release_project_id(mountpoint, record.project_id)
        with self._guard:
            self._held.discard(record.volume_id)
            self._unindex(record.volume_id)

    @contextlib.contextmanager
    def _changing(self, fsname: str, records: int) -> Iterator[None]:
        """Around a change of the records: a new generation token tells other replicas. This
        index keeps its stamp current only when nobody else wrote since it last looked (else
        the next `refresh` reloads, as it must)."""
        before = _stamp(records)
        yield
        # Another writer's change during this one's shows as a token other than `before`'s
        # now (or later, once it replaces the token): not taken for this writer's own.
        seen = _stamp(records)[0]
        write_json_atomic(GENERATION_FILE, secrets.token_hex(8), durable=False, dir_fd=records)
        after = _stamp(records)
        with self._guard:
            if self._stamps.get(fsname) == before and seen == before[0]:
                self._stamps[fsname] = after

    def get(self, volume_id: str) -> VolumeRecord | None:
        return self._by_id.get(volume_id)

    def reserved_bytes(self, fsname: str) -> int:
        with self._guard:
            return self._reserved.get(fsname, 0)

    def page(self, after: str, limit: int) -> tuple[list[VolumeRecord], str]:
        """Up to `limit` ready records with ids after `after`, and the next token ('' at end).

        Costs O(log n + limit): the token is the last id of the previous page, found by bisection,
        so a token whose volume was deleted meanwhile still resumes at the right place.
        """
        with self._guard:
            position = bisect.bisect_right(self._sorted_ids, after) if after else 0
            page: list[VolumeRecord] = []
            while position < len(self._sorted_ids) and (not limit or len(page) < limit):
                record = self._by_id[self._sorted_ids[position]]
                position += 1
                if record.state == "ready":
                    page.append(record)
            more = position < len(self._sorted_ids)
            return page, (page[-1].volume_id if page and more else "")

    def __iter__(self) -> Iterator[VolumeRecord]:
        with self._guard:
            return iter(list(self._by_id.values()))

    def __len__(self) -> int:
        return len(self._by_id)

    def _index(self, record: VolumeRecord) -> None:
        previous = self._by_id.get(record.volume_id)
        if previous is None:
            bisect.insort(self._sorted_ids, record.volume_id)
        else:
            self._reserved[previous.fsname] -= previous.capacity_bytes
        self._by_id[record.volume_id] = record
        self._reserved[record.fsname] = self._reserved.get(record.fsname, 0) + record.capacity_bytes
        self._next_project_id[record.fsname] = max(
            self._next_project_id.get(record.fsname, FIRST_PROJECT_ID), record.project_id + 1
        )

    def _unindex(self, volume_id: str) -> None:
        previous = self._by_id.pop(volume_id, None)
        if previous is not None:
            self._reserved[previous.fsname] -= previous.capacity_bytes
            position = bisect.bisect_left(self._sorted_ids, volume_id)
            if position < len(self._sorted_ids) and self._sorted_ids[position] == volume_id:
                del self._sorted_ids[position]


def _stamp(records: int | None) -> Stamp:
    if records is None:
        return ("", 0, 0)
    try:
        token = read_json(GENERATION_FILE, follow_symlinks=False, dir_fd=records)
    except (OSError, ValueError):
        token = None
    info = os.fstat(records)
    return (str(token or ""), info.st_mtime_ns, info.st_ctime_ns)


def _holder(claims: int | None, project_id: int) -> str:
    """The volume id a project id's claim file names ('' when unclaimed or unreadable)."""
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


def _finishes(record: VolumeRecord | None, finishing: VolumeRecord) -> bool:
    """Whether `record` is the deleted volume whose removal is being finished."""
    return (
        record is not None
        and record.state == "deleting"
        and record.volume_id == finishing.volume_id
        and record.directory == finishing.directory
    )


def _put_back(records: int, taken: str, name: str) -> None:
    """Give a record taken by mistake its name back, unless a newer one is there already."""
    try:
        os.link(taken, name, src_dir_fd=records, dst_dir_fd=records, follow_symlinks=False)
    except FileExistsError:
        log.info("record %s was written again meanwhile; the copy taken is dropped", name)
    os.unlink(taken, dir_fd=records)
