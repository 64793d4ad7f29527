"""Kubernetes-style size quantities ("100Gi", "1T", "4096") to and from bytes."""

from __future__ import annotations

import re

from csi.errors import InvalidArgument

_SUFFIXES = {
    "": 1,
    "Ki": 1 << 10,
    "Mi": 1 << 20,
    "Gi": 1 << 30,
    "Ti": 1 << 40,
    "Pi": 1 << 50,
    "k": 10**3,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
}
_QUANTITY = re.compile(r"^([0-9]+)(Ki|Mi|Gi|Ti|Pi|k|K|M|G|T|P)?$")


def parse_quantity(field: str, text: str) -> int:
    """Bytes in `text`; InvalidArgument naming `field` when it is not a whole-number quantity."""
    match = _QUANTITY.match(text.strip())
    if not match:
        raise InvalidArgument(
            f"{field}: {text!r} is not a size; use a whole number with an optional suffix "
            "such as 512Mi, 100Gi or 2Ti"
        )
    return int(match.group(1)) * _SUFFIXES[match.group(2) or ""]


def format_quantity(size_bytes: int) -> str:
    """The largest binary suffix that divides the size exactly (1073741824 -> "1Gi")."""
    for suffix in ("Pi", "Ti", "Gi", "Mi", "Ki"):
        unit = _SUFFIXES[suffix]
        if size_bytes and size_bytes % unit == 0:
            return f"{size_bytes // unit}{suffix}"
    return str(size_bytes)
