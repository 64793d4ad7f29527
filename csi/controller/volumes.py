"""What the controller does to volumes, independent of gRPC.

A shared volume is a directory in a Lustre file system with a project quota of its size; a
dedicated volume is the same inside a file system of its own. The controller:
1. asks the server-set provider for the file system (created from the template if needed),
2. reserves the volume's size and asks the provider to make room (adds OSTs if needed),
3. writes the volume record, makes the directory, gives it its default layout (when the
   parameters ask for one, checked against the file system's OSTs and pools first), assigns
   the project id, sets the quota (and the inode limit).
Steps that start long work answer InProgress; the retry finds them done. Every step is
idempotent by the volume name, so a crash anywhere is finished by the next attempt.

A volume's directory is one the driver made (see csi.controller.records for the layout): it
is created with mkdir under the driver's `csi-volumes/` directory, at a name whose random token the
record holds before the mkdir, so an existing directory is never adopted.

ModifyVolume (`modify`) changes the directory's default layout and the inode limit, then the
record; a VolumeAttributesClass's parameters reach it through csi.controller.parameters.

Deleting a volume (DeleteVolume and the background removal after it) is
csi.controller.deletion's; both halves reach the file systems through
csi.controller.file_systems.

Every file-system call inside an RPC (records, project-id claims, directories, the release
steps) runs in `BoundedCalls` and answers UNAVAILABLE at its deadline, keyed by file system
so a dead one cannot refuse calls to healthy ones. The in-flight key of the volume is then
given back as the RPC answers: a retry is not ABORTED while the hung call lingers, and once
it returns (its effect landed or not) the retry re-reads the record and finishes the step.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

from csi.controller.catalog import VolumeCatalog
from csi.controller.deletion import VolumeDeletion
from csi.controller.directories import make_directory
from csi.controller.file_systems import FileSystemAccess
from csi.controller.mounts import ControllerMounts
from csi.controller.parameters import MutableParameters, VolumeParameters
from csi.controller.project_ids import ProjectIds
from csi.controller.records import VOLUMES_DIR, VolumeRecord, new_directory
from csi.controller.removal import RemovalQueue
from csi.controller.room import VolumeRoom
from csi.controller.sizes import Capacity, CapacityRange, choose_size, fits
from csi.errors import (
    AlreadyExists,
    CallHung,
    FailedPrecondition,
    InProgress,
    InvalidArgument,
    NotFound,
)
from csi.host.bounded import BoundedCalls
from csi.inflight import InFlightKeys
from csi.lustre.client import LustreClient
from csi.lustre.layout import (
    parse_layout,
)
from csi.server_sets import (
    FileSystemEndpoint,
    ServerSetProvider,
)
from csi.volume_id import VolumeId, parse_volume_id, subdir_for_name

log = logging.getLogger(__name__)

BOUNDED_CALLS = 32  # hung file-system calls kept at once, over all file systems


@dataclass(frozen=True)
class LocatedVolume:
    """A volume with where it lives: the file system's endpoint and the controller's mount.

    Handed back by lookups so callers need not ask the provider (an API round trip with
    KubeVirt) for the endpoint again.
    """

    record: VolumeRecord
    endpoint: FileSystemEndpoint
    mountpoint: Path


class VolumeService:
    def __init__(
        self,
        provider: ServerSetProvider,
        mounts: ControllerMounts,
        lustre: LustreClient,
        *,
        default_volume_bytes: int = 1 << 30,
        bounded: BoundedCalls | None = None,
        background_removals: bool = True,
    ) -> None:
        """`background_removals=False`: deleted trees are removed only by
        `run_pending_removals` (tests); otherwise by a thread, started when needed."""
        self._provider = provider
        self._lustre = lustre
        self._catalog = VolumeCatalog()
        self._inflight = InFlightKeys(hold_past_hung_calls=True)
        self._default_volume_bytes = default_volume_bytes
        # Only hung calls count against BoundedCalls' caps; each file system's calls are keyed
        # (see FileSystemAccess.io), so a dead one's hung calls refuse only calls to it.
        removals = RemovalQueue(
            lambda fsname, volume_id: self._deletion.finish_removal(fsname, volume_id),
            background=background_removals,
        )
        self._fs = FileSystemAccess(
            provider, mounts, self._catalog,
            bounded or BoundedCalls(max_stuck=BOUNDED_CALLS), removals.add,
        )
        self._deletion = VolumeDeletion(
            provider, self._fs, lustre, self._inflight, removals
        )
        self._room = VolumeRoom(provider, self._fs)
        self._project_ids = ProjectIds(self._fs, self._catalog, lustre)
        if background_removals:
            self._deletion.start()

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
            mountpoint = self._fs.loaded_mount(endpoint)
            existing = self._fs.current(mountpoint, params.fsname, volume_id)
            if existing is not None:
                self._check_compatible(existing, name, requested, params)
                if existing.state == "ready":
                    return LocatedVolume(existing, endpoint, mountpoint)
                if existing.state == "deleting":
                    raise InProgress(f"volume {name!r} is being deleted; retry once it is gone")
                size = existing.capacity_bytes
            if existing is not None:
                record = existing
                self._room.reserve(record, already_counted=True, mountpoint=mountpoint)
            else:
                # Before anything is reserved or written: a layout this file system cannot
                # give is the request's mistake and leaves nothing behind.
                self._lustre.check_layout(mountpoint, params.fsname, params.layout)
                record = self._new_record(name, volume_id, size, params, mountpoint)
            self._apply(mountpoint, record, made_before=existing is not None)
            ready = replace(record, state="ready")
            self._fs.write(mountpoint, ready)
            log.info("created volume %s (%d bytes) for %s", volume_id, size, name)
            return LocatedVolume(ready, endpoint, mountpoint)

    def _new_record(
        self, name: str, volume_id: str, size: int, params: VolumeParameters, mountpoint: Path
    ) -> VolumeRecord:
        """Reserve room for a new volume, then claim its project id (one nothing on the file
        system uses, csi.controller.project_ids) and write its record.

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
            layout=params.layout.to_attributes(),
            inode_limit=params.inode_limit or 0,
        )
        self._room.reserve(provisional, already_counted=False, mountpoint=mountpoint)
        try:
            project_id = self._project_ids.claim_unused(params.fsname, mountpoint, volume_id)
        except BaseException:
            self._catalog.release_hold(provisional)
            raise
        record = replace(provisional, project_id=project_id)
        try:
            # The record goes down before any effect; the directory and quota follow. Not
            # fsynced: it must outlive a kill of this process (the page cache does), so the
            # retry finishes what it names. What CreateVolume answers is made durable by the
            # ready record's fsync; a power loss before that can lose this one and leave an
            # empty directory and a claimed project id no volume was answered for.
            self._fs.write(mountpoint, record, durable=False)
        except BaseException as exc:
            self._catalog.release_hold(provisional)
            # A write that hung (started, not refused) may still land, and its record names
            # the id: the claim stays (the retry, held until the write returns, resumes it).
            if not (isinstance(exc, CallHung) and exc.returned is not None):
                self._project_ids.give_back(params.fsname, mountpoint, project_id)
            raise
        return record

    def _apply(self, mountpoint: Path, record: VolumeRecord, *, made_before: bool) -> None:
        """Make the volume's directory, then its project id and quota.

        `made_before`: the record was on disk (state creating) before this attempt, so a
        directory at its name is one an earlier attempt made; otherwise none may exist.
        """
        if not record.directory.startswith(f"{VOLUMES_DIR}/"):
            raise FailedPrecondition(
                f"volume {record.volume_id}: its record names no directory of lustre-csi's"
            )
        directory = mountpoint / record.directory
        self._fs.run(
            f"mkdir {record.directory} on {record.fsname}",
            lambda: make_directory(mountpoint, record, made_before=made_before),
        )
        layout = parse_layout(record.layout)
        if not layout.is_default:
            self._lustre.set_default_layout(str(directory), layout)
        self._lustre.assign_project(str(directory), record.project_id)
        self._lustre.set_project_quota(str(mountpoint), record.project_id, record.capacity_bytes)
        if record.inode_limit:
            self._lustre.set_project_inode_limit(
                str(mountpoint), record.project_id, record.inode_limit
            )

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
            endpoint = self._provider.file_system(parsed.fsname)
        except NotFound as exc:
            raise NotFound(f"volume {volume_id!r} does not exist") from exc
        mountpoint = self._fs.loaded_mount(endpoint)
        record = self._fs.current(mountpoint, parsed.fsname, volume_id)
        if record is None or record.state != "ready":
            raise NotFound(f"volume {volume_id!r} does not exist")
        return LocatedVolume(record, endpoint, mountpoint)

    def reload(self, fsname: str) -> None:
        """Re-read a file system's records (a replica that becomes the active one calls this)."""
        self._fs.reload(fsname)

    def directory_present(self, volume: LocatedVolume) -> bool:
        """Whether the volume's directory is there (bounded: the stat may hang)."""
        path = volume.mountpoint / volume.record.directory
        return self._fs.io(volume.record.fsname, f"stat {volume.record.directory}", path.is_dir)

    def endpoint(self, record: VolumeRecord) -> FileSystemEndpoint:
        return self._provider.file_system(record.fsname)

    def list_page(self, starting_token: str, max_entries: int) -> tuple[list[VolumeRecord], str]:
        for fsname in self._provider.list_file_systems():
            if not self._catalog.is_loaded(fsname):
                self._fs.loaded_mount(self._provider.file_system(fsname))
            elif not starting_token:
                # A new listing: caught up with other replicas (pages after it are not, so
                # a listing does not shift under its own tokens).
                self._fs.refresh(fsname, self._fs.loaded_mount(self._provider.file_system(fsname)))
        return self._catalog.page(starting_token, max_entries)

    # -- delete (csi.controller.deletion) -----------------------------------------------------
    def delete(self, volume_id: str) -> None:
        self._deletion.delete(volume_id)

    def run_pending_removals(self) -> int:
        return self._deletion.run_pending_removals()

    def resume_removals(self) -> None:
        self._deletion.resume_removals()

    def stop(self) -> None:
        self._deletion.stop()

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
            self._fs.refresh(record.fsname, mountpoint)  # count the other replicas' volumes too
            self._catalog.hold(grown)
            try:
                self._room.make_room(grown)
                self._lustre.set_project_quota(str(mountpoint), record.project_id, size)
                self._fs.write(mountpoint, grown)
            except BaseException:
                # Whatever failed, the volume is still its old size: so is the index.
                self._catalog.restore(record)
                raise
            log.info("expanded volume %s to %d bytes", volume_id, size)
            return replace(volume, record=grown)

    # -- modify -------------------------------------------------------------------------------
    def modify(self, volume_id: str, changes: MutableParameters) -> LocatedVolume:
        """Give the volume's directory a new default layout and the project a new inode limit.

        Only new files take the layout: Lustre keeps every existing file's layout (`lfs
        migrate` restripes one). The effects come first, then the record, so a failure
        leaves the old record and a retry sets the same values again."""
        with self._inflight.claim(f"id:{volume_id}"):
            volume = self.get(volume_id)
            record, mountpoint = volume.record, volume.mountpoint
            current = parse_layout(record.layout)
            layout = current.changed_by(changes.layout, set(changes.given))
            inode_limit = record.inode_limit if changes.inode_limit is None else changes.inode_limit
            if layout == current and inode_limit == record.inode_limit:
                return volume
            modified = replace(record, layout=layout.to_attributes(), inode_limit=inode_limit)
            try:
                if layout != current:
                    self._lustre.check_layout(mountpoint, record.fsname, layout)
                    if layout.pool is not None and layout.pool != current.pool:
                        # New files go to the pool now: it makes room for the whole volume.
                        self._fs.refresh(record.fsname, mountpoint)
                        self._catalog.hold(modified)
                        self._room.make_room(modified)
                    self._lustre.set_default_layout(str(mountpoint / record.directory), layout)
                if inode_limit != record.inode_limit:
                    self._lustre.set_project_inode_limit(
                        str(mountpoint), record.project_id, inode_limit
                    )
                self._fs.write(mountpoint, modified)
            except BaseException:
                self._catalog.restore(record)  # the index keeps the volume as it is on disk
                raise
            log.info(
                "modified volume %s: default layout %s, inode limit %s; files that exist "
                "keep their layout", volume_id, modified.layout or "of the file system",
                inode_limit or "none",
            )
            return replace(volume, record=modified)

    def capacity(self, params: VolumeParameters) -> Capacity:
        """What can still be provisioned with these parameters, counting automatic growth."""
        return self._room.capacity(params)
