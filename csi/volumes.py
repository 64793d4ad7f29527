"""What the controller does to volumes, independent of gRPC.

A shared volume is a directory in a Lustre file system with a project quota of its size; a
dedicated volume is the same inside a file system of its own. The controller:
1. asks the server-set provider for the file system (created from the template if needed),
2. reserves the volume's size and asks the provider to make room (adds OSTs if needed),
3. writes the volume record, makes the directory, assigns the project id, sets the quota.
Steps that start long work answer InProgress; the retry finds them done. Every step is
idempotent by the volume name, so a crash anywhere is finished by the next attempt.

A volume's directory is one the driver made (see csi.catalog for the layout): it is created
with mkdir under the driver's `csi-volumes/` directory, at a name whose random token the
record holds before the mkdir, so an existing directory is never adopted. DeleteVolume
releases the quota and the project id only once the directory is really gone; a removal
that fails is reported and the next DeleteVolume retries it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
from dataclasses import dataclass, replace
from pathlib import Path

from csi.catalog import VOLUMES_DIR, VolumeCatalog, VolumeRecord, new_directory
from csi.errors import (
    AlreadyExists,
    CapacityExhausted,
    FailedPrecondition,
    InProgress,
    InvalidArgument,
    NotFound,
)
from csi.inflight import InFlightKeys
from csi.lustre.client import LustreClient
from csi.lustre_mounts import ControllerMounts
from csi.parameters import VolumeParameters
from csi.volume_id import VolumeId, parse_volume_id, subdir_for_name
from provisioner.api import FileSystemEndpoint, ServerSetProvider

log = logging.getLogger(__name__)

QUOTA_GRANULARITY = 1 << 20  # sizes are rounded up to whole MiB, reported exactly as set


@dataclass(frozen=True)
class CapacityRange:
    required_bytes: int = 0
    limit_bytes: int = 0


@dataclass(frozen=True)
class LocatedVolume:
    """A volume with where it lives: the file system's endpoint and the controller's mount.

    Handed back by lookups so callers need not ask the provider (an API round trip with
    KubeVirt) for the endpoint again.
    """

    record: VolumeRecord
    endpoint: FileSystemEndpoint
    mountpoint: Path

    @property
    def directory_present(self) -> bool:
        return (self.mountpoint / self.record.directory).is_dir()


@dataclass(frozen=True)
class Capacity:
    available_bytes: int
    maximum_volume_bytes: int
    minimum_volume_bytes: int


def choose_size(requested: CapacityRange, default_bytes: int) -> int:
    """The size to give a volume: the smallest whole MiB inside the requested range."""
    required, limit = requested.required_bytes, requested.limit_bytes
    if required < 0 or limit < 0:
        raise InvalidArgument("capacity_range: sizes must not be negative")
    if limit and required > limit:
        raise InvalidArgument(
            f"capacity_range: required_bytes ({required}) exceeds limit_bytes ({limit})"
        )
    wanted = required or (min(default_bytes, limit) if limit else default_bytes)
    size = -(-wanted // QUOTA_GRANULARITY) * QUOTA_GRANULARITY
    if limit and size > limit:
        size = limit  # the limit is not whole MiB; honour it exactly (quota works in KiB)
    return max(size, 1024)


def fits(size: int, requested: CapacityRange) -> bool:
    return size >= requested.required_bytes and (
        not requested.limit_bytes or size <= requested.limit_bytes
    )


class VolumeService:
    def __init__(
        self,
        provider: ServerSetProvider,
        mounts: ControllerMounts,
        lustre: LustreClient,
        *,
        default_volume_bytes: int = 1 << 30,
    ) -> None:
        self._provider = provider
        self._mounts = mounts
        self._lustre = lustre
        self._catalog = VolumeCatalog()
        self._inflight = InFlightKeys()
        self._default_volume_bytes = default_volume_bytes

    @property
    def catalog(self) -> VolumeCatalog:
        return self._catalog

    # -- create -------------------------------------------------------------------------------
    def create(
        self, name: str, requested: CapacityRange, params: VolumeParameters
    ) -> LocatedVolume:
        if not name:
            raise InvalidArgument("name is required")
        size = choose_size(requested, self._default_volume_bytes)
        volume_id = str(VolumeId(params.kind, params.fsname, subdir_for_name(name)))
        with self._inflight.claim(f"name:{name}", f"id:{volume_id}"):
            endpoint = self._provider.ensure_file_system(params.fsname, params.template)
            mountpoint = self._loaded_mount(endpoint)
            existing = self._current(mountpoint, params.fsname, volume_id)
            if existing is not None:
                self._check_compatible(existing, name, requested, params)
                if existing.state == "ready":
                    return LocatedVolume(existing, endpoint, mountpoint)
                if existing.state == "deleting":
                    raise InProgress(f"volume {name!r} is being deleted; retry once it is gone")
                size = existing.capacity_bytes
            if existing is not None:
                record = existing
                self._reserve(record, already_counted=True)
            else:
                record = self._new_record(name, volume_id, size, params, mountpoint)
            self._apply(mountpoint, record, made_before=existing is not None)
            ready = replace(record, state="ready")
            self._catalog.write(mountpoint, ready)
            log.info("created volume %s (%d bytes) for %s", volume_id, size, name)
            return LocatedVolume(ready, endpoint, mountpoint)

    def _new_record(
        self, name: str, volume_id: str, size: int, params: VolumeParameters, mountpoint: Path
    ) -> VolumeRecord:
        """Reserve room for a new volume, then claim its project id and write its record.

        The project id is claimed only once there is room, and it lives in the record from
        then on (a retry reuses it): attempts that end in InProgress or CapacityExhausted
        claim nothing, and a failed first write gives the claim back.
        """
        subdir = subdir_for_name(name)
        provisional = VolumeRecord(
            name=name,
            volume_id=volume_id,
            kind=params.kind,
            fsname=params.fsname,
            subdir=subdir,
            capacity_bytes=size,
            project_id=0,  # none claimed yet; only the size counts while room is made
            parameters=params.fingerprint(),
            directory=new_directory(subdir),
        )
        self._reserve(provisional, already_counted=False)
        try:
            project_id = self._catalog.allocate_project_id(params.fsname, mountpoint, volume_id)
        except BaseException:
            self._catalog.release_hold(provisional)
            raise
        record = replace(provisional, project_id=project_id)
        try:
            # The record goes down before any effect; the directory and quota follow.
            self._catalog.write(mountpoint, record)
        except BaseException:
            self._catalog.release_hold(provisional)
            self._catalog.release_project_id(mountpoint, project_id)
            raise
        return record

    def _reserve(self, record: VolumeRecord, *, already_counted: bool) -> None:
        """Count the record's size against its file system and make the provider find room."""
        if not already_counted:
            self._catalog.hold(record)
        try:
            self._provider.ensure_capacity(
                record.fsname, self._catalog.reserved_bytes(record.fsname)
            )
        except (InProgress, CapacityExhausted):
            # No room yet (or ever): the reservation must not outlive this attempt.
            if not already_counted:
                self._catalog.release_hold(record)
            raise

    def _apply(self, mountpoint: Path, record: VolumeRecord, *, made_before: bool) -> None:
        """Make the volume's directory, then its project id and quota.

        `made_before`: the record was on disk (state creating) before this attempt, so a
        directory at its name is one an earlier attempt made; otherwise none may exist.
        """
        if not record.directory.startswith(f"{VOLUMES_DIR}/"):
            raise FailedPrecondition(
                f"volume {record.volume_id}: its record names no directory of lustre-csi's"
            )
        _ensure_owned_parent(mountpoint / VOLUMES_DIR)
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
        self._lustre.assign_project(str(directory), record.project_id)
        self._lustre.set_project_quota(str(mountpoint), record.project_id, record.capacity_bytes)

    @staticmethod
    def _check_compatible(
        existing: VolumeRecord, name: str, requested: CapacityRange, params: VolumeParameters
    ) -> None:
        if existing.name != name:
            raise AlreadyExists(
                f"volume id {existing.volume_id} already belongs to volume {existing.name!r}"
            )
        if existing.parameters != params.fingerprint():
            raise AlreadyExists(
                f"volume {name!r} exists with different parameters; use another name"
            )
        if not fits(existing.capacity_bytes, requested):
            raise AlreadyExists(
                f"volume {name!r} exists with {existing.capacity_bytes} bytes, outside the "
                f"requested range {requested.required_bytes}-{requested.limit_bytes or 'unbounded'}"
            )

    # -- lookup -------------------------------------------------------------------------------
    def get(self, volume_id: str) -> LocatedVolume:
        """The ready volume with this id; NotFound otherwise."""
        parsed = parse_volume_id(volume_id)
        try:
            endpoint = self._provider.ensure_file_system(parsed.fsname, None)
        except NotFound as exc:
            raise NotFound(f"volume {volume_id!r} does not exist") from exc
        mountpoint = self._loaded_mount(endpoint)
        record = self._current(mountpoint, parsed.fsname, volume_id)
        if record is None or record.state != "ready":
            raise NotFound(f"volume {volume_id!r} does not exist")
        return LocatedVolume(record, endpoint, mountpoint)

    def _current(self, mountpoint: Path, fsname: str, volume_id: str) -> VolumeRecord | None:
        """The volume's record as its file system has it now; the index follows it.

        The index alone may be behind: another controller replica can have created or deleted
        the volume since this one indexed the file system (a leader change). One small read;
        a volume the index did not know means the whole file system's index is behind, so
        it is reloaded once.
        """
        indexed = self._catalog.get(volume_id)
        record = self._catalog.read(mountpoint, fsname, volume_id)
        if record is not None and indexed is None:
            log.info("volume %s was made by another replica; reloading %s", volume_id, fsname)
            self._catalog.reload(fsname, mountpoint)
        self._catalog.sync(fsname, volume_id, record)
        return record

    def reload(self, fsname: str) -> None:
        """Re-read a file system's records (a replica that becomes the active one calls this)."""
        mountpoint = self._mounts.mountpoint(self._provider.ensure_file_system(fsname, None))
        self._catalog.reload(fsname, mountpoint)

    def endpoint(self, record: VolumeRecord) -> FileSystemEndpoint:
        return self._provider.ensure_file_system(record.fsname, None)

    def list_page(self, starting_token: str, max_entries: int) -> tuple[list[VolumeRecord], str]:
        for fsname in self._provider.list_file_systems():
            if not self._catalog.is_loaded(fsname):
                self._loaded_mount(self._provider.ensure_file_system(fsname, None))
        return self._catalog.page(starting_token, max_entries)

    # -- delete -------------------------------------------------------------------------------
    def delete(self, volume_id: str) -> None:
        try:
            parsed = parse_volume_id(volume_id)
        except NotFound:
            return  # not ours, so nothing of ours to delete: success per the CSI spec
        with self._inflight.claim(f"id:{volume_id}"):
            try:
                endpoint = self._provider.ensure_file_system(parsed.fsname, None)
            except NotFound:
                return
            mountpoint = self._loaded_mount(endpoint)
            record = self._current(mountpoint, parsed.fsname, volume_id)
            if record is None:
                return  # no record of this id: nothing here is this volume's to delete
            if record.kind == "dedicated":
                # The whole file system goes, and only if it says it is this volume's.
                self._mounts.release(parsed.fsname)
                self._catalog.forget_file_system(parsed.fsname)
                self._provider.delete_file_system(parsed.fsname, dedicated_to=volume_id)
                log.info("deleted volume %s with its file system", volume_id)
                return
            if record.state != "deleting":
                record = replace(record, state="deleting")
                self._catalog.write(mountpoint, record)
            self._remove_directory(mountpoint, record)
            # Only now, with the directory gone, may the quota and the project id go.
            self._lustre.clear_project_quota(str(mountpoint), record.project_id)
            self._catalog.remove(mountpoint, record)
            log.info("deleted volume %s", volume_id)

    @staticmethod
    def _remove_directory(mountpoint: Path, record: VolumeRecord) -> None:
        directory = mountpoint / record.directory
        try:
            shutil.rmtree(directory)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise FailedPrecondition(
                f"volume {record.volume_id}: removing {record.directory} failed ({exc}); the "
                "volume, its quota and project id are kept, and DeleteVolume will retry"
            ) from exc

    # -- expand -------------------------------------------------------------------------------
    def expand(self, volume_id: str, requested: CapacityRange) -> LocatedVolume:
        if requested.required_bytes <= 0 and requested.limit_bytes <= 0:
            raise InvalidArgument("capacity_range: give required_bytes or limit_bytes")
        size = choose_size(requested, 0)
        with self._inflight.claim(f"id:{volume_id}"):
            volume = self.get(volume_id)
            record, mountpoint = volume.record, volume.mountpoint
            if record.capacity_bytes >= size:
                return volume  # never shrink; a repeated expand is a no-op
            grown = replace(record, capacity_bytes=size)
            self._catalog.hold(grown)
            try:
                self._provider.ensure_capacity(
                    record.fsname, self._catalog.reserved_bytes(record.fsname)
                )
                self._lustre.set_project_quota(str(mountpoint), record.project_id, size)
                self._catalog.write(mountpoint, grown)
            except BaseException:
                # Whatever failed, the volume is still its old size: so is the index.
                self._catalog.restore(record)
                raise
            log.info("expanded volume %s to %d bytes", volume_id, size)
            return replace(volume, record=grown)

    # -- capacity -----------------------------------------------------------------------------
    def capacity(self, params: VolumeParameters) -> Capacity:
        """What can still be provisioned with these parameters, counting automatic growth."""
        template = params.template
        ceiling = template.max_osts * template.ost_size_bytes
        if params.kind == "shared" and params.fsname in self._provider.list_file_systems():
            capacity = self._provider.capacity(params.fsname)
            ceiling = capacity.max_total_bytes
            endpoint = self._provider.ensure_file_system(params.fsname, None)
            self._loaded_mount(endpoint)
            ceiling = max(0, ceiling - self._catalog.reserved_bytes(params.fsname))
        usable = int(ceiling * template.growth_threshold)
        return Capacity(
            available_bytes=usable, maximum_volume_bytes=usable, minimum_volume_bytes=1024
        )

    def _loaded_mount(self, endpoint: FileSystemEndpoint) -> Path:
        mountpoint = self._mounts.mountpoint(endpoint)
        if not self._catalog.is_loaded(endpoint.fsname):
            self._catalog.load(endpoint.fsname, mountpoint)
        return mountpoint


def _ensure_owned_parent(parent: Path) -> None:
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
