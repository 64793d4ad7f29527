"""Growth planning: how many OSTs a file system needs for a total reservation.

A pure function shared by every server-set provider. The rule (DESIGN.md, "Growth"): reserved
bytes, and the bytes measured in use (`lfs df`), must stay at or under `threshold` of the
total OST capacity; when they would not, add whole OSTs of the file system's current OST
size. Measured use can pass the reservations (data written outside project quotas, a deleted
volume's tree still being removed); it makes room like a reservation does, but never refuses
a request the reservations alone allow. Limits are checked here so every provider refuses the
same requests with the same words.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from csi.errors import CapacityExhausted, InvalidArgument


@dataclass(frozen=True)
class GrowthPlan:
    """`add` more OSTs of `ost_size_bytes` make `target_osts` in all, `target_total_bytes`.

    `sized_for`: the bytes the plan keeps under the threshold (the reservations, or the
    measured use when that is larger and the limits allow room for it).
    """

    add: int
    target_osts: int
    target_total_bytes: int
    sized_for: int


def plan_growth(
    *,
    fsname: str,
    required_bytes: int,
    current_total_bytes: int,
    current_osts: int,
    ost_size_bytes: int,
    threshold: float,
    max_osts: int,
    max_total_bytes: int | None = None,
    used_bytes: int = 0,
) -> GrowthPlan:
    """The OSTs to add so `required_bytes` (and `used_bytes`) fit under `threshold` of the total.

    `current_*` count every OST allocated so far (ready or not): a plan is made against what
    has been asked for already, so repeating a request adds nothing. Raises CapacityExhausted,
    naming the limit, when `max_osts` or `max_total_bytes` would be exceeded by the
    reservations; measured use past a limit only grows no further.
    """
    if required_bytes < 0 or used_bytes < 0:
        raise InvalidArgument(f"required capacity {required_bytes} or use {used_bytes} is "
                              "negative")
    plan = functools.partial(
        _plan, fsname=fsname, current_total_bytes=current_total_bytes,
        current_osts=current_osts, ost_size_bytes=ost_size_bytes, threshold=threshold,
        max_osts=max_osts, max_total_bytes=max_total_bytes)
    reserved = plan(required_bytes=required_bytes)
    if used_bytes <= required_bytes:
        return reserved
    try:
        return plan(required_bytes=used_bytes)
    except CapacityExhausted:
        return reserved


def _plan(*, fsname: str, required_bytes: int, current_total_bytes: int, current_osts: int,
          ost_size_bytes: int, threshold: float, max_osts: int,
          max_total_bytes: int | None) -> GrowthPlan:
    if ost_size_bytes <= 0 or not 0 < threshold <= 1:
        raise InvalidArgument(
            f"file system {fsname!r}: OST size {ost_size_bytes} and growth threshold "
            f"{threshold} must be positive (threshold at most 1)"
        )
    needed_total = math.ceil(required_bytes / threshold)
    add = 0
    if needed_total > current_total_bytes:
        add = math.ceil((needed_total - current_total_bytes) / ost_size_bytes)
    target_osts = current_osts + add
    target_total = current_total_bytes + add * ost_size_bytes
    if add and target_osts > max_osts:
        raise CapacityExhausted(
            f"file system {fsname!r} would need {target_osts} OSTs to hold {required_bytes} "
            f"bytes of volumes under its {threshold:.0%} growth threshold, but maxOsts is "
            f"{max_osts}; raise spec.maxOsts or use another file system"
        )
    if add and max_total_bytes is not None and target_total > max_total_bytes:
        raise CapacityExhausted(
            f"file system {fsname!r} would grow to {target_total} bytes to hold "
            f"{required_bytes} bytes of volumes, but maxSize is {max_total_bytes} bytes; "
            "raise spec.maxSize or use another file system"
        )
    return GrowthPlan(add=add, target_osts=target_osts, target_total_bytes=target_total,
                      sized_for=required_bytes)
