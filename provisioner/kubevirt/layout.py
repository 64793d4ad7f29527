"""The server set's layout: which servers exist, their addresses, which OST lives where.

The layout is recorded in the LustreFileSystem's status (`servers[]`, `osts[]`,
`nextOstIndex`) and is the durable plan the reconciler builds Kubernetes objects from. It is
extended (never rewritten) by `extend_layout`, a pure function: given the spec's desired OST
count, it adds the MDS if missing, then places each new OST on an existing OSS with room
(a hotplugged disk) or on a new OSS, with a new address from the pool. OST indices come from
`nextOstIndex`, which only grows, so an index is never reused even if a row is removed by hand.

OST pools (spec.pools): a pool's OSTs live on OSS VMs of their own (so their disks come from
the pool's storage class and a pool's server never mixes storage) and take their indices
from the pool's own block, `firstOstIndex` (k+1)*1024 for the k-th pool recorded, counted up
by the pool's `nextOstIndex`. So membership is a function of the index alone: the MDS's boot
script adds each OST that registers to the pool whose block holds its index, without its
cloud-init ever changing as pools grow.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from csi.quantity import format_quantity
from csi.server_sets import POOL_INDEX_BLOCK
from provisioner.kubevirt.addresses import allocate, storage_mac
from provisioner.kubevirt.spec import FileSystemSpec

MDS = "mds0"


@dataclass(frozen=True)
class ServerRecord:
    name: str  # "mds0", "oss0", "oss1", ...
    role: str  # "mds" | "oss"
    address: str
    pool: str = ""  # an OSS that serves only this OST pool's OSTs

    @property
    def mac(self) -> str:
        return storage_mac(self.address)


@dataclass(frozen=True)
class OstRecord:
    index: int
    oss: str
    size_bytes: int
    hotplug: bool  # added to an OSS whose VM existed already
    pool: str = ""

    @property
    def label(self) -> str:
        """Lustre's name for the target and our disk serial: OST000a."""
        return f"OST{self.index:04x}"


@dataclass(frozen=True)
class PoolRecord:
    """A pool's index block: its OSTs are first_index, first_index + 1, ... (never reused)."""

    name: str
    first_index: int
    next_index: int

    @property
    def last_index(self) -> int:
        return self.first_index + POOL_INDEX_BLOCK - 1


@dataclass(frozen=True)
class Layout:
    servers: tuple[ServerRecord, ...] = ()
    osts: tuple[OstRecord, ...] = ()
    next_ost_index: int = 0
    pools: tuple[PoolRecord, ...] = ()
    problems: tuple[str, ...] = field(default=(), compare=False)

    def pool(self, name: str) -> PoolRecord | None:
        return next((p for p in self.pools if p.name == name), None)

    def server(self, name: str) -> ServerRecord | None:
        return next((s for s in self.servers if s.name == name), None)

    @property
    def mds(self) -> ServerRecord | None:
        return self.server(MDS)

    def osts_of(self, oss: str) -> list[OstRecord]:
        return [ost for ost in self.osts if ost.oss == oss]

    @property
    def addresses(self) -> set[str]:
        return {s.address for s in self.servers}


def read_layout(status: dict[str, Any] | None) -> Layout:
    status = status or {}
    servers = tuple(
        ServerRecord(name=s["name"], role=s["role"], address=s["address"],
                     pool=s.get("pool") or "")
        for s in status.get("servers") or []
    )
    osts = tuple(
        OstRecord(index=int(o["index"]), oss=o["oss"], size_bytes=int(o["sizeBytes"]),
                  hotplug=o.get("attachment") == "hotplug", pool=o.get("pool") or "")
        for o in status.get("osts") or []
    )
    # A pool's block is in status.pools; its OSTs' rows say it too (the block is the one
    # their indices fall in), so a status written without the pools list loses no block.
    blocks = {p["name"]: int(p["firstOstIndex"]) for p in status.get("pools") or []}
    for ost in osts:
        if ost.pool:
            blocks.setdefault(ost.pool, ost.index - ost.index % POOL_INDEX_BLOCK)
    pools = tuple(
        PoolRecord(name=name, first_index=first, next_index=max([
            first, *(int(p.get("nextOstIndex") or 0) for p in status.get("pools") or []
                     if p["name"] == name),
            *(o.index + 1 for o in osts if o.pool == name)]))
        for name, first in blocks.items()
    )
    next_index = max([int(status.get("nextOstIndex") or 0),
                      *(o.index + 1 for o in osts if not o.pool)])
    return Layout(servers=servers, osts=osts, next_ost_index=next_index, pools=pools)


