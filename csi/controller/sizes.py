"""Volume sizes: the requested range, the size chosen inside it, and capacity answers."""

from __future__ import annotations

from dataclasses import dataclass

from csi.errors import InvalidArgument

QUOTA_GRANULARITY = 1 << 20  # sizes are rounded up to whole MiB, reported exactly as set
@dataclass(frozen=True)
class CapacityRange:
    required_bytes: int = 0
    limit_bytes: int = 0


@dataclass(frozen=True)
class Capacity:
    available_bytes: int
    maximum_volume_bytes: int
    minimum_volume_bytes: int


def choose_size(requested: CapacityRange, default_bytes: int) -> int:
    """The size to give a volume: the smallest whole MiB inside the requested range."""
    required, limit = requested.required_bytes, requested.limit_bytes
    if required < 0 or limit < 0:
        raise InvalidArgument("capacity_range: sizes must not be negative")
    if limit and required > limit:
        raise InvalidArgument(
            f"capacity_range: required_bytes ({required}) exceeds limit_bytes ({limit})"
        )
    wanted = required or (min(default_bytes, limit) if limit else default_bytes)
    size = -(-wanted // QUOTA_GRANULARITY) * QUOTA_GRANULARITY
    if limit and size > limit:
        size = limit  # the limit is not whole MiB; honour it exactly (quota works in KiB)
    return max(size, 1024)


def fits(size: int, requested: CapacityRange) -> bool:
    return size >= requested.required_bytes and (
        not requested.limit_bytes or size <= requested.limit_bytes
    )
