"""The server set's layout: which servers exist, their addresses, which OST lives where.

The layout is recorded in the LustreFileSystem's status (`servers[]`, `osts[]`,
`nextOstIndex`) and is the durable plan the reconciler builds Kubernetes objects from. It is
extended (never rewritten) by `extend_layout`, a pure function: given the spec's desired OST
count, it adds the MDS if missing, then places each new OST on an existing OSS with room
(a hotplugged disk) or on a new OSS, with a new address from the pool. OST indices come from
`nextOstIndex`, which only grows, so an index is never reused even if a row is removed by hand.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from csi.quantity import format_quantity
from provisioner.kubevirt.addresses import allocate, storage_mac
from provisioner.kubevirt.spec import FileSystemSpec

MDS = "mds0"


@dataclass(frozen=True)
class ServerRecord:
    name: str  # "mds0", "oss0", "oss1", ...
    role: str  # "mds" | "oss"
    address: str

    @property
    def mac(self) -> str:
        return storage_mac(self.address)


@dataclass(frozen=True)
class OstRecord:
    index: int
    oss: str
    size_bytes: int
    hotplug: bool  # added to an OSS whose VM existed already

    @property
    def label(self) -> str:
        """Lustre's name for the target and our disk serial: OST000a."""
        return f"OST{self.index:04x}"


@dataclass(frozen=True)
class Layout:
    servers: tuple[ServerRecord, ...] = ()
    osts: tuple[OstRecord, ...] = ()
    next_ost_index: int = 0
    problems: tuple[str, ...] = field(default=(), compare=False)

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
        ServerRecord(name=s["name"], role=s["role"], address=s["address"])
        for s in status.get("servers") or []
    )
    osts = tuple(
        OstRecord(index=int(o["index"]), oss=o["oss"], size_bytes=int(o["sizeBytes"]),
                  hotplug=o.get("attachment") == "hotplug")
        for o in status.get("osts") or []
    )
    next_index = max([int(status.get("nextOstIndex") or 0), *(o.index + 1 for o in osts)])
    return Layout(servers=servers, osts=osts, next_ost_index=next_index)


def layout_status(layout: Layout, spec: FileSystemSpec) -> dict[str, Any]:
    """The allocation part of the status (observed fields are merged in by the reconciler)."""
    return {
        "servers": [
            {"name": s.name, "role": s.role, "address": s.address, "mac": s.mac,
             "nid": spec.nid(s.address)}
            for s in layout.servers
        ],
        "osts": [
            {"index": o.index, "label": o.label, "oss": o.oss, "sizeBytes": o.size_bytes,
             "size": format_quantity(o.size_bytes),
             "attachment": "hotplug" if o.hotplug else "boot"}
            for o in layout.osts
        ],
        "nextOstIndex": layout.next_ost_index,
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
    while len(osts) < spec.ost_count:
        oss_names = [s.name for s in servers if s.role == "oss"]
        with_room = [n for n in oss_names
                     if sum(1 for o in osts if o.oss == n) < spec.osts_per_oss]
        if with_room:
            target = with_room[0]
        else:
            number = max((int(n[3:]) for n in oss_names), default=-1) + 1
            record = new_server(f"oss{number}", "oss")
            if record is None:
                break
            target = record.name
        osts.append(OstRecord(index=next_index, oss=target, size_bytes=spec.ost_size_bytes,
                              hotplug=target in existing))
        next_index += 1
    return Layout(servers=tuple(servers), osts=tuple(osts), next_ost_index=next_index,
                  problems=tuple(problems))
