"""A new volume's project id: claimed, and checked unused on the file system itself.

The claims (csi.controller.project_claims) know only the ids lustre-csi handed out. An
admin's own projects on the same file system (files tagged with `lfs project -p`, or limits
set with `lfs setquota -p`) do not show there, and a volume given such an id would share its
usage and limits with them: the admin's files would count against the volume's quota, and
the volume's DeleteVolume would clear the admin's limit. Lustre accounts every project id's
files and blocks from the start (enforced or not), so `lfs quota -p` says whether anything
uses an id: one that has files, blocks or limits is given back unused and the next is
claimed. Nothing is kept about it: the index's next guess only grows while the process runs,
and a restart checks such an id again (an admin may have freed it).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from csi.controller.catalog import VolumeCatalog
from csi.controller.file_systems import FileSystemAccess
from csi.errors import DriverError, InProgress
from csi.lustre.client import LustreClient
from csi.lustre.parsers import ProjectQuota

log = logging.getLogger(__name__)

# Ids found in use outside lustre-csi skipped in one CreateVolume before it answers
# UNAVAILABLE; its retry goes on from the next id (each check is one `lfs quota`).
MAX_SKIPPED_PER_CALL = 64


def used_outside(quota: ProjectQuota) -> bool:
    """Anything on the file system has this project id: files, blocks, or limits set."""
    return any((quota.used_inodes, quota.used_bytes, quota.block_soft_limit_bytes,
                quota.block_hard_limit_bytes, quota.inode_soft_limit, quota.inode_hard_limit))


class ProjectIds:
    def __init__(self, fs: FileSystemAccess, catalog: VolumeCatalog,
                 lustre: LustreClient) -> None:
        self._fs = fs
        self._catalog = catalog
        self._lustre = lustre

    def claim_unused(self, fsname: str, mountpoint: Path, volume_id: str) -> int:
        """A project id claimed for `volume_id` that nothing on the file system uses."""
        for _ in range(MAX_SKIPPED_PER_CALL):
            project_id = self._fs.io(
                fsname, f"claim a project id for {volume_id}",
                lambda: self._catalog.allocate_project_id(fsname, mountpoint, volume_id),
            )
            try:
                quota = self._lustre.project_quota(str(mountpoint), project_id)
            except BaseException:
                self.give_back(fsname, mountpoint, project_id)
                raise
            if not used_outside(quota):
                return project_id
            log.warning(
                "project id %d on %s is used outside lustre-csi (%d files, %d bytes, block "
                "limit %d, inode limit %d): not given to %s", project_id, fsname,
                quota.used_inodes, quota.used_bytes, quota.block_hard_limit_bytes,
                quota.inode_hard_limit, volume_id,
            )
            self.give_back(fsname, mountpoint, project_id)
        raise InProgress(
            f"the next {MAX_SKIPPED_PER_CALL} project ids on {fsname} are all used outside "
            "lustre-csi; the retry tries the ids after them"
        )

    def give_back(self, fsname: str, mountpoint: Path, project_id: int) -> None:
        """Release a claim this call just made, best effort: a claim left behind (its release
        failed, or a record naming the id may yet land) only leaks an id, never shares one."""
        with contextlib.suppress(OSError, DriverError):
            self._fs.io(fsname, f"give back project id {project_id}",
                        lambda: self._catalog.release_project_id(mountpoint, project_id))
