"""Volume records: one small JSON file per volume, kept on the file system it lives on.

The file system is the system of record (`<mount>/.lustre-csi/volumes/<subdir>.json`), next to
the volume's directory and quota, so a volume and its record cannot drift apart across
controller restarts or replicas. An in-memory index over the loaded records answers
ListVolumes pages in O(log n + page) and sums reservations per file system without I/O.

Layout below a file system's root (what the driver owns there):
- `csi-volumes/<subdir>-<token>`: a volume's directory. The driver makes it with mkdir
  (never exist_ok) under `csi-volumes/`, a directory it creates root-owned and 0755; the
  random token is written in the volume's record before the mkdir, so a directory with that
  name can only be one the driver made for that record, and no directory an admin or an
  earlier, lost record left behind is ever adopted (or later deleted) as a volume's.
- `.lustre-csi/volumes/<subdir>.json`: the records; `.lustre-csi/projects/<id>`: project id
  claims (each names the volume id holding it).
- `.lustre-csi/trash/<subdir>-<token>`: a deleted volume's directory, moved there by one
  rename inside DeleteVolume and removed by a background worker; the record (state
  deleting, with the trash path) stays until the removal is done, then the quota and the
  project id go. A worker takes a record for that last step by renaming it to
  `<subdir>.json.removing-<token>` (one rename wins, so two replicas never release the same
  project id twice); a taken record left by a crash is finished by the next scan.

Records are not trusted as read: anyone who can write the file system can write one. Each
is checked on load (`parse_record`): its file name, volume id, kind, fsname and subdir must
agree, its directory must be exactly one the driver names (`csi-volumes/<subdir>-<token>`),
types and state must be right. A record that fails (empty, corrupt, forged) is skipped with a
WARNING naming the file: it never breaks the other records or any call, and nothing is ever
deleted for it.
"""

from __future__ import annotations

import bisect
import errno
import logging
import os
import re
import secrets
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from csi.errors import DriverError, InProgress
from csi.host.atomicfile import read_json, write_json_atomic
from csi.lustre.client import MAX_PROJECT_ID
from csi.volume_id import parse_volume_id, subdir_for_name

log = logging.getLogger(__name__)

RECORDS_DIR = ".lustre-csi/volumes"
PROJECTS_DIR = ".lustre-csi/projects"  # one O_EXCL claim file per project id in use
FIRST_PROJECT_ID = 1000  # below this, ids are commonly taken by site-managed projects
VOLUMES_DIR = "csi-volumes"  # parent of every volume directory the driver makes
TRASH_DIR = ".lustre-csi/trash"  # deleted volumes' directories, until they are removed
_TAKEN = ".json.removing-"  # `<subdir>.json.removing-<token>`: a record taken for release
RECORD_STATES = ("creating", "ready", "deleting")
_TOKEN = re.compile(r"^[0-9a-f]{16}$")


def new_directory(subdir: str) -> str:
    """A fresh volume directory path (below the root) for a volume whose id names `subdir`."""
    return f"{VOLUMES_DIR}/{subdir}-{secrets.token_hex(8)}"


def trash_for(directory: str) -> str:
    """Where a volume's directory goes when the volume is deleted (same file system)."""
    return f"{TRASH_DIR}/{directory.rsplit('/', 1)[-1]}"


@dataclass(frozen=True)
class VolumeRecord:
    name: str
    volume_id: str
    kind: str
    fsname: str
    subdir: str
    capacity_bytes: int
    project_id: int
    parameters: dict[str, Any] = field(default_factory=dict)
    # creating -> ready -> deleting: a record is written before any effect, so a crash at any
    # point leaves a record the next attempt finishes (or deletes) instead of a leak.
    state: str = "creating"
    # The volume's directory below the file-system root (`csi-volumes/<subdir>-<token>`),
    # named here before it is made: the volume_context `subdir` the node mounts.
    directory: str = ""
    # While deleting: where the directory was moved to (`.lustre-csi/trash/...`).
    trash: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> VolumeRecord:
        return cls(**{k: document[k] for k in cls.__dataclass_fields__ if k in document})


def record_path(mountpoint: Path, subdir: str) -> Path:
    return mountpoint / RECORDS_DIR / f"{subdir}.json"


class InvalidRecord(ValueError):
    """A record file that is not one this driver wrote (the message says what is wrong)."""


