"""Lustre file layouts (striping) a volume's directory gives new files, checked before use.

A layout is either plain (a stripe count, a stripe size, an OST pool) or progressive (PFL:
extents of the file, each with its own stripe count). It is set as the directory's default
layout (`lfs setstripe`, csi.lustre.client), so only files made later follow it: Lustre never
restripes a file that exists (`lfs migrate` does, file by file, outside the driver).

One table, LAYOUT_PARAMETERS, names every key: StorageClass parameters, a static PV's
volumeAttributes, VolumeAttributesClass (ModifyVolume) parameters and the volume context all
use these keys and the forms `LayoutParameters.to_attributes` writes back.

Checks in two steps: `parse_layout` checks forms and Lustre's fixed limits (lfs-setstripe(1):
sizes and extent ends are multiples of 64 KiB, a count is -1 for every OST or 1-2000, a pool
name is at most 15 characters); `check_layout_fits` checks against the file system itself
(its OST count, its pools and their OSTs), read from the client when the layout is applied.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from csi.errors import InvalidArgument
from csi.lustre.parsers import LustreOutputError
from csi.quantity import format_quantity, parse_quantity

STRIPE_UNIT: Final = 64 << 10  # lfs-setstripe(1): sizes and extent ends are multiples of this
MAX_STRIPE_SIZE: Final = (4 << 30) - STRIPE_UNIT  # the size is a u32 on the wire
MAX_STRIPE_COUNT: Final = 2000  # LOV_MAX_STRIPE_COUNT
MAX_POOL_NAME: Final = 15  # LOV_MAXPOOLNAME
MAX_COMPONENTS: Final = 16  # more extents than this is a typo, not a layout
ALL_OSTS: Final = -1  # stripe count: every OST (of the pool, when one is named)
EOF: Final = "eof"
# "ignore" and "inherit" are lfs's own words (no pool / the parent's pool), never pool names.
_RESERVED_POOLS = ("ignore", "inherit", "none")
_POOL_NAME = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_POOL_NAME}}}")

STRIPE_COUNT = "stripeCount"
STRIPE_SIZE = "stripeSize"
OST_POOL = "ostPool"
PROGRESSIVE_LAYOUT = "progressiveLayout"

# key -> what it takes (quoted in every error about it)
LAYOUT_PARAMETERS: Final[dict[str, str]] = {
    STRIPE_COUNT: f"-1 (every OST) or a whole number from 1 to {MAX_STRIPE_COUNT}, at most "
    "the file system's (or the pool's) OST count",
    STRIPE_SIZE: "a size that is a multiple of 64Ki, from 64Ki to "
    f"{format_quantity(MAX_STRIPE_SIZE)} (for example 1Mi)",
    OST_POOL: f"the name of an OST pool of the file system, 1-{MAX_POOL_NAME} characters of "
    "A-Z, a-z, 0-9, '_' and '-'",
    PROGRESSIVE_LAYOUT: "comma-separated <end>:<stripe count> extents in increasing order, "
    f"the last ending at {EOF} (for example 64Mi:1,1Gi:4,{EOF}:-1); ends are multiples of 64Ki",
}


@dataclass(frozen=True)
class Extent:
    """One component of a progressive layout: file bytes up to `end` (None: to the end)."""

    end: int | None
    stripe_count: int


@dataclass(frozen=True)
class LayoutParameters:
    """A directory's default layout; every field None/empty means "the file system's default"."""

    stripe_count: int | None = None
    stripe_size: int | None = None
    pool: str | None = None
    extents: tuple[Extent, ...] = ()

    @property
    def is_default(self) -> bool:
        return self == DEFAULT_LAYOUT

    def stripe_counts(self) -> tuple[int, ...]:
        if self.extents:
            return tuple(extent.stripe_count for extent in self.extents)
        return () if self.stripe_count is None else (self.stripe_count,)

    def to_attributes(self) -> dict[str, str]:
        """The parameter form (keys of LAYOUT_PARAMETERS): records and volume contexts."""
        attributes: dict[str, str] = {}
        if self.stripe_count is not None:
            attributes[STRIPE_COUNT] = str(self.stripe_count)
        if self.stripe_size is not None:
            attributes[STRIPE_SIZE] = format_quantity(self.stripe_size)
        if self.pool is not None:
            attributes[OST_POOL] = self.pool
        if self.extents:
            attributes[PROGRESSIVE_LAYOUT] = ",".join(
                f"{EOF if e.end is None else format_quantity(e.end)}:{e.stripe_count}"
                for e in self.extents
            )
        return attributes

    def changed_by(self, changes: LayoutParameters, given: set[str]) -> LayoutParameters:
        """This layout with the keys in `given` taken from `changes`. A stripe count and a
        progressive layout replace each other: a directory has one or the other."""
        stripe_count, extents = self.stripe_count, self.extents
        if STRIPE_COUNT in given:
            stripe_count, extents = changes.stripe_count, ()
        if PROGRESSIVE_LAYOUT in given:
            stripe_count, extents = None, changes.extents
        return _aligned(LayoutParameters(
            stripe_count=stripe_count,
            stripe_size=changes.stripe_size if STRIPE_SIZE in given else self.stripe_size,
            pool=changes.pool if OST_POOL in given else self.pool,
            extents=extents,
        ))


