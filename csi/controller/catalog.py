"""The index over the volume records of every loaded file system (see csi.controller.records).

It answers ListVolumes pages in O(log n + page) and sums reservations per file system
without I/O; project ids are claimed beside the records, one O_EXCL file each.
"""

from __future__ import annotations

import bisect
import logging
import os
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path

from csi.controller.records import (
    FIRST_PROJECT_ID,
    PROJECTS_DIR,
    RECORDS_DIR,
    TAKEN_MARK,
    VolumeRecord,
    read_record,
    record_path,
)
from csi.host.atomicfile import write_json_atomic
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
        # Guards the in-memory index only; never held across file-system I/O.
        self._guard = threading.Lock()

    def is_loaded(self, fsname: str) -> bool:
        return fsname in self._loaded

    def load(self, fsname: str, mountpoint: Path) -> None:
        """Index every record on one file system (once, on first use after start)."""
        records = self._read_all(fsname, mountpoint)
        with self._guard:
            if fsname in self._loaded:
                return
            for record in records:
                self._index(record)
            self._loaded.add(fsname)

    def reload(self, fsname: str, mountpoint: Path) -> None:
        """Make the index of one file system what its records say now.

        For a replica that was not the active one: another replica may have created or
        deleted volumes meanwhile. In-flight reservations (holds) are kept.
        """
        records = self._read_all(fsname, mountpoint)
        with self._guard:
            for volume_id in [
                v for v, r in self._by_id.items() if r.fsname == fsname and v not in self._held
            ]:
                self._unindex(volume_id)
            for record in records:
                if record.volume_id not in self._held:
                    self._index(record)
            self._loaded.add(fsname)

    def read(self, mountpoint: Path, fsname: str, volume_id: str) -> VolumeRecord | None:
        """The record of `volume_id` as the file system has it now (None: none, or a bad one)."""
        subdir = parse_volume_id(volume_id).subdir
        record = read_record(record_path(mountpoint, subdir), fsname, skip_io_errors=False)
        return record if record is not None and record.volume_id == volume_id else None

    def take_for_removal(
        self, mountpoint: Path, fsname: str, subdir: str
    ) -> list[tuple[Path, VolumeRecord]]:
        """Take a deleted volume's record (and any a crashed taker left) for the last step.

        Each is renamed to a name of this caller's: of two replicas finishing the same
        removal, one rename wins and only the winner releases the quota and project id.
        The caller removes the taken file when done.
        """
        leftovers = sorted((mountpoint / RECORDS_DIR).glob(f"{subdir}{TAKEN_MARK}*"))
        candidates = [record_path(mountpoint, subdir), *leftovers]
        taken = []
        for path in candidates:
            mine = path.with_name(f"{subdir}{TAKEN_MARK}{secrets.token_hex(8)}")
            try:
                os.rename(path, mine)
            except FileNotFoundError:
                continue  # another taker has it, or it was never there
            record = read_record(mine, fsname, subdir=subdir)
            if record is None or record.state != "deleting":
                log.warning("dropping taken volume record %s: not a deleted volume's", mine)
                mine.unlink(missing_ok=True)
                continue
            taken.append((mine, record))
        return taken

    def pending_removals(self, fsname: str, mountpoint: Path) -> list[str]:
        """Ids of the deleted volumes of a file system whose removal is not finished."""
        with self._guard:
            pending = {
                r.volume_id
                for r in self._by_id.values()
                if r.fsname == fsname and r.state == "deleting"
            }
        for path in (mountpoint / RECORDS_DIR).glob(f"*{TAKEN_MARK}*"):
            subdir = path.name.split(TAKEN_MARK, 1)[0]
            record = read_record(path, fsname, subdir=subdir)
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

    @staticmethod
    def _read_all(fsname: str, mountpoint: Path) -> list[VolumeRecord]:
        """Every valid record of a file system (bad ones skipped, see `parse_record`)."""
        records: list[VolumeRecord] = []
        claimed: dict[int, VolumeRecord] = {}
        for path in sorted((mountpoint / RECORDS_DIR).glob("*.json")):
            record = read_record(path, fsname)
            if record is None:
                continue
            rival = claimed.get(record.project_id)
            if rival is not None:
                # Two records, one project id: only the one the claim file names keeps it
                # (and may ever clear its quota); the other is not trusted.
                if VolumeCatalog.project_holder(mountpoint, record.project_id) != record.volume_id:
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
        return records

    def forget_file_system(self, fsname: str) -> None:
        with self._guard:
            for volume_id in [v for v, r in self._by_id.items() if r.fsname == fsname]:
                self._held.discard(volume_id)
                self._unindex(volume_id)
            self._loaded.discard(fsname)
            self._next_project_id.pop(fsname, None)
            self._reserved.pop(fsname, None)

    def allocate_project_id(self, fsname: str, mountpoint: Path, volume_id: str) -> int:
        """A project id no other volume of this file system holds.

        The claim is a marker file created with O_EXCL on the file system itself, so two
        controller replicas (around a leader change) can never hand out the same id, even if
        one's in-memory index is behind; the index only makes the first guess right.
        """
        claims = mountpoint / PROJECTS_DIR
        claims.mkdir(parents=True, exist_ok=True)
        while True:
            with self._guard:
                project_id = self._next_project_id.get(fsname, FIRST_PROJECT_ID)
                self._next_project_id[fsname] = project_id + 1
            try:
                fd = os.open(claims / str(project_id), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                continue
            with os.fdopen(fd, "w") as claim:
                claim.write(volume_id)
            return project_id

    @staticmethod
    def project_holder(mountpoint: Path, project_id: int) -> str:
        """The volume id a project id's claim file names ('' when unclaimed or unreadable)."""
        try:
            with open(mountpoint / PROJECTS_DIR / str(project_id), encoding="utf-8") as claim:
                return claim.read().strip()
        except (OSError, ValueError):
            return ""

    @staticmethod
    def release_project_id(mountpoint: Path, project_id: int) -> None:
        (mountpoint / PROJECTS_DIR / str(project_id)).unlink(missing_ok=True)

    def write(self, mountpoint: Path, record: VolumeRecord) -> None:
        write_json_atomic(record_path(mountpoint, record.subdir), record.to_json())
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
        record_path(mountpoint, record.subdir).unlink(missing_ok=True)
        self.release_project_id(mountpoint, record.project_id)
        with self._guard:
            self._held.discard(record.volume_id)
            self._unindex(record.volume_id)

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
