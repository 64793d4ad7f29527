"""The C library, for the system calls Python's os module does not wrap (mount API, listmount,
statmount, statx): loaded once, and one way to turn a failed call into OSError."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os


@functools.cache
def load_libc() -> ctypes.CDLL | None:
    """libc with errno kept for `check`, or None where there is none to load."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name, use_errno=True) if name else None
    except OSError:
        return None


def check(result: int) -> int:
    """`result` of a libc call; OSError with its errno when it failed (negative)."""
    if result < 0:
        number = ctypes.get_errno()
        raise OSError(number, os.strerror(number))
    return result
