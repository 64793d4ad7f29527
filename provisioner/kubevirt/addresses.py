"""Static storage-network addresses: IP pools, allocation, fixed MACs.

A Lustre server is known by its NID (`<ip>@tcp`), written into the MGS configuration logs at
first mount, so a server must keep its IP across restarts and node moves (DESIGN.md, "NIDs
must not change"). The reconciler allocates one address per server from the pool in the
spec, records it in `status.servers[]` *before* creating the VM, and builds the VM's
cloud-init network data and MAC from that record. Before that record is written, the address
is claimed in the one claims object (`AddressClaimStore`, a ConfigMap), so a claim is atomic
across file systems; the status stays the record of which server has which address, and
allocation is a pure function of the pool and the
addresses already taken (by this and every other LustreFileSystem, as claimed in the claims
object, see `AddressClaims`).

A pool is kept as integer spans and never expanded into a list: a /8 holds 16 million
addresses, and the spec is parsed on every reconcile and every CreateVolume.

Pool syntax (`spec.network.ipPool`): comma-separated entries, each either a CIDR whose host
addresses are all usable (`10.20.0.0/28`) or an inclusive range with the prefix length the
guests configure (`10.20.0.10-10.20.0.40/24`).
"""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from provisioner.kubevirt.kube import CONFIG_MAPS, Kube

STORAGE_MAC_PREFIX = (0x02, 0x4C)  # locally administered, unicast
MANAGEMENT_MAC_PREFIX = (0x02, 0x4D)


@dataclass(frozen=True)
class AddressRange:
    first: ipaddress.IPv4Address
    last: ipaddress.IPv4Address
    prefix_length: int

    def __len__(self) -> int:
        return int(self.last) - int(self.first) + 1


@dataclass(frozen=True)
class AddressPool:
    """A pool as integer intervals: never expanded, so a /8 costs what a /28 does."""

    text: str
    ranges: tuple[AddressRange, ...]

    @property
    def spans(self) -> tuple[tuple[int, int], ...]:
        """The pool's addresses as sorted, disjoint, inclusive (first, last) integer spans."""
        merged: list[list[int]] = []
        for first, last in sorted((int(r.first), int(r.last)) for r in self.ranges):
            if merged and first <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], last)
            else:
                merged.append([first, last])
        return tuple((first, last) for first, last in merged)

    @property
    def size(self) -> int:
        return sum(last - first + 1 for first, last in self.spans)

    def prefix_length(self, address: str) -> int:
        ip = ipaddress.IPv4Address(address)
        for r in self.ranges:
            if r.first <= ip <= r.last:
                return r.prefix_length
        raise KeyError(address)

    def __contains__(self, address: object) -> bool:
        try:
            self.prefix_length(str(address))
        except (KeyError, ValueError):
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        """Every address in order (lazily; callers that want a few stop early)."""
        for first, last in self.spans:
            for value in range(first, last + 1):
                yield str(ipaddress.IPv4Address(value))


def parse_pool(text: str) -> AddressPool:
    """The pool in `text`; ValueError with a message saying what is wrong."""
    entries = [entry.strip() for entry in text.split(",") if entry.strip()]
    if not entries:
        raise ValueError(
            "is empty; give a CIDR (10.20.0.0/28) or a range (10.20.0.10-10.20.0.40/24)"
        )
    ranges = []
    for entry in entries:
        try:
            ranges.append(_parse_entry(entry))
        except ValueError as error:
            raise ValueError(f"entry {entry!r}: {error}") from None
    return AddressPool(text=text, ranges=tuple(ranges))


def _parse_entry(entry: str) -> AddressRange:
    if "-" not in entry:
        network = ipaddress.IPv4Network(entry, strict=False)
        # Host addresses without listing them: a /31 or /32 has no network/broadcast pair.
        edge = 1 if network.prefixlen < 31 else 0
        return AddressRange(network.network_address + edge, network.broadcast_address - edge,
                            network.prefixlen)
    span, slash, prefix = entry.partition("/")
    if not slash or not prefix.isdigit() or not 1 <= int(prefix) <= 32:
        raise ValueError(
            "a range needs the network's prefix length, as in 10.20.0.10-10.20.0.40/24"
        )
    first_text, _, last_text = span.partition("-")
    first = ipaddress.IPv4Address(first_text.strip())
    last = ipaddress.IPv4Address(last_text.strip())
    if last < first:
        raise ValueError("the range ends before it starts")
    network = ipaddress.IPv4Network(f"{first}/{prefix}", strict=False)
    if last not in network:
        raise ValueError(f"{last} is outside {network}")
    return AddressRange(first, last, int(prefix))


