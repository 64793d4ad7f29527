"""Capacity and inode use of a mounted volume, as NodeGetVolumeStats reports it.

A volume made by this driver is a directory with a project quota: its size is the quota's hard
limit and its use is what the quota counts (`lfs project -d`, `lfs quota -p`). A static
volume has no project id; then statvfs(2) of the mount, i.e. the whole file system, is the
honest answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from csi.errors import DriverError
from csi.host.bounded import NO_KEY, BoundedCalls
from csi.host.mounts import MountProbe, OsMountProbe
from csi.lustre.client import LustreClient
from csi.lustre.targets import TargetConnections

STATVFS_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class VolumeStats:
    total_bytes: int
    used_bytes: int
    available_bytes: int
    total_inodes: int
    used_inodes: int
    available_inodes: int


class VolumeStatsReader:
    def __init__(
        self,
        lustre: LustreClient,
        *,
        probe: MountProbe | None = None,
        bounded: BoundedCalls | None = None,
        targets: TargetConnections | None = None,
    ) -> None:
        self._lustre = lustre
        self._probe = probe or OsMountProbe()
        # Real Lustre only: the import state of each MDT and OST, which says a server is away
        # while stat(2) and a lazy statfs(2) still answer from what the client has.
        self._targets = targets
        # statvfs asks every OST: a hung one must not hold the RPC thread (`lfs` has its own
        # command timeout).
        self._bounded = bounded or BoundedCalls(timeout_s=STATVFS_TIMEOUT_S)

    def targets_away(self, path: str) -> dict[str, str]:
        """Targets the mount at `path` does not reach now (target -> import state).

        Empty when all are connected, and when the state cannot be read (not real Lustre, or
        its tools did not answer): the other checks then stand alone.
        """
        if self._targets is None:
            return {}
        try:
            return self._targets.of_mount(path).away
        except DriverError:
            return {}

    def read(self, path: str, *, key: str = NO_KEY) -> VolumeStats:
        """Usage of the volume mounted at `path`; CallTimedOut (UNAVAILABLE) when it hangs.

        `key`: the mounted device (or file system), whose hung calls are capped on their own.
        """
        fs = self._bounded.run(f"statvfs {path}", lambda: self._probe.statvfs(path), key=key)
        stats = VolumeStats(
            total_bytes=fs.f_blocks * fs.f_frsize,
            used_bytes=(fs.f_blocks - fs.f_bfree) * fs.f_frsize,
            available_bytes=fs.f_bavail * fs.f_frsize,
            total_inodes=fs.f_files,
            used_inodes=fs.f_files - fs.f_ffree,
            available_inodes=fs.f_favail,
        )
        try:
            project_id = self._lustre.project_id_of(path)
            if not project_id:
                return stats
            quota = self._lustre.project_quota(path, project_id)
        except DriverError:
            return stats  # no project quota support here: the file system figures stand
        if not quota.block_hard_limit_bytes:
            return stats
        limit = quota.block_hard_limit_bytes
        used = quota.used_bytes
        return VolumeStats(
            total_bytes=limit,
            used_bytes=used,
            available_bytes=max(0, min(limit - used, stats.available_bytes)),
            total_inodes=quota.inode_hard_limit or stats.total_inodes,
            used_inodes=quota.used_inodes,
            available_inodes=max(
                0, (quota.inode_hard_limit or stats.total_inodes) - quota.used_inodes
            ),
        )
