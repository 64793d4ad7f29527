"""Growing one OST pool of a LustreFileSystem: pure functions over the object.

`pool_growth` says what a pool needs for a total reservation on it: the spec patch raising
that pool's `ostCount` (None when the pool has enough OSTs planned) and whether the pool's
serving OSTs already hold the reservation. The reconciler then plans the new OSTs in the
pool's own index block, on the pool's OSS VMs and storage class (kubevirt/layout.py), and the
MDS's boot script adds each to the pool as it registers. The provider's
`ensure_pool_capacity` (csi.server_sets.PoolCapacity) patches and answers InProgress until
`serving` holds. `asked_for` counts the OSTs a pool (or the default OSTs, for the provider's
`ensure_capacity`) has been given so far, planned or only in the spec.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from csi.errors import CapacityExhausted, NotFound
from csi.server_sets import POOL_INDEX_BLOCK
from provisioner.growth import plan_growth
from provisioner.kubevirt.spec import FileSystemSpec, parse_spec


@dataclass(frozen=True)
class PoolGrowth:
    patch: dict[str, Any] | None  # for the LustreFileSystem (spec.pools), None: nothing to add
    serving: bool  # the pool's Active OSTs hold the reservation under the growth threshold
    desired_osts: int  # the pool's OSTs asked for before this request (planned or not)
    target_osts: int
    target_total_bytes: int  # the pool's bytes once its target_osts serve
    active_osts: int
    active_bytes: int


@dataclass(frozen=True)
class AskedFor:
    """OSTs of one pool (or the default ones) asked for so far, and their bytes."""

    count: int
    total_bytes: int


def asked_for(spec: FileSystemSpec, osts: list[dict[str, Any]], pool: str) -> AskedFor:
    """The OSTs of pool `pool` ('': the default OSTs, spec.ostCount) asked for so far: every
    one planned in status.osts at its own size, and those the spec wants beyond them at
    today's ostSize. Growth plans against these, so a repeated request adds nothing."""
    planned = [o for o in osts if (o.get("pool") or "") == pool]
    if not pool:
        wanted = spec.ost_count
    else:
        declared = spec.pool(pool)
        wanted = declared.ost_count if declared else 0  # undeclared: only what is planned
    count = max(wanted, len(planned))
    return AskedFor(count=count, total_bytes=sum(int(o["sizeBytes"]) for o in planned)
                    + (count - len(planned)) * spec.ost_size_bytes)


def pool_growth(lfs: dict[str, Any], pool: str, required_bytes: int) -> PoolGrowth:
    """What pool `pool` of `lfs` needs for `required_bytes` of reservations on it.

    NotFound for a pool the spec does not declare; CapacityExhausted past the pool's block."""
    spec = parse_spec(lfs.get("spec") or {})
    if spec.pool(pool) is None:
        raise NotFound(f"file system {spec.fsname!r} has no OST pool {pool!r}")
    osts = (lfs.get("status") or {}).get("osts") or []
    planned = [o for o in osts if o.get("pool") == pool]
    current = asked_for(spec, osts, pool)
    try:
        plan = plan_growth(
            fsname=spec.fsname, required_bytes=required_bytes,
            current_total_bytes=current.total_bytes, current_osts=current.count,
            ost_size_bytes=spec.ost_size_bytes,
            threshold=spec.growth_threshold, max_osts=POOL_INDEX_BLOCK,
        )
    except CapacityExhausted as exc:
        raise CapacityExhausted(
            f"OST pool {pool!r} of file system {spec.fsname!r} cannot hold {required_bytes} "
            f"bytes of volumes: its block of {POOL_INDEX_BLOCK} OST indices is full"
        ) from exc
    active = [o for o in planned if o.get("state") == "Active"]
    active_bytes = sum(int(o["sizeBytes"]) for o in active)
    serving = required_bytes <= active_bytes * spec.growth_threshold
    patch = None
    if plan.add:
        pools = [
            {**entry, "ostCount": plan.target_osts} if entry.get("name") == pool else entry
            for entry in (lfs.get("spec") or {}).get("pools") or []
        ]
        patch = {"metadata": {"resourceVersion": lfs["metadata"]["resourceVersion"]},
                 "spec": {"pools": pools}}
    return PoolGrowth(patch=patch, serving=serving and not plan.add, desired_osts=current.count,
                      target_osts=plan.target_osts, target_total_bytes=plan.target_total_bytes,
                      active_osts=len(active), active_bytes=active_bytes)