DEFAULT_LAYOUT: Final = LayoutParameters()  # the file system's own default: nothing is set


def _problem(key: str, text: str, why: str = "") -> InvalidArgument:
    because = f" ({why})" if why else ""
    return InvalidArgument(
        f"parameter {key}: {text!r} is not allowed{because}; it takes {LAYOUT_PARAMETERS[key]}"
    )


def _stripe_count(key: str, text: str) -> int:
    try:
        count = int(text.strip(), 10)
    except ValueError:
        raise _problem(key, text) from None
    if count != ALL_OSTS and not 1 <= count <= MAX_STRIPE_COUNT:
        raise _problem(key, text)
    return count


def _aligned_size(key: str, text: str, *, what: str, maximum: int) -> int:
    try:
        size = parse_quantity(f"parameter {key}", text)
    except InvalidArgument:
        raise _problem(key, text, f"{what} is not a size") from None
    if size < STRIPE_UNIT or size % STRIPE_UNIT:
        raise _problem(key, text, f"{what} is not a multiple of 64Ki")
    if size > maximum:
        raise _problem(key, text, f"{what} is above {format_quantity(maximum)}")
    return size


def pool_name_problem(name: str) -> str | None:
    """What is wrong with an OST pool name (None when it is one Lustre takes)."""
    if not _POOL_NAME.fullmatch(name) or name in _RESERVED_POOLS:
        return (f"{name!r} must be 1-{MAX_POOL_NAME} characters of A-Z, a-z, 0-9, '_' and '-',"
                " and not ignore, inherit or none")
    return None


def _pool(key: str, text: str) -> str:
    if pool_name_problem(text) is not None:
        raise _problem(key, text)
    return text


def _extents(key: str, text: str) -> tuple[Extent, ...]:
    parts = text.split(",")
    if len(parts) > MAX_COMPONENTS:
        raise _problem(key, text, f"more than {MAX_COMPONENTS} extents")
    extents: list[Extent] = []
    previous = 0
    for position, part in enumerate(parts):
        end_text, separator, count_text = part.strip().partition(":")
        if not separator:
            raise _problem(key, text, f"extent {part!r} is not <end>:<stripe count>")
        last = position == len(parts) - 1
        if end_text == EOF:
            if not last:
                raise _problem(key, text, f"only the last extent may end at {EOF}")
            end = None
        else:
            if last:
                raise _problem(key, text, f"the last extent must end at {EOF}")
            end = _aligned_size(key, end_text, what=f"end {end_text!r}", maximum=1 << 62)
            if end <= previous:
                raise _problem(key, text, f"end {end_text!r} does not follow the one before")
            previous = end
        try:
            count = _stripe_count(STRIPE_COUNT, count_text)
        except InvalidArgument:
            raise _problem(key, text, f"stripe count {count_text!r} of extent {part!r} must "
                           f"be -1 or 1-{MAX_STRIPE_COUNT}") from None
        extents.append(Extent(end, count))
    if len(extents) < 2:
        raise _problem(key, text, "a progressive layout has at least two extents")
    return tuple(extents)


def parse_layout(parameters: Mapping[str, str]) -> LayoutParameters:
    """The layout the keys of LAYOUT_PARAMETERS in `parameters` ask for (others are ignored).

    InvalidArgument naming the key and what it takes for a bad value, or for a stripe count
    given together with a progressive layout (each extent has its own)."""
    if STRIPE_COUNT in parameters and PROGRESSIVE_LAYOUT in parameters:
        raise InvalidArgument(
            f"parameters {STRIPE_COUNT} and {PROGRESSIVE_LAYOUT}: give one, not both (each "
            f"extent of a progressive layout has its own stripe count)"
        )
    count, size, pool, extents = (parameters.get(key) for key in LAYOUT_PARAMETERS)
    return _aligned(LayoutParameters(
        stripe_count=None if count is None else _stripe_count(STRIPE_COUNT, count),
        stripe_size=None if size is None else _aligned_size(
            STRIPE_SIZE, size, what="the size", maximum=MAX_STRIPE_SIZE
        ),
        pool=None if pool is None else _pool(OST_POOL, pool),
        extents=() if extents is None else _extents(PROGRESSIVE_LAYOUT, extents),
    ))


def _aligned(layout: LayoutParameters) -> LayoutParameters:
    """`layout`, unless an extent ends inside a stripe: lfs refuses that ("The component end
    must be aligned by the stripe size", liblustreapi_layout.c)."""
    size = layout.stripe_size
    for extent in layout.extents:
        if size is not None and extent.end is not None and extent.end % size:
            raise InvalidArgument(
                f"parameters {PROGRESSIVE_LAYOUT} and {STRIPE_SIZE}: extent end "
                f"{format_quantity(extent.end)} is not a multiple of the stripe size "
                f"{format_quantity(size)}; every extent but the last must end on a stripe"
            )
    return layout


