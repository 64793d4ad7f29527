"""Volume records: one small JSON file per volume, kept on the file system it lives on.

The file system is the system of record (`<mount>/.lustre-csi/volumes/<subdir>.json`), next to
the volume's directory and quota, so a volume and its record cannot drift apart across
controller restarts or replicas; `csi.controller.catalog` indexes the loaded records.

Layout below a file system's root (what the driver owns there):
- `csi-volumes/<subdir>-<token>`: a volume's directory. The driver makes it with mkdir
  (never exist_ok) under `csi-volumes/`, a directory it creates root-owned and 0711; the
  random token is written in the volume's record before the mkdir, so a directory with that
  name can only be one the driver made for that record, and no directory an admin or an
  earlier, lost record left behind is ever adopted (or later deleted) as a volume's.
- `.lustre-csi/volumes/<subdir>.json`: the records; `.lustre-csi/projects/<id>`: project id
  claims (each names the volume id holding it).
- `.lustre-csi/trash/<subdir>-<token>`: a deleted volume's directory, moved there by one
  rename inside DeleteVolume and removed by a background worker; the record (state
  deleting, with the trash path) stays until the removal is done, then the quota and the
  project id go. A worker takes a record for that last step by renaming it to
  `<subdir>.json.removing-<directory token>-<token>` (one rename wins, so two replicas never
  release the same project id twice), and only a deleting record naming the directory it
  removed (never a volume made again under the same name); a taken record left by a crash is
  finished by the next scan.
- `.lustre-csi/volumes/generation`: a token every writer replaces, so other replicas see
  that the records changed (csi.controller.catalog keeps the stamp, `records_stamp`).

The file operations on this layout are here too (`take_records` for a removal's last step,
`replace_generation`); the index (csi.controller.catalog) decides when to call them.

Records are not trusted as read: anyone who can write the file system can write one. Each
is checked on load (`parse_record`): its file name, volume id, kind, fsname and subdir must
agree, its directory must be exactly one the driver names (`csi-volumes/<subdir>-<token>`),
types and state must be right. A record that fails (empty, corrupt, forged) is skipped with a
WARNING naming the file: it never breaks the other records or any call, and nothing is ever
deleted for it.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from csi.errors import DriverError, InProgress
from csi.host.atomicfile import read_json, write_json_atomic
from csi.lustre.client import MAX_PROJECT_ID
from csi.lustre.layout import LAYOUT_PARAMETERS, parse_layout
from csi.volume_id import parse_volume_id, subdir_for_name

log = logging.getLogger(__name__)

METADATA_DIR = ".lustre-csi"  # root-owned, 0700 (see csi.controller.driver_dirs)
RECORDS_DIR = ".lustre-csi/volumes"
PROJECTS_DIR = ".lustre-csi/projects"  # one O_EXCL claim file per project id in use
FIRST_PROJECT_ID = 1000  # below this, ids are commonly taken by site-managed projects
VOLUMES_DIR = "csi-volumes"  # parent of every volume directory the driver makes
TRASH_DIR = ".lustre-csi/trash"  # deleted volumes' directories, until they are removed
TAKEN_MARK = ".json.removing-"  # `<subdir>.json.removing-<token>`: a record taken for release
RECORD_STATES = ("creating", "ready", "deleting")
_TOKEN = re.compile(r"^[0-9a-f]{16}$")
GENERATION_FILE = "generation"  # in RECORDS_DIR: a token every writer replaces
# What an index last saw of a records directory: the token, its mtime_ns and ctime_ns.
Stamp = tuple[str, int, int]


def new_directory(subdir: str) -> str:
    """A fresh volume directory path (below the root) for a volume whose id names `subdir`."""
    return f"{VOLUMES_DIR}/{subdir}-{secrets.token_hex(8)}"


def trash_for(directory: str) -> str:
    """Where a volume's directory goes when the volume is deleted (same file system)."""
    return f"{TRASH_DIR}/{directory.rsplit('/', 1)[-1]}"


