"""The index over the volume records of every loaded file system (see csi.controller.records).

It answers ListVolumes pages in O(log n + page) and sums reservations per file system
without I/O, and it is the one way the controller changes records, so every change replaces
the generation token. Every file is reached through the driver's directories opened without
following links (driver_dirs).

What is not the index lives beside the records: which records a load may trust
(csi.controller.record_loading: each checked against its project-id claim and the file
system's `FileSystemLimits`), the project-id claims themselves (csi.controller.project_claims,
one O_EXCL file each), the generation stamp and the taking of a record for its removal's last
step (csi.controller.records).

Other replicas change records too: writers replace a generation token beside the records,
and `refresh` reloads a file system's index only when that token (or the directory's times)
changed since this index last read it.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import os
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from csi.controller import project_claims
from csi.controller.driver_dirs import driver_dir
from csi.controller.record_loading import FileSystemLimits, read_trusted_records, trusted
from csi.controller.records import (
    FIRST_PROJECT_ID,
    PROJECTS_DIR,
    RECORDS_DIR,
    TAKEN_MARK,
    Stamp,
    VolumeRecord,
    read_record,
    record_path,
    records_stamp,
    replace_generation,
    take_records,
)
from csi.host.atomicfile import write_json_atomic
from csi.host.keyed_locks import KeyedLocks
from csi.volume_id import parse_volume_id

log = logging.getLogger(__name__)

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
        # Per file system: this process's record changes under way, and the lock of their
        # token step (see `_changing`).
        self._writing: Counter[str] = Counter()
        self._token_locks = KeyedLocks()
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
        with driver_dir(mountpoint, RECORDS_DIR, create=False) as records, self._token_locks(
            fsname
        ):
            # Under the token lock: never between one of this process's token replacements
            # and its adoption of the stamp.
            current = records_stamp(records)
            with self._guard:
                known = self._stamps.get(fsname)
                writing = self._writing[fsname]
        if known == current:
            return False
        if known is not None and known[0] == current[0] and writing:
            # Only the directory's times moved, while this process is changing records: its
            # own writes, whose token step adopts the stamp (another replica's change
            # replaces the token).
            return False
        log.info("records of %s changed (another replica); reloading its index", fsname)
        self.reload(fsname, mountpoint)
        return True

    def reload(self, fsname: str, mountpoint: Path) -> None:
        """Make the index of one file system what its records say now.

        For a replica that was not the active one: another replica may have created or
        deleted volumes meanwhile. In-flight reservations (holds) are kept.
        """
        with self._guard:
            known = self._stamps.get(fsname)
        records, stamp = self._read_all(fsname, mountpoint)
        with self._guard:
            # A stamp this process's own change adopted meanwhile is newer than the one taken
            # before the read, and no other replica's token came between (see `_changing`):
            # going back to the older one would make the next refresh reload again.
            if self._stamps.get(fsname) == known:
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
        with self._guard:
            limits = self._limits.get(record.fsname)
        with driver_dir(mountpoint, PROJECTS_DIR, create=False) as claims:
            return record if trusted(path, record, claims, limits) else None

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
        with driver_dir(mountpoint, RECORDS_DIR, create=False) as records:
            if records is None:
                return []
            # Any taken file of this volume may be a crashed taker's; only content decides.
            leftovers = sorted(
                n for n in os.listdir(records) if n.startswith(f"{subdir}{TAKEN_MARK}")
            )
            with self._changing(fsname, records):
                taken = take_records(records, mountpoint, fsname, finishing,
                                     [f"{subdir}.json", *leftovers])
        return taken

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
        with self._guard:
            limits = self._limits.get(fsname)
        return read_trusted_records(fsname, mountpoint, limits)

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
        """A project id no other volume of this file system holds (see
        csi.controller.project_claims); the index's next id is the first guess."""

        def next_guess() -> int:
            with self._guard:
                project_id = self._next_project_id.get(fsname, FIRST_PROJECT_ID)
                self._next_project_id[fsname] = project_id + 1
            return project_id

        return project_claims.claim_project_id(mountpoint, volume_id, next_guess)

    @staticmethod
    def project_holder(mountpoint: Path, project_id: int) -> str:
        """The volume id a project id's claim file names ('' when unclaimed or unreadable)."""
        return project_claims.project_holder(mountpoint, project_id)

    @staticmethod
    def release_project_id(mountpoint: Path, project_id: int) -> None:
        project_claims.release_project_id(mountpoint, project_id)

    def write(self, mountpoint: Path, record: VolumeRecord, *, durable: bool = True) -> None:
        """Replace the record's file (atomically) and index it. `durable=False`: no fsync,
        for a record that only has to outlive a kill of this process (see VolumeService)."""
        with driver_dir(mountpoint, RECORDS_DIR, create=True) as records:
            assert records is not None  # created
            with self._changing(record.fsname, records):
                write_json_atomic(f"{record.subdir}.json", record.to_json(), durable=durable,
                                  dir_fd=records)
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
        """Around a change of the records: a new generation token tells other replicas.

        This index keeps its stamp current when the token it replaces is the one it last
        knew: then every change since was this process's own (another replica's replaces the
        token, and shows at the next `refresh`). The token step runs under a lock of the file
        system's held for three small calls, never across a record's write: without it, this
        process's own concurrent writers each saw the others' tokens as another replica's and
        every `refresh` reloaded the whole index (314 reloads in 320 creates at 8 clients)."""
        with self._guard:
            self._writing[fsname] += 1
        try:
            yield
        finally:
            with self._token_locks(fsname):
                seen = records_stamp(records)[0]
                token = replace_generation(records)
                info = os.fstat(records)
                after = (token, info.st_mtime_ns, info.st_ctime_ns)
                with self._guard:
                    known = self._stamps.get(fsname)
                    if known is not None and known[0] == seen:
                        self._stamps[fsname] = after
                    self._writing[fsname] -= 1

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
        record = record.compact()  # one copy of a class's parameters for all its volumes
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
