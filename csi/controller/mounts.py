"""The controller's own client mount of each file system it serves (volume dirs, quotas)."""

from __future__ import annotations

import logging
from pathlib import Path

from csi.host.bounded import BoundedCalls
from csi.host.keyed_locks import KeyedLocks
from csi.host.mount_table import MountTable, mounts_at
from csi.host.mounts import (
    HostMounts,
    MountHealth,
    MountProbe,
    MountUnreachable,
    OsMountProbe,
    mount_health,
    path_health,
)
from csi.lustre.client import LustreClient
from csi.lustre.recognizers import LustreMountRecognizer, same_source
from csi.server_sets import FileSystemEndpoint

log = logging.getLogger(__name__)


CONTROLLER_MOUNT_OPTIONS: tuple[str, ...] = ("flock", "user_xattr", "nosuid", "nodev")


class ControllerMounts:
    """The controller's own client mount of each file system it serves, at <base>/<fsname>.

    Volume directories, project ids and quotas are set through these mounts.
    """

    def __init__(
        self,
        base: Path,
        lustre: LustreClient,
        host: HostMounts,
        table: MountTable,
        recognizer: LustreMountRecognizer,
        *,
        probe: MountProbe | None = None,
        bounded: BoundedCalls | None = None,
    ) -> None:
        """`bounded`: the process's budget of hung file-system calls (the composition root's)."""
        self._base = base
        self._probe = probe or OsMountProbe()
        self._bounded = bounded or BoundedCalls()
        self._lustre = lustre
        self._host = host
        self._table = table
        self._recognizer = recognizer
        self._lock = KeyedLocks()
        self._known_good: dict[str, str] = {}

    def mountpoint(self, endpoint: FileSystemEndpoint) -> Path:
        """The path where `endpoint` is mounted, mounting (or repairing) it first if needed."""
        source = endpoint.mount_source()
        path = self._base / endpoint.fsname
        if self._known_good.get(endpoint.fsname) == source and self._answers(path):
            return path
        with self._lock(endpoint.fsname):
            entries = mounts_at(self._table, str(path))
            current = [e for e in entries if self._recognizer.lustre_source(e) is not None]
            healthy = False
            if current and same_source(self._recognizer.lustre_source(current[-1]) or "", source):
                health, reason = mount_health(
                    current[-1], probe=self._probe, bounded=self._bounded, key=_key(path)
                )
                if health is MountHealth.UNREACHABLE:
                    # Eviction or recovery: the mount comes back by itself; a remount would
                    # fail the volume operations running on it.
                    raise MountUnreachable(
                        f"the controller's mount of {endpoint.fsname} at {path} is not "
                        f"answering ({reason}); retry later"
                    )
                healthy = health is MountHealth.HEALTHY
            if not healthy:
                for _ in entries:
                    self._host.unmount(str(path), lazy=True)
                path.mkdir(parents=True, exist_ok=True)
                # nosuid,nodev: nothing written into a volume may act on the controller's node.
                self._lustre.mount(source, str(path), CONTROLLER_MOUNT_OPTIONS)
            self._known_good[endpoint.fsname] = source
        return path

    def _answers(self, path: Path) -> bool:
        health, _ = path_health(
            str(path), probe=self._probe, bounded=self._bounded, key=_key(path)
        )
        return health is MountHealth.HEALTHY

    def release_all(self) -> None:
        """Unmount every file system mounted under the base (the driver is stopping).

        In a pod these mounts end with the container's mount namespace anyway; run on a host
        (the embedded default, tests), nothing else would take them away.
        """
        if not self._base.is_dir():
            return
        for path in sorted(self._base.iterdir()):
            if path.is_dir() and not path.is_symlink():
                try:
                    self.release(path.name)
                except OSError as exc:  # stopping must go on; the next start repairs it
                    log.warning("could not release the controller mount %s: %s", path, exc)

    def release(self, fsname: str) -> None:
        """Unmount a file system the controller no longer serves (a deleted dedicated one)."""
        path = self._base / fsname
        with self._lock(fsname):
            self._known_good.pop(fsname, None)
            for _ in mounts_at(self._table, str(path)):
                self._host.unmount(str(path), lazy=True)
            if path.is_dir():
                path.rmdir()


def _key(path: Path) -> str:
    """Hung stats of one file system's mount are capped on their own (BoundedCalls)."""
    return f"controller mount {path}"