_TYPES: dict[str, type] = {
    "name": str,
    "volume_id": str,
    "kind": str,
    "fsname": str,
    "subdir": str,
    "capacity_bytes": int,
    "project_id": int,
    "parameters": dict,
    "state": str,
    "directory": str,
}


def parse_record(document: Any, *, fsname: str, subdir: str) -> VolumeRecord:
    """The record in `document`, read from file system `fsname`'s `<subdir>.json`, checked.

    InvalidRecord unless every field has its type, the id parses and names this file system
    and this file's subdir, the name maps to that subdir, the state is known and the
    directory is exactly `csi-volumes/<subdir>-<token>`: nothing in a record can point a
    later deletion outside the driver's own directories.
    """
    if not isinstance(document, dict):
        raise InvalidRecord(f"not a JSON object but {type(document).__name__}")
    for key, kind in _TYPES.items():
        value = document.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise InvalidRecord(f"{key} is {value!r}, not a {kind.__name__}")
    try:
        parsed = parse_volume_id(document["volume_id"])
    except DriverError as exc:
        raise InvalidRecord(f"volume_id: {exc}") from None
    expected = {"kind": parsed.kind, "fsname": fsname, "subdir": subdir}
    for key, value in expected.items():
        if document[key] != value or getattr(parsed, key) != value:
            raise InvalidRecord(
                f"{key} {document[key]!r} (id {document['volume_id']!r}) does not match the "
                f"record's place ({value!r})"
            )
    if subdir_for_name(document["name"]) != subdir:
        raise InvalidRecord(f"name {document['name']!r} does not belong to subdir {subdir!r}")
    if document["state"] not in RECORD_STATES:
        raise InvalidRecord(f"state {document['state']!r} is not one of {RECORD_STATES}")
    if not 0 < document["capacity_bytes"] < 1 << 63:
        raise InvalidRecord(f"capacity_bytes {document['capacity_bytes']} is out of range")
    if not FIRST_PROJECT_ID <= document["project_id"] <= MAX_PROJECT_ID:
        raise InvalidRecord(f"project_id {document['project_id']} is out of range")
    prefix = f"{VOLUMES_DIR}/{subdir}-"
    directory = document["directory"]
    if not directory.startswith(prefix) or not _TOKEN.match(directory[len(prefix) :]):
        raise InvalidRecord(f"directory {directory!r} is not {prefix}<token>")
    trash = document.get("trash", "")
    if trash not in ("", trash_for(directory)):
        raise InvalidRecord(f"trash {trash!r} is not {trash_for(directory)!r}")
    return VolumeRecord.from_json(document)


def read_record(
    path: Path, fsname: str, *, subdir: str = "", skip_io_errors: bool = True
) -> VolumeRecord | None:
    """The checked record at `path`; None for a missing one, and None (with a WARNING naming
    the file) for a bad one.

    `skip_io_errors=False`: a read that fails for a reason other than the file itself (EIO,
    a server away) raises InProgress instead, so one volume's lookup never mistakes a
    transient failure for "no such volume".
    """
    subdir = subdir or path.name[: -len(".json")]
    try:
        document = read_json(path, follow_symlinks=False)
    except OSError as exc:
        if skip_io_errors or exc.errno in (errno.ELOOP, errno.EISDIR):
            log.warning("skipping volume record %s: %s", path, exc)
            return None
        raise InProgress(f"reading volume record {path} failed ({exc}); retry") from exc
    except ValueError as exc:
        log.warning("skipping volume record %s: %s", path, exc)
        return None
    if document is None and not os.path.lexists(path):
        return None  # removed meanwhile, or never there
    try:
        return parse_record(document, fsname=fsname, subdir=subdir)
    except InvalidRecord as exc:
        log.warning("skipping volume record %s: %s", path, exc)
        return None


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
        leftovers = sorted((mountpoint / RECORDS_DIR).glob(f"{subdir}{_TAKEN}*"))
        candidates = [record_path(mountpoint, subdir), *leftovers]
        taken = []
        for path in candidates:
            mine = path.with_name(f"{subdir}{_TAKEN}{secrets.token_hex(8)}")
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
        for path in (mountpoint / RECORDS_DIR).glob(f"*{_TAKEN}*"):
            subdir = path.name.split(_TAKEN, 1)[0]
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
