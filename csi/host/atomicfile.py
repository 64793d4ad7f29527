"""Crash-safe small-file writes: write a temp file beside the target, fsync, rename over it.

A reader sees the old or the new content, never a torn file; one record per file means one
volume's change never rewrites anything else.

With `dir_fd`, `path` is a bare name in the directory open at that fd and nothing is resolved
by path: the temp file is created O_EXCL|O_NOFOLLOW and renamed inside that directory, so a
directory swapped for a symlink after it was opened cannot redirect the write.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import tempfile
from pathlib import Path
from typing import Any


def write_json_atomic(
    path: Path | str, document: Any, *, durable: bool = True, dir_fd: int | None = None
) -> None:
    if dir_fd is not None:
        _write_at(dir_fd, str(path), document, durable=durable)
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            _dump(handle, document, durable=durable)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _write_at(dir_fd: int, name: str, document: Any, *, durable: bool) -> None:
    if "/" in name or name in ("", ".", ".."):
        raise ValueError(f"{name!r} is not a file name")
    tmp_name = f".{name}.{secrets.token_hex(6)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp_name, flags, 0o600, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            _dump(handle, document, durable=durable)
        os.replace(tmp_name, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name, dir_fd=dir_fd)
        raise


def _dump(handle: Any, document: Any, *, durable: bool) -> None:
    json.dump(document, handle, sort_keys=True, separators=(",", ":"))
    handle.flush()
    if durable:
        os.fsync(handle.fileno())


def read_json(
    path: Path | str, *, follow_symlinks: bool = True, dir_fd: int | None = None
) -> Any | None:
    """The document at `path` (a bare name in the directory at `dir_fd`, if given), or None
    when there is none.

    ValueError for a file that is not JSON (empty, torn by hand, not UTF-8); OSError as the
    open raises it (with `follow_symlinks=False`, ELOOP for a symlink).
    """
    flags = os.O_RDONLY | os.O_CLOEXEC | (0 if follow_symlinks else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, encoding="utf-8") as handle:
        return json.load(handle)
