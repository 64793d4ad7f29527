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
    tmp_name = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp_name, _CREATE_FLAGS, 0o600)
    try:
        _dump(fd, document, durable=durable)
        os.replace(tmp_name, path)
    except BaseException:
        tmp_name.unlink(missing_ok=True)
        raise


# Created new (never an existing file or a planted symlink), closed across exec.
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _write_at(dir_fd: int, name: str, document: Any, *, durable: bool) -> None:
    if "/" in name or name in ("", ".", ".."):
        raise ValueError(f"{name!r} is not a file name")
    tmp_name = f".{name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp_name, _CREATE_FLAGS, 0o600, dir_fd=dir_fd)
    try:
        _dump(fd, document, durable=durable)
        os.replace(tmp_name, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name, dir_fd=dir_fd)
        raise


def _dump(fd: int, document: Any, *, durable: bool) -> None:
    """Write `document` to the new file open at `fd` (fsynced when `durable`), and close it.

    Plain os.write of the encoded bytes: a text-mode file object costs an lseek, an ioctl
    and an fstat per file, and these files are written whole, once."""
    try:
        data = memoryview(json.dumps(document, sort_keys=True, separators=(",", ":")).encode())
        while data:
            data = data[os.write(fd, data):]
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)


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
    try:
        chunks = []
        while chunk := os.read(fd, _READ_SIZE):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return json.loads(b"".join(chunks).decode("utf-8"))


_READ_SIZE = 1 << 16