def allocate(pool: AddressPool, taken: Iterable[str], count: int) -> list[str]:
    """The first `count` free addresses of the pool in order; fewer when it runs out.

    Arithmetic on integers: walk each span from its start, stepping over the taken addresses
    that fall inside it (sorted), so the cost follows the number of taken addresses and
    `count`, never the size of the pool.
    """
    used = sorted({value for value in (_as_int(a) for a in taken) if value is not None})
    free: list[str] = []
    for first, last in pool.spans:
        candidate = first
        for value in used[bisect.bisect_left(used, first):]:
            if len(free) == count or value > last:
                break
            while candidate < value and len(free) < count:
                free.append(str(ipaddress.IPv4Address(candidate)))
                candidate += 1
            candidate = max(candidate, value + 1)
        while candidate <= last and len(free) < count:
            free.append(str(ipaddress.IPv4Address(candidate)))
            candidate += 1
        if len(free) == count:
            break
    return free


def _as_int(address: str) -> int | None:
    try:
        return int(ipaddress.IPv4Address(address))
    except ValueError:
        return None  # not an IPv4 address: it cannot take one of ours


CLAIMS_NAME = "lustre-csi-address-claims"


@dataclass(frozen=True)
class AddressClaims:
    """Every storage address handed out, in one object: address -> "<file system>/<server>".

    One object for all file systems, so a claim is one write guarded by the object's
    resourceVersion: of two leaders (or two passes) that read the same claims and pick the
    same free address, one write wins and the other gets a Conflict, reads again and picks
    another. No address can be given to two file systems.
    """

    owners: Mapping[str, str]
    version: str  # the object's resourceVersion; "" when it does not exist yet

    def taken_by_others(self, fs: str) -> set[str]:
        return {a for a, owner in self.owners.items() if owner.partition("/")[0] != fs}

    def held_by(self, fs: str) -> dict[str, str]:
        """Server name -> address, for the claims of file system `fs`."""
        return {owner.partition("/")[2]: a for a, owner in self.owners.items()
                if owner.partition("/")[0] == fs}


class AddressClaimStore:
    """The claims as a ConfigMap in the driver's namespace, written with optimistic locking."""

    def __init__(self, kube: Kube, namespace: str, name: str = CLAIMS_NAME) -> None:
        self._kube = kube
        self.namespace = namespace
        self.name = name

    def read(self) -> AddressClaims:
        found = self._kube.get(CONFIG_MAPS, self.name, self.namespace)
        if found is None:
            return AddressClaims({}, "")
        data = found.get("data") or {}
        return AddressClaims({str(k): str(v) for k, v in data.items()},
                             str(found["metadata"]["resourceVersion"]))

    def write(self, read: AddressClaims, owners: Mapping[str, str]) -> AddressClaims:
        """Replace the claims read as `read` by `owners`; ConflictError if they changed since."""
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace,
                                    "labels": {"app.kubernetes.io/name": "lustre-csi"}}
        body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata,
                "data": dict(owners)}
        if read.version:
            metadata["resourceVersion"] = read.version
            written = self._kube.replace(CONFIG_MAPS, self.name, body, self.namespace)
        else:
            written = self._kube.create(CONFIG_MAPS, body, self.namespace)  # Conflict if raced
        return AddressClaims(dict(owners), str(written["metadata"]["resourceVersion"]))


def _mac(prefix: tuple[int, int], address: str) -> str:
    octets = (*prefix, *ipaddress.IPv4Address(address).packed)
    return ":".join(f"{octet:02x}" for octet in octets)


def storage_mac(address: str) -> str:
    """A fixed MAC derived from the server's storage IP: unique wherever the IP is."""
    return _mac(STORAGE_MAC_PREFIX, address)


def management_mac(address: str) -> str:
    """The pod-network interface's MAC, fixed too so cloud-init can match it by address."""
    return _mac(MANAGEMENT_MAC_PREFIX, address)
