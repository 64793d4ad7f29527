"""Room for volumes: what a file system has reserved, and the provider asked to make room for it.

Split from csi.controller.volumes (create, find, grow, modify), which reserves through here
before it writes a record or grows one: a reservation counts the volume's size in the index
(csi.controller.catalog) and asks the server-set provider to grow the file system (and the
volume's OST pool) until every reservation fits; GetCapacity's answer counts the same figures.
"""

from __future__ import annotations

from pathlib import Path

from csi.controller.file_systems import FileSystemAccess
from csi.controller.parameters import VolumeParameters
from csi.controller.records import VolumeRecord
from csi.controller.sizes import Capacity
from csi.errors import CapacityExhausted, InProgress
from csi.lustre.layout import OST_POOL
from csi.server_sets import PoolCapacity, ServerSetProvider, template_ceiling_bytes


class VolumeRoom:
    """Reservations of volumes' sizes against their file systems' room."""

    def __init__(self, provider: ServerSetProvider, access: FileSystemAccess) -> None:
        self._provider = provider
        self._fs = access

    def reserve(self, record: VolumeRecord, *, already_counted: bool, mountpoint: Path) -> None:
        """Count the record's size against its file system and make the provider find room.

        The index first catches up with what other replicas wrote, so the total asked for
        counts their volumes too."""
        self._fs.refresh(record.fsname, mountpoint)
        if not already_counted:
            self._fs.catalog.hold(record)
        try:
            self.make_room(record)
        except (InProgress, CapacityExhausted):
            # No room yet (or ever): the reservation must not outlive this attempt.
            if not already_counted:
                self._fs.catalog.release_hold(record)
            raise

    def make_room(self, record: VolumeRecord) -> None:
        """The provider makes room for every reservation of the record's OST pool when it
        names one (and the provider grows pools), then of its whole file system.

        The pool first: its new OSTs are room for the file system too, so the file system
        grows only by what they do not cover (the other order added default OSTs the pool's
        would have made unneeded). A pool still growing answers InProgress before any
        default OST is asked for."""
        pool = record.layout.get(OST_POOL)
        if pool and isinstance(self._provider, PoolCapacity):
            on_pool = sum(
                other.capacity_bytes for other in self._fs.catalog
                if other.fsname == record.fsname and other.layout.get(OST_POOL) == pool
            )
            self._provider.ensure_pool_capacity(record.fsname, pool, on_pool)
        reserved = self._fs.catalog.reserved_bytes(record.fsname)
        self._provider.ensure_capacity(record.fsname, reserved)

    def capacity(self, params: VolumeParameters) -> Capacity:
        """What can still be provisioned with these parameters, counting automatic growth."""
        template = params.template
        ceiling = template_ceiling_bytes(template)  # the pools' OSTs count, as once it exists
        if params.kind == "shared" and params.fsname in self._provider.list_file_systems():
            capacity = self._provider.capacity(params.fsname)
            ceiling = capacity.max_total_bytes
            endpoint = self._provider.file_system(params.fsname)
            self._fs.refresh(params.fsname, self._fs.loaded_mount(endpoint))
            ceiling = max(0, ceiling - self._fs.catalog.reserved_bytes(params.fsname))
        usable = int(ceiling * template.growth_threshold)
        return Capacity(
            available_bytes=usable, maximum_volume_bytes=usable, minimum_volume_bytes=1024
        )
