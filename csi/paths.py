"""Path checks for node requests: only the paths kubelet itself uses for CSI volumes.

Kubelet's CSI volume plugin (kubernetes pkg/volume/csi) puts
- a staging path at `<kubelet>/plugins/kubernetes.io/csi/<driver>/<sha256 of the volume
  handle>/globalmount` (csi_attacher.go, `makeDeviceMountPath`); kubelets before that used
  `<kubelet>/plugins/kubernetes.io/csi/pv/<pv name>/globalmount`;
- a target path at `<kubelet>/pods/<pod uid>/volumes/kubernetes.io~csi/<pv name>/mount`
  (csi_mounter.go, `GetPath`: the pod volume dir of plugin "kubernetes.io/csi", escaped to
  `kubernetes.io~csi`, plus "mount").

Anything else (a path inside another pod's volume, a secret's tmpfs, the kubelet root itself,
a path outside it) is refused before the node touches it. A path must also be absolute and
already normal: no '..', '.', empty components (a leading '//' too, which normpath keeps) or
control characters. A staging path of the current layout must name the volume it is given
with (kubelet hashes the volume id into it), so one volume's staging path cannot be passed
off as another's.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

from csi.errors import InvalidArgument
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
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class PathLayout:
    """One shape of path below a kubelet root, component by component."""

    kind: str  # STAGING or TARGET
    parts: tuple[str, ...]


KUBELET_LAYOUTS: tuple[PathLayout, ...] = (
    PathLayout(STAGING, ("plugins", "kubernetes.io", "csi", DRIVER, VOLUME_SHA256, "globalmount")),
    PathLayout(STAGING, ("plugins", "kubernetes.io", "csi", "pv", NAME, "globalmount")),
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
                    return self._not_redirected(real + "/" + "/".join(parts), path, field)
        raise InvalidArgument(
            f"{field}: {path!r} is not a {' or '.join(kinds)} path kubelet gives this driver "
            f"(expected {self._describe(kinds)})"
        )

    def _not_redirected(self, canonical: str, path: str, field: str) -> str:
        if os.path.islink(canonical):
            raise InvalidArgument(f"{field}: {path!r} is a symlink; give the real path")
        resolved = _resolve_existing_prefix(canonical)
        if not any(resolved.startswith(root + "/") for root in self._roots):
            raise InvalidArgument(
                f"{field}: {path!r} is outside the directories this node plugin serves "
                f"({', '.join(self._roots)})"
            )
        return canonical

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


def _resolve_existing_prefix(path: str) -> str:
    """realpath of the nearest existing ancestor, joined with the not-yet-existing rest."""
    head, rest = path, []
    while not os.path.lexists(head):
        head, tail = os.path.split(head)
        rest.append(tail)
    return os.path.join(os.path.realpath(head), *reversed(rest))


def kubelet_staging_path(kubelet_dir: str, volume_id: str, driver_name: str = DRIVER_NAME) -> str:
    """The staging path kubelet uses for `volume_id` (for callers that play kubelet)."""
    volume_sha = hashlib.sha256(volume_id.encode()).hexdigest()
    return f"{kubelet_dir}/plugins/kubernetes.io/csi/{driver_name}/{volume_sha}/globalmount"


def kubelet_target_path(kubelet_dir: str, pv_name: str, pod_uid: str) -> str:
    """The target path kubelet uses for PV `pv_name` in pod `pod_uid`."""
    return f"{kubelet_dir}/pods/{pod_uid}/volumes/kubernetes.io~csi/{pv_name}/mount"
