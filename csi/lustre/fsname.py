"""Lustre file system names: 1-8 characters of [-_a-zA-Z0-9] (mkfs.lustre --fsname).

The one definition every check and every pattern that embeds a name is built from.
"""

from __future__ import annotations

import re
from typing import Final

from csi.errors import InvalidArgument

FSNAME_CHARS: Final = r"[-_a-zA-Z0-9]{1,8}"  # to embed in larger patterns
FSNAME: Final = re.compile(FSNAME_CHARS)  # use fullmatch: a trailing newline is no name


def fsname_problem(fsname: str) -> str | None:
    """Why `fsname` is not a Lustre file system name, or None when it is one."""
    if FSNAME.fullmatch(fsname):
        return None
    return (
        f"{fsname!r} is not a Lustre file system name; "
        "use 1-8 characters from a-z, A-Z, 0-9, '-' and '_'"
    )


def validate_fsname(fsname: str, field_name: str = "fsname") -> str:
    """`fsname`, or InvalidArgument naming `field_name` when it is not a Lustre name."""
    problem = fsname_problem(fsname)
    if problem is not None:
        raise InvalidArgument(f"{field_name}: {problem}")
    return fsname