def check_layout_fits(
    layout: LayoutParameters, *, fsname: str, ost_count: int, pools: Mapping[str, int]
) -> None:
    """InvalidArgument unless the file system can give this layout: its pool exists and no
    stripe count is above the OSTs it stripes over (the pool's, when one is named).

    `ost_count`: the file system's OSTs; `pools`: each pool's name and OST count."""
    if layout.pool is not None and layout.pool not in pools:
        known = ", ".join(sorted(pools)) or "none"
        raise InvalidArgument(
            f"parameter {OST_POOL}: {layout.pool!r} is not an OST pool of file system "
            f"{fsname!r} (its pools: {known})"
        )
    available = pools[layout.pool] if layout.pool is not None else ost_count
    where = f"pool {layout.pool!r}" if layout.pool is not None else f"file system {fsname!r}"
    key = PROGRESSIVE_LAYOUT if layout.extents else STRIPE_COUNT
    for count in layout.stripe_counts():
        if count > available:
            raise InvalidArgument(
                f"parameter {key}: stripe count {count} is above the {available} OST(s) of "
                f"{where}; it takes -1 (every OST) or 1 to {available}"
            )


# --- reading `lfs getstripe -d` ---------------------------------------------------------------

_FIELD = re.compile(r"([a-z_.]+):\s+(\S+)")


class LayoutOutputError(LustreOutputError):
    """`lfs getstripe` printed something that is not a layout."""


def parse_getstripe_directory(text: str) -> LayoutParameters:
    """The default layout `lfs getstripe -d <directory>` prints (lov_dump_user_lmm_header and
    lov_dump_comp_v1 in Lustre 2.17's liblustreapi.c).

    Plain: one line `stripe_count:  2 stripe_size:   1048576 pattern:       raid0
    stripe_offset: -1 pool:          flash`. Progressive: `lcm_*` header lines, then per
    component `lcme_*` lines (`lcme_extent.e_end:   EOF` for the last) and an indented line of
    the same fields. Values are reported as Lustre resolves them (a directory without a
    layout of its own shows the file system's default count and size)."""
    fields = _FIELD.findall(text)
    if not fields:
        raise LayoutOutputError(f"no layout fields in {text[:200]!r}")
    if not any(key == "lcm_entry_count" for key, _ in fields):
        return _plain(dict(fields))
    components: list[dict[str, str]] = []
    for key, value in fields:
        if key == "lcme_id":
            components.append({})
        elif components:
            components[-1][key] = value
    if not components:
        raise LayoutOutputError(f"a composite layout with no components: {text[:200]!r}")
    extents = []
    for component in components:
        end = component.get("lcme_extent.e_end", "")
        plain = _plain(component)
        extents.append(Extent(None if end == "EOF" else _number(end), plain.stripe_count or 0))
    first = _plain(components[0])
    return LayoutParameters(stripe_size=first.stripe_size, pool=first.pool, extents=tuple(extents))


def _plain(fields: Mapping[str, str]) -> LayoutParameters:
    if "stripe_count" not in fields or "stripe_size" not in fields:
        raise LayoutOutputError(f"stripe_count or stripe_size missing from {dict(fields)}")
    return LayoutParameters(
        stripe_count=_number(fields["stripe_count"]),
        stripe_size=_number(fields["stripe_size"]),
        pool=fields.get("pool"),
    )


def _number(text: str) -> int:
    try:
        return int(text, 10)
    except ValueError:
        raise LayoutOutputError(f"{text!r} is not a number") from None


# --- reading `lfs pool_list` ------------------------------------------------------------------


def parse_pool_list(text: str, fsname: str) -> list[str]:
    """Pool names from `lfs pool_list <mountpoint>`: `Pools from FS:` then `FS.POOL` lines."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines or lines[0] != f"Pools from {fsname}:":
        raise LayoutOutputError(f"expected 'Pools from {fsname}:' first, got {text[:200]!r}")
    pools = []
    for line in lines[1:]:
        name, dot, pool = line.partition(".")
        if name != fsname or not dot or not pool:
            raise LayoutOutputError(f"{line!r} is not a pool of {fsname}")
        pools.append(pool)
    return pools


def parse_pool_members(text: str, fsname: str, pool: str) -> list[str]:
    """OST UUIDs from `lfs pool_list FS.POOL`: `Pool: FS.POOL` then `FS-OST0000_UUID` lines."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines or lines[0] != f"Pool: {fsname}.{pool}":
        raise LayoutOutputError(f"expected 'Pool: {fsname}.{pool}' first, got {text[:200]!r}")
    members = lines[1:]
    for member in members:
        if not re.fullmatch(rf"{re.escape(fsname)}-OST[0-9a-f]{{4,}}_UUID", member):
            raise LayoutOutputError(f"{member!r} is not an OST of {fsname}")
    return members
