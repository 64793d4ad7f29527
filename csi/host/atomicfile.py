"""Crash-safe small-file writes: write a temp file beside the target, fsync, rename over it.

A reader sees the old or the new content, never a torn file; one record per file means one
volume's change never rewrites anything else.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_json_atomic(path: Path, document: Any, *, durable: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(document, handle, sort_keys=True, separators=(",", ":"))
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def read_json(path: Path, *, follow_symlinks: bool = True) -> Any | None:
    """The document at `path`, or None when there is none.

    ValueError for a file that is not JSON (empty, torn by hand, not UTF-8); OSError as the
    open raises it (with `follow_symlinks=False`, ELOOP for a symlink).
    """
    flags = os.O_RDONLY | os.O_CLOEXEC | (0 if follow_symlinks else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, encoding="utf-8") as handle:
        return json.load(handle)
