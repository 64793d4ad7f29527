"""Path checks for node requests: only the paths kubelet itself uses for CSI volumes.

Kubelet's CSI volume plugin (kubernetes pkg/volume/csi) puts
- a staging path at `<kubelet>/plugins/kubernetes.io/csi/<driver>/<sha256 of the volume
  handle>/globalmount` (csi_attacher.go, `makeDeviceMountPath`). Kubelets before 1.24 used
  `<kubelet>/plugins/kubernetes.io/csi/pv/<pv name>/globalmount` (changed by kubernetes PR
  107065); that layout names a PV, not the volume id, so one id's request could reach another
  volume's staging mount there. No supported kubelet (1.30+) makes it: it is refused;
- a target path at `<kubelet>/pods/<pod uid>/volumes/kubernetes.io~csi/<pv name>/mount`
  (csi_mounter.go, `GetPath`: the pod volume dir of plugin "kubernetes.io/csi", escaped to
  `kubernetes.io~csi`, plus "mount").

Anything else (a path inside another pod's volume, a secret's tmpfs, the kubelet root itself,
a path outside it) is refused before the node touches it. A path must also be absolute and
already normal: no '..', '.', empty components (a leading '//' too, which normpath keeps) or
control characters. A staging path must name the volume it is given with (kubelet hashes the
volume id into it), so one volume's staging path cannot be passed off as another's.

A path that passes is then held, not trusted by name: `PathPolicy.hold` walks it from the
kubelet root one component at a time with O_PATH|O_NOFOLLOW (a symlink anywhere is refused,
and one swapped in later cannot redirect what is already held) and refuses a walk that
crosses a mount point (another pod's volume, a tmpfs) between the root and the path. Mounts,
unmounts, mkdir and rmdir then go through the held parent directory (`/proc/<pid>/fd/<n>/...`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

from csi.errors import FailedPrecondition, InvalidArgument
from csi.host.mount_listing import kernel_listing
from csi.identity import DRIVER_NAME

MAX_PATH = 4096
STAGING = "staging"
TARGET = "target"
# Placeholders in a layout: one path component of a kubelet-made name (pod uid, PV name), the
# driver's name, the hex sha256 of the request's volume id.
NAME = "<name>"
DRIVER = "<driver>"
VOLUME_SHA256 = "<sha256 of the volume id>"
_NAME = re.compile(r"[A-Za-z0-9][-A-Za-z0-9._~]{0,252}")
_WALK_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC
_PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC  # whatever the name is, itself
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class PathLayout:
    """One shape of path below a kubelet root, component by component."""

    kind: str  # STAGING or TARGET
    parts: tuple[str, ...]


KUBELET_LAYOUTS: tuple[PathLayout, ...] = (
    PathLayout(STAGING, ("plugins", "kubernetes.io", "csi", DRIVER, VOLUME_SHA256, "globalmount")),
    PathLayout(TARGET, ("pods", NAME, "volumes", "kubernetes.io~csi", NAME, "mount")),
)


class PathPolicy:
    def __init__(
        self,
        allowed_roots: Sequence[str],
        *,
        layouts: Sequence[PathLayout] = KUBELET_LAYOUTS,
        driver_name: str = DRIVER_NAME,
    ) -> None:
        # (as configured, resolved): kubelet may be given as a symlink (/var/lib/kubelet ->
        # /data/kubelet); the mount table shows the resolved spelling.
        self._root_spellings = tuple(
            (os.path.normpath(root), os.path.realpath(root)) for root in allowed_roots
        )
        self._roots = tuple(dict.fromkeys(real for _, real in self._root_spellings))
        self._layouts = tuple(layouts)
        self._driver_name = driver_name

    @property
    def roots(self) -> tuple[str, ...]:
        return self._roots

    def staging_path(self, path: str, field: str, volume_id: str) -> str:
        """A staging path of `volume_id` in kubelet's layout, in the mount table's spelling."""
        return self._check(path, field, (STAGING,), volume_id)

    def target_path(self, path: str, field: str) -> str:
        return self._check(path, field, (TARGET,), None)

    def volume_path(self, path: str, field: str) -> str:
        """A staging or target path (NodeGetVolumeStats and NodeExpandVolume take either)."""
        return self._check(path, field, (STAGING, TARGET), None)

    def _check(self, path: str, field: str, kinds: tuple[str, ...], volume_id: str | None) -> str:
        if not path:
            raise InvalidArgument(f"{field} is required")
        if len(path) > MAX_PATH or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in path):
            raise InvalidArgument(f"{field}: path is too long or has control characters")
        if not os.path.isabs(path):
            raise InvalidArgument(f"{field}: {path!r} must be an absolute path")
        trimmed = path.rstrip("/") or "/"
        # normpath keeps a leading '//' (POSIX leaves its meaning to the system), so empty
        # components are looked for directly: '//var/lib/kubelet/...' names the same directory
        # as '/var/lib/kubelet/...' but would never match its mount table entry.
        if os.path.normpath(trimmed) != trimmed or "//" in trimmed:
            raise InvalidArgument(f"{field}: {path!r} must be normalised (no '..', '.' or '//')")
        for given, real in self._root_spellings:
            for root in (real, given):
                if not trimmed.startswith(root + "/"):
                    continue
                parts = tuple(trimmed[len(root) + 1 :].split("/"))
                if any(self._matches(layout, parts, volume_id) for layout in self._kinds(kinds)):
                    return real + "/" + "/".join(parts)
        raise InvalidArgument(
            f"{field}: {path!r} is not a {' or '.join(kinds)} path kubelet gives this driver "
            f"(expected {self._describe(kinds)})"
        )

    def hold(self, path: str, field: str, *, make_parents: bool) -> HeldPath | None:
        """Hold the parent directory of a checked `path` (from the methods above) open.

        Walks from the kubelet root with O_PATH|O_NOFOLLOW, one component at a time, making
        missing parents when `make_parents` (as kubelet would; None when they are missing and
        not to be made). Refuses a symlink on the way, and a walk that crosses a mount point.
        """
        root = next((r for r in self._roots if path.startswith(r + "/")), None)
        if root is None:
            raise InvalidArgument(f"{field}: {path!r} is not below a kubelet root")
        *parents, name = path[len(root) + 1 :].split("/")
        try:
            fd = os.open(root, _WALK_FLAGS)
        except FileNotFoundError:
            if not make_parents:
                return None  # nothing was ever made below it
            # kubelet makes its root before it calls any plugin: this is not kubelet's node.
            raise FailedPrecondition(
                f"{field}: the kubelet directory {root} does not exist on this node; give the "
                "node plugin the kubelet root it serves (--kubelet-dir)"
            ) from None
        try:
            root_mount = _mount_id(fd)
            walked = root
            for part in parents:
                walked += "/" + part
                try:
                    child = _open_dir_at(fd, part, walked, field)
                except FileNotFoundError:
                    if not make_parents:
                        os.close(fd)
                        return None
                    with contextlib.suppress(FileExistsError):  # made meanwhile: checked below
                        os.mkdir(part, 0o750, dir_fd=fd)
                    child = _open_dir_at(fd, part, walked, field)
                os.close(fd)
                fd = child
                if _mount_id(fd) != root_mount:
                    raise InvalidArgument(
                        f"{field}: {path!r} crosses the mount point {walked} (another volume "
                        "or file system inside the kubelet directory); refusing to follow it"
                    )
            return HeldPath(path, fd, name, field)
        except BaseException:
            os.close(fd)
            raise

    def _kinds(self, kinds: tuple[str, ...]) -> list[PathLayout]:
        return [layout for layout in self._layouts if layout.kind in kinds]

    def _matches(self, layout: PathLayout, parts: tuple[str, ...], volume_id: str | None) -> bool:
        if len(parts) != len(layout.parts):
            return False
        for part, expected in zip(parts, layout.parts, strict=True):
            if expected == NAME:
                ok = bool(_NAME.fullmatch(part)) and part not in (".", "..")
            elif expected == DRIVER:
                ok = part == self._driver_name
            elif expected == VOLUME_SHA256:
                ok = (
                    part == hashlib.sha256(volume_id.encode()).hexdigest()
                    if volume_id is not None
                    else bool(_SHA256.fullmatch(part))
                )
            else:
                ok = part == expected
            if not ok:
                return False
        return True

    def _describe(self, kinds: tuple[str, ...]) -> str:
        root = self._roots[0] if self._roots else "<kubelet>"
        shapes = [
            "/".join([root, *(p.replace(DRIVER, self._driver_name) for p in layout.parts)])
            for layout in self._kinds(kinds)
        ]
        return " or ".join(shapes)


class HeldPath:
    """A checked path whose parent directory is held open (O_PATH): see `PathPolicy.hold`.

    `at` names the final component inside the held parent (`/proc/<pid>/fd/<n>/<name>`), so
    whatever is done through it happens in that directory even if a component of the
    path's spelling is renamed or replaced by a symlink meanwhile. /proc/<pid> rather than
    /proc/self, so the same name works for a mount(8) or umount(8) child process.
    """

    def __init__(self, path: str, parent_fd: int, name: str, field: str) -> None:
        self.path = path
        self.name = name
        self._parent_fd = parent_fd
        self._field = field
        self.at = f"/proc/{os.getpid()}/fd/{parent_fd}/{name}"

    def exists(self) -> bool:
        try:
            os.stat(self.name, dir_fd=self._parent_fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return True

    def make_dir(self) -> None:
        """Make the final directory (the CSI spec leaves a target path to the driver)."""
        with contextlib.suppress(FileExistsError):
            os.mkdir(self.name, 0o750, dir_fd=self._parent_fd)
        os.close(self.open_dir())  # a directory, not a symlink or a file

    def open_dir(self) -> int:
        """An O_PATH descriptor of the final directory itself (caller closes it)."""
        return _open_dir_at(self._parent_fd, self.name, self.path, self._field)

    def remove_dir(self) -> None:
        os.rmdir(self.name, dir_fd=self._parent_fd)

    def has_no_mount(self) -> bool:
        """True when nothing is mounted at the final directory for sure: there is no such
        name in the parent, or it lies on the same mount as the held parent (their mnt_id in
        /proc/self/fdinfo). False when something may be: a mount there, or a name that is
        there but cannot be opened (a stale mount), for which the caller reads the mount
        table. Costs a few small reads, not the whole table, whose reading grows with every
        mount on the node (at 1,000 staged volumes it was most of a NodeStageVolume)."""
        try:
            final = os.open(self.name, _PATH_FLAGS, dir_fd=self._parent_fd)
        except FileNotFoundError:
            # The usual first stage or publish: no directory yet. A mount whose root went
            # away answers ENOENT too, but its name is still in the parent's entries.
            return not self._named_in_parent()
        except OSError:
            return False
        try:
            return _mount_id(final) == _mount_id(self._parent_fd)
        except OSError:
            return False
        finally:
            os.close(final)

    def _named_in_parent(self) -> bool:
        """Whether the parent directory has an entry of the final name, read from the
        directory itself (no mount on the name hides it); True when it cannot be read."""
        try:
            fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC,
                         dir_fd=self._parent_fd)
        except OSError:
            return True
        try:
            return self.name in os.listdir(fd)
        except OSError:
            return True
        finally:
            os.close(fd)

    def close(self) -> None:
        if self._parent_fd >= 0:
            os.close(self._parent_fd)
            self._parent_fd = -1

    def __enter__(self) -> HeldPath:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()


def fd_path(fd: int) -> str:
    """A name for an open descriptor that mount(2) and a child process both resolve to it."""
    return f"/proc/{os.getpid()}/fd/{fd}"


def _open_dir_at(dir_fd: int, name: str, spelled: str, field: str) -> int:
    try:
        return os.open(name, _WALK_FLAGS, dir_fd=dir_fd)
    except (NotADirectoryError, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise InvalidArgument(
            f"{field}: {spelled} is a symlink or not a directory; give the real path"
        ) from exc


def _mount_id(fd: int) -> int:
    """The id of the mount `fd` lies on: statx where the kernel has the mount listing (a
    path's walk asks this of each component), else /proc/self/fdinfo (Linux 3.15+)."""
    listing = kernel_listing()
    if listing is not None:
        return listing.old_mount_id_of_fd(fd)
    with open(f"/proc/self/fdinfo/{fd}") as info:
        for line in info:
            if line.startswith("mnt_id:"):
                return int(line.split()[1])
    raise OSError(f"no mnt_id in /proc/self/fdinfo/{fd}")


def kubelet_staging_path(kubelet_dir: str, volume_id: str, driver_name: str = DRIVER_NAME) -> str:
    """The staging path kubelet uses for `volume_id` (for callers that play kubelet)."""
    volume_sha = hashlib.sha256(volume_id.encode()).hexdigest()
    return f"{kubelet_dir}/plugins/kubernetes.io/csi/{driver_name}/{volume_sha}/globalmount"


def kubelet_target_path(kubelet_dir: str, pv_name: str, pod_uid: str) -> str:
    """The target path kubelet uses for PV `pv_name` in pod `pod_uid`."""
    return f"{kubelet_dir}/pods/{pod_uid}/volumes/kubernetes.io~csi/{pv_name}/mount"
