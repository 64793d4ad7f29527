"""What is mounted at the node's kubelet paths, and the checks around a stage or publish.

Split from the servicer (csi.node.servicer), which translates CSI requests into these steps:
here is everything that reads the mount table or changes it: the top mount at a path and its
health, whether a mount there is one of ours, the check right after a stage (it landed at the
staging path, and is not a managed file system's root) or a bind (it shows the staged tree in
the mode asked, and nowhere else), and the unmount of what is ours alone.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from csi.controller.records import VOLUMES_DIR
from csi.errors import FailedPrecondition, InvalidArgument
from csi.host.bounded import BoundedCalls, CallTimedOut
from csi.host.mount_table import MountEntry, MountMark, MountTable, mounts_at
from csi.host.mounts import HostMounts, MountHealth, MountProbe, MountUnreachable, mount_health
from csi.lustre.recognizers import LustreMountRecognizer, same_source
from csi.node.paths import HeldPath, PathPolicy

log = logging.getLogger(__name__)

# At the root of every file system the driver manages: its records directory.
DRIVER_METADATA_DIR = ".lustre-csi"


class VolumeMounts:
    """The Lustre mounts and binds of them at kubelet's paths, as the mount table shows them."""

    def __init__(
        self,
        *,
        host: HostMounts,
        table: MountTable,
        recognizer: LustreMountRecognizer,
        paths: PathPolicy,
        probe: MountProbe,
        bounded: BoundedCalls,
    ) -> None:
        self._host = host
        self._table = table
        self._recognizer = recognizer
        self._paths = paths
        self._probe = probe
        self._bounded = bounded

    def mark(self) -> MountMark:
        """The mount table before a stage or bind: what it makes is what is new since."""
        return self._table.mark()

    def top_mount(self, path: str) -> MountEntry | None:
        entries = mounts_at(self._table, path)
        return entries[-1] if entries else None

    def top_mount_held(self, held: HeldPath) -> MountEntry | None:
        """The top mount at a held path, read without the whole table where the kernel can
        say which mount the name leads to (statx from the inode's cache, then statmount).

        Bounded all the same (a FUSE or NFS mount there may not honour "from the cache"); a
        call that fails or hangs falls back to the table, which a dead server cannot hang."""
        try:
            return self._bounded.run(
                f"statx {held.path}",
                lambda: self._table.top_at(held.at, os.path.normpath(held.path)),
                key=f"mount point {held.path}",
            )
        except (OSError, CallTimedOut):
            return self.top_mount(held.path)

    def health(self, entry: MountEntry) -> tuple[MountHealth, str]:
        return mount_health(entry, probe=self._probe, bounded=self._bounded)

    def is_lustre_source(self, entry: MountEntry, source: str) -> bool:
        return same_source(self._recognizer.lustre_source(entry) or "", source)

    def published_elsewhere(self, staged: MountEntry, staging: str, target: str) -> str | None:
        """Another path in our kubelet dirs that shows the same tree as the staging mount."""
        for entry in self._table.entries():
            if entry.mount_point in (staging, target) or not same_tree(entry, staged):
                continue
            if any(entry.mount_point.startswith(root + "/") for root in self._paths.roots):
                return entry.mount_point
        return None

    def healthy_mount_of_ours(
        self, held: HeldPath, field: str, ours: Callable[[MountEntry], bool]
    ) -> MountEntry | None:
        """What is mounted at `path` already, for an idempotent stage or publish.

        A healthy mount that `ours` accepts is returned (nothing to do); a stale Lustre mount
        (ESTALE, ENOTCONN, directory gone) is unmounted (the caller mounts again) and None
        returned; one that answers EIO/EHOSTDOWN or not at all is left alone (UNAVAILABLE:
        retry); anything else is refused rather than hidden under ours.
        """
        # Most stages and publishes find nothing there: said without reading the mount
        # table, whose reading costs more with every mount on the node.
        top = None if held.has_no_mount() else self.top_mount_held(held)
        if top is None:
            return None
        if self._recognizer.lustre_source(top) is not None:
            health, reason = self.health(top)
            if health is MountHealth.UNREACHABLE:
                raise MountUnreachable(
                    f"{field} {held.path}: the mount there is not answering ({reason}); the "
                    "Lustre server may be away or in recovery, so it is left alone: retry later"
                )
            if health is MountHealth.STALE:
                log.warning("repairing stale mount at %s (%s)", held.path, reason)
                self.unmount_ours(held, field)
                return None
        if not ours(top):
            raise FailedPrecondition(
                f"{field} {held.path} already holds another mount ({top.source}); unmount it first"
            )
        return top

    def staged_mount_of(
        self, volume_id: str, staging: str, source: str, staged_held: HeldPath | None
    ) -> MountEntry:
        """The healthy mount at `staging`, which must be the Lustre source the volume names.

        Whatever else is there (nothing, a stale mount, another volume, a foreign file system)
        is refused: a publish binds only the volume it was asked for into a pod.
        """
        staged = self.top_mount_held(staged_held) if staged_held is not None else None
        health, reason = self.health(staged) if staged is not None else (None, "")
        if health is MountHealth.UNREACHABLE:
            raise MountUnreachable(
                f"the staging mount of volume {volume_id} at {staging} is not answering "
                f"({reason}); retry later"
            )
        if staged is None or health is not MountHealth.HEALTHY:
            raise FailedPrecondition(
                f"volume {volume_id} is not staged at {staging}; call NodeStageVolume first"
            )
        staged_source = self._recognizer.lustre_source(staged)
        if staged_source is None or not same_source(staged_source, source):
            raise FailedPrecondition(
                f"staging_target_path {staging} holds {staged_source or staged.source}, not "
                f"volume {volume_id} ({source}); refusing to publish another volume's data"
            )
        return staged

    def check_stage(
        self, held: HeldPath, field: str, source: str, before: MountMark
    ) -> MountEntry:
        """The Lustre mount a stage just made at the held staging path, checked.

        mount.lustre resolves the target to a name again (realpath): if that name led
        elsewhere meanwhile, whatever of ours it mounted there is taken back. A managed file
        system's root is refused too (`refuse_managed_root`).
        """
        staged = self._table.top_made_since(before, os.path.normpath(held.path))
        if staged is None or not self.is_lustre_source(staged, source):
            for entry in self._table.made_since(before):
                if self.is_lustre_source(entry, source):
                    self._host.unmount(entry.mount_point, lazy=True)
            raise FailedPrecondition(
                f"mounting {source} did not leave it at {field} {held.path}; it was undone "
                "(was the path changed meanwhile?)"
            )
        self.refuse_managed_root(held, staged, source)
        return staged

    def refuse_managed_root(self, held: HeldPath, staged: MountEntry, source: str) -> None:
        """Undo a stage that mounted the root of a file system this driver manages.

        Its root holds every volume and the driver's records: a static PV naming it (subdir
        empty) would give a pod all of them. The node cannot know before mounting whether a
        file system is one of ours (its records are on it), so it looks right after: a
        `.lustre-csi` at the mounted root means managed. An unmanaged file system's root (a
        static PV of an external Lustre) has none and stays mounted.
        """

        def holds_records() -> bool:
            fd = held.open_dir()  # opened now: the new mount's root, not the directory below
            try:
                os.stat(DRIVER_METADATA_DIR, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                return False
            finally:
                os.close(fd)
            return True

        try:
            managed = self._bounded.run(
                f"stat {held.path}/{DRIVER_METADATA_DIR}", holds_records, key=staged.device
            )
        except BaseException:
            # Not known to be safe (a hung server, an error): not left mounted either.
            self._host.unmount(held.at, lazy=True, nofollow=True)
            raise
        if managed:
            self._host.unmount(held.at, lazy=True, nofollow=True)
            raise InvalidArgument(
                f"volume_context names {source}, the root of a file system that is managed by "
                "lustre-csi; mount one of its volumes, not the whole file system "
                f"(subdir {VOLUMES_DIR}/<name>-<token>, as CreateVolume gives it)"
            )

    def check_bind(
        self, held: HeldPath, staged: MountEntry, readonly: bool, before: MountMark
    ) -> None:
        """The new top mount at the target must show the staged tree, in the mode asked.

        Otherwise the bind is taken back, at the target and wherever else it landed (a bind
        of the staged tree made since `before`): nothing of the volume stays mounted at a
        path the request did not name.
        """
        made = self._table.top_made_since(before, os.path.normpath(held.path))
        if made is not None and same_tree(made, staged) and made.readonly == readonly:
            return
        if made is not None and self._recognizer.lustre_source(made) is not None:
            self._host.unmount(held.at, lazy=True, nofollow=True)
        for entry in self._table.made_since(before):  # again: without the one taken back
            if same_tree(entry, staged):
                log.warning("taking back a bind of %s that landed at %s", held.path, entry)
                self._host.unmount(entry.mount_point, lazy=True, nofollow=True)
        raise FailedPrecondition(
            f"the bind mount at target_path {held.path} does not show the staged volume; "
            "it was undone (was a path changed meanwhile?)"
        )

    def unmount_ours(self, held: HeldPath, field: str) -> None:
        """Remove the mounts stacked at `path`, top first, as long as each one is ours.

        Ours: a Lustre mount or a bind of one (the recognizer knows both). Anything else at a
        kubelet path (a secret's tmpfs, another driver's volume) is left alone and refused: an
        unstage or unpublish never takes away a mount this driver did not make. A stale mount
        is detached lazily (it cannot be synced).
        """
        path = held.path
        for _ in range(len(mounts_at(self._table, path))):
            entries = mounts_at(self._table, path)
            if not entries:
                return
            top = entries[-1]
            if self._recognizer.lustre_source(top) is None:
                raise FailedPrecondition(
                    f"{field} {path} holds a mount that is not a Lustre volume of this driver "
                    f"({top.fstype} {top.source}); it is left mounted: unmount it first"
                )
            # Through the held parent, not following a symlink put in the mount point's place.
            # Lazily unless it answers: a dead or hung mount cannot be synced, and a plain
            # umount of a hung Lustre mount would wait for its server.
            healthy = self.health(top)[0] is MountHealth.HEALTHY
            self._host.unmount(held.at, lazy=not healthy, nofollow=True)


@contextmanager
def opened(held: HeldPath | None) -> Iterator[int]:
    """An O_PATH descriptor of the held directory itself, closed afterwards."""
    if held is None:
        raise FailedPrecondition("the path's directories are gone; call NodeStageVolume first")
    fd = held.open_dir()
    try:
        yield fd
    finally:
        os.close(fd)


# Per-mount flags the mount table shows, so a second stage can be compared with the first.
_VISIBLE_FLAGS = frozenset({"ro", "nosuid", "nodev", "noexec", "noatime", "nodiratime"})


def visible_flags(options: Iterable[str]) -> frozenset[str]:
    return _VISIBLE_FLAGS.intersection(options)


def same_tree(a: MountEntry, b: MountEntry) -> bool:
    """Both entries show the same directory of the same file system (a bind of the other)."""
    return (a.device, a.root) == (b.device, b.root)
