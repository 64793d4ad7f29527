"""Path checks for node requests: nothing may resolve outside the kubelet directories.

A target or staging path must be absolute, already normal (no '..', no '//'), free of control
characters, and its nearest existing ancestor must resolve (following symlinks) inside one of
the allowed roots; an existing path itself may not be a symlink, which could point anywhere.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from csi.errors import InvalidArgument

MAX_PATH = 4096


class PathPolicy:
    def __init__(self, allowed_roots: Sequence[str]) -> None:
        self._roots = tuple(os.path.realpath(root) for root in allowed_roots)

    @property
    def roots(self) -> tuple[str, ...]:
        return self._roots

    def check(self, path: str, field: str) -> str:
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
        if os.path.islink(trimmed):
            raise InvalidArgument(f"{field}: {path!r} is a symlink; give the real path")
        resolved = self._resolve_existing_prefix(trimmed)
        if not any(resolved == root or resolved.startswith(root + "/") for root in self._roots):
            raise InvalidArgument(
                f"{field}: {path!r} is outside the directories this node plugin serves "
                f"({', '.join(self._roots)})"
            )
        return trimmed

    @staticmethod
    def _resolve_existing_prefix(path: str) -> str:
        """realpath of the nearest existing ancestor, joined with the not-yet-existing rest."""
        head, rest = path, []
        while not os.path.lexists(head):
            head, tail = os.path.split(head)
            rest.append(tail)
        return os.path.join(os.path.realpath(head), *reversed(rest))