@dataclass(frozen=True, slots=True)
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
    # The directory's default layout now, in parameter form (csi.lustre.layout; {}: the file
    # system's default), and the project's inode limit (0: none). ModifyVolume changes both;
    # `parameters` keeps what CreateVolume was asked.
    layout: dict[str, str] = field(default_factory=dict)
    inode_limit: int = 0

    def to_json(self) -> dict[str, Any]:
        """The record's fields, for writing it (json.dumps): its own dicts, not copies
        (dataclasses.asdict copied every nested dict, on every record write)."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> VolumeRecord:
        return cls(**{k: document[k] for k in cls.__dataclass_fields__ if k in document})

    def compact(self) -> VolumeRecord:
        """The same record, its parameters and layout as dicts shared with every other
        record that has equal ones (what the controller's index keeps).

        Every volume of one StorageClass carries the same parameters, about 0.5 KiB of
        dicts: one copy for all of them instead of one per volume is most of the index's
        memory at 10,000 volumes. Shared, so never changed in place: a change is a new record
        (dataclasses.replace), as it is for every field of this frozen class."""
        parameters, layout = _shared(self.parameters), _shared(self.layout)
        if parameters is self.parameters and layout is self.layout:
            return self
        return replace(self, parameters=parameters, layout=layout)


# Distinct parameter and layout dicts, by their JSON text: few (one or two per StorageClass
# and file system); emptied when it passes the limit (a dedicated volume's fsname makes its
# parameters its own). Unlocked: two threads racing on one key only keep two equal copies.
_SHARED_LIMIT = 4096
_SHARED: dict[str, dict[str, Any]] = {}


def _shared(value: dict[str, Any]) -> dict[str, Any]:
    key = json.dumps(value, sort_keys=True, separators=(",", ":"))
    found = _SHARED.get(key)
    if found is None:
        if len(_SHARED) >= _SHARED_LIMIT:
            _SHARED.clear()
        found = _SHARED.setdefault(key, value)
    return found


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
    _check_layout_fields(document.get("layout", {}), document.get("inode_limit", 0))
    return VolumeRecord.from_json(document)


def _check_layout_fields(layout: Any, inode_limit: Any) -> None:
    """A record's layout must be one the driver could have set: it is applied again as read."""
    if not isinstance(layout, dict) or any(
        key not in LAYOUT_PARAMETERS or not isinstance(value, str)
        for key, value in layout.items()
    ):
        raise InvalidRecord(f"layout {layout!r} is not a layout in parameter form")
    try:
        parse_layout(layout)
    except DriverError as exc:
        raise InvalidRecord(f"layout: {exc}") from None
    if not isinstance(inode_limit, int) or isinstance(inode_limit, bool) or inode_limit < 0:
        raise InvalidRecord(f"inode_limit {inode_limit!r} is not a whole number >= 0")


def read_record(
    path: Path,
    fsname: str,
    *,
    subdir: str = "",
    skip_io_errors: bool = True,
    dir_fd: int | None = None,
) -> VolumeRecord | None:
    """The checked record at `path`; None for a missing one, and None (with a WARNING naming
    the file) for a bad one. With `dir_fd` (the records directory, see driver_dirs), the file
    is opened by its name in that directory and `path` only names it in messages.

    `skip_io_errors=False`: a read that fails for a reason other than the file itself (EIO,
    a server away) raises InProgress instead, so one volume's lookup never mistakes a
    transient failure for "no such volume".
    """
    subdir = subdir or path.name[: -len(".json")]
    try:
        document = read_json(path if dir_fd is None else path.name, follow_symlinks=False,
                             dir_fd=dir_fd)
    except OSError as exc:
        if skip_io_errors or exc.errno in (errno.ELOOP, errno.EISDIR):
            log.warning("skipping volume record %s: %s", path, exc)
            return None
        raise InProgress(f"reading volume record {path} failed ({exc}); retry") from exc
    except ValueError as exc:
        log.warning("skipping volume record %s: %s", path, exc)
        return None
    if document is None and not _exists(path, dir_fd):
        return None  # removed meanwhile, or never there
    try:
        return parse_record(document, fsname=fsname, subdir=subdir)
    except InvalidRecord as exc:
        log.warning("skipping volume record %s: %s", path, exc)
        return None


def _exists(path: Path, dir_fd: int | None) -> bool:
    try:
        os.stat(path if dir_fd is None else path.name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def records_stamp(records: int | None) -> Stamp:
    """What a records directory (opened as `records`) shows now of its changes: the generation
    token, its mtime_ns and ctime_ns."""
    if records is None:
        return ("", 0, 0)
    try:
        token = read_json(GENERATION_FILE, follow_symlinks=False, dir_fd=records)
    except (OSError, ValueError):
        token = None
    info = os.fstat(records)
    return (str(token or ""), info.st_mtime_ns, info.st_ctime_ns)


def replace_generation(records: int) -> str:
    """Write a new generation token (and return it): other replicas' next stamp differs from
    their last.

    Overwritten in place, not renamed over: a rename costs a journalled directory change
    (two of them per CreateVolume, three per DeleteVolume, each the dearest system call of
    those steps in a profile), and the token needs no atomicity: it only has to differ. Every
    token has the same length, so the file never changes size, and a read that meets a
    write half-way returns bytes of neither token, which is also "changed" (a reload: the
    safe side). A file of another size (missing, or not one this driver wrote) is replaced
    atomically once."""
    token = secrets.token_hex(8)
    encoded = json.dumps(token).encode()
    try:
        fd = os.open(GENERATION_FILE, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=records)
    except FileNotFoundError:
        fd = -1
    if fd != -1:
        try:
            if os.fstat(fd).st_size == len(encoded):
                os.pwrite(fd, encoded, 0)
                return token
        finally:
            os.close(fd)
    write_json_atomic(GENERATION_FILE, token, durable=False, dir_fd=records)
    return token


def take_records(
    records: int, mountpoint: Path, fsname: str, finishing: VolumeRecord, names: list[str]
) -> list[tuple[str, VolumeRecord]]:
    """Rename each of `names` (in the records directory opened as `records`) that is the
    record of the removal being finished to a name of this caller's; the taken names with
    their records (see VolumeCatalog.take_for_removal)."""
    subdir = finishing.subdir
    mark = f"{subdir}{TAKEN_MARK}{finishing.directory.rsplit('-', 1)[-1]}-"
    taken: list[tuple[str, VolumeRecord]] = []
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
    return taken


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