def layout_status(layout: Layout, spec: FileSystemSpec) -> dict[str, Any]:
    """The allocation part of the status (observed fields are merged in by the reconciler)."""
    return {
        "servers": [
            {"name": s.name, "role": s.role, "address": s.address, "mac": s.mac,
             "nid": spec.nid(s.address), **({"pool": s.pool} if s.pool else {})}
            for s in layout.servers
        ],
        "osts": [
            {"index": o.index, "label": o.label, "oss": o.oss, "sizeBytes": o.size_bytes,
             "size": format_quantity(o.size_bytes),
             "attachment": "hotplug" if o.hotplug else "boot",
             **({"pool": o.pool} if o.pool else {})}
            for o in layout.osts
        ],
        "nextOstIndex": layout.next_ost_index,
        "pools": [
            {"name": p.name, "firstOstIndex": p.first_index, "nextOstIndex": p.next_index,
             "osts": [o.label for o in layout.osts if o.pool == p.name]}
            for p in layout.pools
        ],
    }


def extend_layout(layout: Layout, spec: FileSystemSpec, taken: Iterable[str],
                  reserved: Mapping[str, str] | None = None) -> Layout:
    """`layout` plus the MDS and the OSTs (and OSS) the spec asks for; unchanged if complete.

    `taken` holds addresses used by other file systems; `reserved` maps server names to
    addresses this file system already claimed for them (a pass that claimed, then crashed
    before recording its plan): a new server gets its reserved address when it is free. When
    the pool runs dry the result carries a problem and as much of the plan as fits.
    """
    used = set(taken) | layout.addresses
    reserved = reserved or {}
    servers = list(layout.servers)
    osts = list(layout.osts)
    next_index = layout.next_ost_index
    problems: list[str] = []
    existing = {s.name for s in layout.servers}

    def new_server(name: str, role: str) -> ServerRecord | None:
        mine = reserved.get(name)
        found = ([mine] if mine and mine not in used and mine in spec.ip_pool
                 else allocate(spec.ip_pool, used, 1))
        if not found:
            problems.append(f"spec.network.ipPool {spec.ip_pool.text!r} has no free address "
                            f"left for {name}")
            return None
        used.add(found[0])
        record = ServerRecord(name=name, role=role, address=found[0])
        servers.append(record)
        return record

    if layout.mds is None and new_server(MDS, "mds") is None:
        return replace(layout, problems=tuple(problems))

    def place(pool: str, wanted: int, index: int) -> int:
        """Add OSTs of `pool` ('' for none) until it has `wanted`; the next free index."""
        while sum(1 for o in osts if o.pool == pool) < wanted:
            oss_names = [s.name for s in servers if s.role == "oss"]
            with_room = [s.name for s in servers if s.role == "oss" and s.pool == pool
                         and sum(1 for o in osts if o.oss == s.name) < spec.osts_per_oss]
            if with_room:
                target = with_room[0]
            else:
                number = max((int(n[3:]) for n in oss_names), default=-1) + 1
                record = new_server(f"oss{number}", "oss")
                if record is None:
                    break
                servers[-1] = replace(record, pool=pool)
                target = record.name
            osts.append(OstRecord(index=index, oss=target, size_bytes=spec.ost_size_bytes,
                                  hotplug=target in existing, pool=pool))
            index += 1
        return index

    next_index = place("", spec.ost_count, next_index)
    pools = list(layout.pools)
    for pool in spec.pools:
        recorded = next((p for p in pools if p.name == pool.name), None)
        if recorded is None:
            # A new block after every block ever recorded: blocks are never reused either.
            first = POOL_INDEX_BLOCK * (1 + max(
                (p.first_index // POOL_INDEX_BLOCK for p in pools), default=0))
            recorded = PoolRecord(pool.name, first, first)
            pools.append(recorded)
        following = place(pool.name, pool.ost_count, recorded.next_index)
        pools[pools.index(recorded)] = replace(recorded, next_index=following)
    return Layout(servers=tuple(servers), osts=tuple(osts), next_ost_index=next_index,
                  pools=tuple(pools), problems=tuple(problems))
