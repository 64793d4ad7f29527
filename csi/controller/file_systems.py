"""The controller's way to each file system's records: its mount, the index, bounded calls.

Shared by the two halves of the volume domain, csi.controller.volumes (create, find, grow,
capacity) and csi.controller.deletion (delete and the background removal): both reach a
file system only through here, so every record, claim and directory call is bounded the same
way and the index follows the records the same way.

Every file-system call runs in `BoundedCalls` and answers UNAVAILABLE at its deadline, keyed
by file system so a dead one cannot refuse calls to healthy ones.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from csi.controller.catalog import VolumeCatalog
from csi.controller.mounts import ControllerMounts
from csi.controller.record_loading import FileSystemLimits
from csi.controller.records import VolumeRecord
from csi.host.bounded import BoundedCalls, CallTimedOut, T
from csi.server_sets import FileSystemEndpoint, ServerSetProvider

log = logging.getLogger(__name__)


class FileSystemAccess:
    """The controller's mounts of the file systems, their records indexed in one catalog."""

    def __init__(
        self,
        provider: ServerSetProvider,
        mounts: ControllerMounts,
        catalog: VolumeCatalog,
        bounded: BoundedCalls,
        queue_removal: Callable[[str, str], None],
    ) -> None:
        """`queue_removal(fsname, volume_id)`: called for each unfinished removal a file
        system's first load finds."""
        self._provider = provider
        self._mounts = mounts
        self.catalog = catalog
        self._bounded = bounded
        self._queue_removal = queue_removal

    def loaded_mount(self, endpoint: FileSystemEndpoint) -> Path:
        """The controller's mount of the file system, its records indexed (bounded: a dead
        MDS makes this UNAVAILABLE instead of holding the thread)."""
        fsname = endpoint.fsname
        limits = None
        if not self.catalog.is_loaded(fsname):
            # What records may claim of it (see csi.controller.catalog), from the provider.
            limits = FileSystemLimits(
                max_volume_bytes=self._provider.capacity(fsname).max_total_bytes,
                dedicated_to=self._provider.dedicated_to(fsname),
            )

        def mount_and_load() -> tuple[Path, list[str]]:
            mountpoint = self._mounts.mountpoint(endpoint)
            if limits is None or self.catalog.is_loaded(fsname):
                return mountpoint, []
            self.catalog.load(fsname, mountpoint, limits)
            return mountpoint, self.catalog.pending_removals(fsname, mountpoint)

        mountpoint, pending = self.io(fsname, f"mount {fsname}", mount_and_load)
        for volume_id in pending:
            self._queue_removal(fsname, volume_id)
        return mountpoint

    def current(self, mountpoint: Path, fsname: str, volume_id: str) -> VolumeRecord | None:
        """The volume's record as its file system has it now; the index follows it.

        The index alone may be behind: another controller replica can have created or deleted
        the volume since this one indexed the file system (a leader change). One small read;
        a volume the index did not know means the whole file system's index is behind, so
        it is reloaded once.
        """
        indexed = self.catalog.get(volume_id)
        record = self.io(fsname, f"read the record of {volume_id}",
                         lambda: self.catalog.read(mountpoint, fsname, volume_id))
        if record is not None and indexed is None:
            log.info("volume %s was made by another replica; reloading %s", volume_id, fsname)
            self.io(fsname, f"reload the records of {fsname}",
                    lambda: self.catalog.reload(fsname, mountpoint))
        self.catalog.sync(fsname, volume_id, record)
        return record

    def reload(self, fsname: str) -> None:
        """Re-read a file system's records (a replica that becomes the active one calls this)."""
        mountpoint = self.loaded_mount(self._provider.file_system(fsname))
        self.io(fsname, f"reload the records of {fsname}",
                lambda: self.catalog.reload(fsname, mountpoint))

    def refresh(self, fsname: str, mountpoint: Path) -> None:
        """Catch the index up with other replicas' changes to this file system's records
        (a reload only when they changed, see VolumeCatalog.refresh)."""
        self.io(fsname, f"check the records of {fsname}",
                lambda: self.catalog.refresh(fsname, mountpoint))

    def write(self, mountpoint: Path, record: VolumeRecord, *, durable: bool = True) -> None:
        self.io(record.fsname, f"write the record of {record.volume_id}",
                lambda: self.catalog.write(mountpoint, record, durable=durable))

    def forget(self, fsname: str) -> None:
        """Drop the controller's mount and index of a file system the provider deleted.

        The detach is bounded: once a file system's servers are gone, even a lazy umount2 of
        it can hang in the kernel (real Lustre 2.17). The file system is gone all the same, so
        its index goes and the hung detach is left to its own thread (counted against the
        file system's cap of hung calls).
        """
        try:
            self.io(fsname, f"detach the controller's mount of {fsname}",
                    lambda: self._mounts.release(fsname))
        except CallTimedOut as exc:
            log.warning("file system %s is gone; the controller's mount of it did not detach "
                        "(%s)", fsname, exc)
        self.catalog.forget_file_system(fsname)

    def run(self, what: str, call: Callable[[], T]) -> T:
        """A call not keyed by file system, bounded (a mkdir, say)."""
        return self._bounded.run(what, call)

    def io(self, fsname: str, what: str, call: Callable[[], T]) -> T:
        """A file-system call on `fsname`, bounded (its hung calls are capped on their own)."""
        return self._bounded.run(what, call, key=f"file system {fsname}")
