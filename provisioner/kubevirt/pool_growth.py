"""Growing one OST pool of a LustreFileSystem: pure functions over the object.

`pool_growth` says what a pool needs for a total reservation on it: the spec patch raising
that pool's `ostCount` (None when the pool has enough OSTs planned) and whether the pool's
serving OSTs already hold the reservation. The reconciler then plans the new OSTs in the
pool's own index block, on the pool's OSS VMs and storage class (kubevirt/layout.py), and the
MDS's boot script adds each to the pool as it registers. The provider's
`ensure_pool_capacity` (csi.server_sets.PoolCapacity) patches and answers InProgress until
`serving` holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from csi.errors import CapacityExhausted, NotFound
from csi.server_sets import POOL_INDEX_BLOCK
from provisioner.growth import plan_growth
from provisioner.kubevirt.spec import parse_spec


@dataclass(frozen=True)
class PoolGrowth:
    patch: dict[str, Any] | None  # for the LustreFileSystem (spec.pools), None: nothing to add
    serving: bool  # the pool's Active OSTs hold the reservation under the growth threshold
    target_osts: int


def pool_growth(lfs: dict[str, Any], pool: str, required_bytes: int) -> PoolGrowth:
    """What pool `pool` of `lfs` needs for `required_bytes` of reservations on it.

    NotFound for a pool the spec does not declare; CapacityExhausted past the pool's block."""
    spec = parse_spec(lfs.get("spec") or {})
    declared = spec.pool(pool)
    if declared is None:
        raise NotFound(f"file system {spec.fsname!r} has no OST pool {pool!r}")
    planned = [o for o in (lfs.get("status") or {}).get("osts") or [] if o.get("pool") == pool]
    current = max(declared.ost_count, len(planned))
    planned_bytes = sum(int(o["sizeBytes"]) for o in planned)
    try:
        plan = plan_growth(
            fsname=spec.fsname, required_bytes=required_bytes,
            current_total_bytes=planned_bytes + (current - len(planned)) * spec.ost_size_bytes,
            current_osts=current, ost_size_bytes=spec.ost_size_bytes,
            threshold=spec.growth_threshold, max_osts=POOL_INDEX_BLOCK,
        )
    except CapacityExhausted as exc:
        raise CapacityExhausted(
            f"OST pool {pool!r} of file system {spec.fsname!r} cannot hold {required_bytes} "
            f"bytes of volumes: its block of {POOL_INDEX_BLOCK} OST indices is full"
        ) from exc
    active = sum(int(o["sizeBytes"]) for o in planned if o.get("state") == "Active")
    serving = required_bytes <= active * spec.growth_threshold
    patch = None
    if plan.add:
        pools = [
            {**entry, "ostCount": plan.target_osts} if entry.get("name") == pool else entry
            for entry in (lfs.get("spec") or {}).get("pools") or []
        ]
        patch = {"metadata": {"resourceVersion": lfs["metadata"]["resourceVersion"]},
                 "spec": {"pools": pools}}
    return PoolGrowth(patch=patch, serving=serving and not plan.add,
                      target_osts=plan.target_osts)
