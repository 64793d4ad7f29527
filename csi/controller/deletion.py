"""Deleting volumes: DeleteVolume's part, and the background removal that finishes it.

Split from csi.controller.volumes (create, find, grow) because a deletion has a life of its
own after the RPC answers: a worker per file system removes the tree, releases what the
volume held, and resumes after a restart. Both halves reach the file systems only through
csi.controller.file_systems.

DeleteVolume marks the record `deleting` (with a trash path), renames the directory into the
trash in one step (a failure is reported and the next DeleteVolume retries it) and answers;
a tree of more than a few plain files is removed by a background worker (`RemovalQueue`),
which releases the quota and the project id only once the directory is really gone. A
dedicated volume's whole file system is deleted instead, if the provider confirms it is
dedicated to that volume; nothing of it is torn down here (mount, index) before the provider
has confirmed that and deleted it or started its teardown.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from pathlib import Path

from csi.controller.directories import move_to_trash, remove_tree
from csi.controller.file_systems import FileSystemAccess
from csi.controller.records import VolumeRecord, trash_for
from csi.controller.removal import RemovalQueue
from csi.errors import DriverError, NotFound, TeardownStarted
from csi.inflight import InFlightKeys
from csi.lustre.client import LustreClient
from csi.server_sets import ServerSetProvider
from csi.volume_id import parse_volume_id

log = logging.getLogger(__name__)


class VolumeDeletion:
    """DeleteVolume and the removals it leaves to the background."""

    def __init__(
        self,
        provider: ServerSetProvider,
        access: FileSystemAccess,
        lustre: LustreClient,
        inflight: InFlightKeys,
        removals: RemovalQueue,
    ) -> None:
        self._provider = provider
        self._fs = access
        self._catalog = access.catalog
        self._lustre = lustre
        self._inflight = inflight
        self._removals = removals

    def start(self) -> None:
        """Queue the unfinished removals of every file system, in a thread of its own."""
        threading.Thread(target=self.resume_removals, name="resume-removals", daemon=True).start()

    def delete(self, volume_id: str) -> None:
        try:
            parsed = parse_volume_id(volume_id)
        except NotFound:
            return  # not ours, so nothing of ours to delete: success per the CSI spec
        with self._inflight.claim(f"id:{volume_id}"):
            try:
                endpoint = self._provider.file_system(parsed.fsname)
            except NotFound:
                # Gone (a dedicated one whose teardown an earlier attempt started): what this
                # controller kept of it goes too.
                self._fs.forget(parsed.fsname)
                return
            mountpoint = self._fs.loaded_mount(endpoint)
            record = self._fs.current(mountpoint, parsed.fsname, volume_id)
            if record is None:
                return  # no record of this id: nothing here is this volume's to delete
            if record.kind == "dedicated":
                # The whole file system goes, and only if the provider says it is this
                # volume's: it checks before it deletes anything, and the controller's mount
                # and index of it go only once it did (a refusal leaves them serving).
                try:
                    self._provider.delete_file_system(parsed.fsname, dedicated_to=volume_id)
                except TeardownStarted:
                    # Its teardown has begun (the provider checked it is this volume's): the
                    # controller's mount goes now, while its servers still answer. Once they
                    # are gone, even a lazy umount2 of it hangs in the kernel (real Lustre).
                    self._fs.forget(parsed.fsname)
                    raise
                self._fs.forget(parsed.fsname)
                log.info("deleted volume %s with its file system", volume_id)
                return
            if record.state != "deleting" or not record.trash:
                record = replace(record, state="deleting", trash=trash_for(record.directory))
                self._fs.write(mountpoint, record)
            deleting = record
            # One rename, inside the call: the volume is unreachable under its name at once,
            # however large its tree. A failure is reported; the record keeps everything.
            self._fs.io(record.fsname, f"move {record.directory} of {record.fsname} to the trash",
                         lambda: move_to_trash(mountpoint, deleting))
            try:
                small = self._fs.io(
                    record.fsname, f"remove {record.trash} of {record.fsname}",
                    lambda: remove_tree(mountpoint, deleting.trash, volume_id, small_only=True),
                )
            except (OSError, DriverError) as exc:
                log.warning("volume %s: removal will be retried in the background: %s",
                            volume_id, exc)
                small = False
            if small:
                self._release(mountpoint, deleting)
                log.info("deleted volume %s", volume_id)
            else:
                self._removals.add(parsed.fsname, volume_id)
                log.info("volume %s: moved to %s; its removal goes on in the background",
                         volume_id, record.trash)

    def _release(self, mountpoint: Path, finishing: VolumeRecord) -> bool:
        """With the directory of `finishing` (the deleted volume's record as its removal read
        it) gone: its quota, its project id and its record go, and nothing of any other
        volume: a volume made again under the same name since is another record (another
        directory) and is never taken (see VolumeCatalog.take_for_removal).

        False when there was nothing left to release (another replica finished it)."""
        fsname = finishing.fsname
        taken = self._fs.io(fsname, f"take the record of {finishing.volume_id}",
                             lambda: self._catalog.take_for_removal(mountpoint, fsname, finishing))
        for name, record in taken:
            self._release_taken(mountpoint, name, record)
        indexed = self._catalog.get(finishing.volume_id)
        if indexed is not None and indexed.directory == finishing.directory:
            self._catalog.sync(fsname, finishing.volume_id, None)
        return bool(taken)

    def _release_taken(self, mountpoint: Path, name: str, record: VolumeRecord) -> None:
        fsname, project_id = record.fsname, record.project_id
        # Only the holder of the claim may clear a project's quota or give its id back.
        holder = self._fs.io(fsname, f"read the claim of project {project_id}",
                              lambda: self._catalog.project_holder(mountpoint, project_id))
        if holder == record.volume_id:
            self._lustre.clear_project_quota(str(mountpoint), project_id)
            self._fs.io(fsname, f"give back project id {project_id}",
                         lambda: self._catalog.release_project_id(mountpoint, project_id))
        self._fs.io(fsname, f"drop the record of {record.volume_id}",
                     lambda: self._catalog.drop_taken(mountpoint, fsname, name))

    def finish_removal(self, fsname: str, volume_id: str) -> None:
        """Remove a deleted volume's directory from the trash, then release what it held.

        Run by the file system's removal worker, not an RPC: the long tree removal is not
        bounded (it takes as long as it takes, and a hang holds up only this file system's
        removals); the record steps are, as everywhere."""
        with self._inflight.claim(f"id:{volume_id}"):
            try:
                endpoint = self._provider.file_system(fsname)
            except NotFound:
                return  # the file system went, and the volume with it
            mountpoint = self._fs.loaded_mount(endpoint)
            record = self._fs.io(fsname, f"read the record of {volume_id}",
                                  lambda: self._catalog.read(mountpoint, fsname, volume_id))
            if record is None:
                record = self._fs.io(fsname, f"find the taken records of {volume_id}",
                                      lambda: self._catalog.taken_record(mountpoint, fsname,
                                                                         volume_id))
                if record is None:
                    return  # finished already (by this replica or another)
            if record.state != "deleting":
                return  # not a deleted volume: nothing to remove
            if not record.trash:
                record = replace(record, trash=trash_for(record.directory))
                self._fs.write(mountpoint, record)
            deleting = record
            self._fs.io(fsname, f"move {record.directory} of {fsname} to the trash",
                         lambda: move_to_trash(mountpoint, deleting))
        # The long part, outside the claim: calls for this volume id are not held up.
        remove_tree(mountpoint, deleting.trash, volume_id, small_only=False)
        with self._inflight.claim(f"id:{volume_id}"):
            if self._release(mountpoint, deleting):
                log.info("deleted volume %s: directory removed, quota and project id released",
                         volume_id)

    def run_pending_removals(self) -> int:
        """Run every queued removal once, now, in this thread; how many are still pending."""
        return self._removals.run_all()

    def resume_removals(self) -> None:
        """Queue the unfinished removals of every file system (after a restart).

        Loading a file system queues its removals; those not loadable now (not Ready) are
        queued when first used.
        """
        try:
            fsnames = self._provider.list_file_systems()
        except Exception as exc:  # a start-up scan must never stop the controller
            log.warning("pending removals not checked: %s", exc)
            return
        for fsname in fsnames:
            try:
                self._fs.loaded_mount(self._provider.file_system(fsname))
            except Exception as exc:
                log.info("file system %s: pending removals not checked yet: %s", fsname, exc)

    def stop(self) -> None:
        """Stop the background removals (what is left resumes at the next start)."""
        self._removals.stop()
