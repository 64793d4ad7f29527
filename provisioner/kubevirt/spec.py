"""The LustreFileSystem spec: parsing, validation with field-named errors, and naming.

Two layers refuse bad specs. The CRD's OpenAPI schema (with CEL rules) rejects most of them at
admission, so `kubectl apply` fails with the field path in the message. This module checks
everything again, including what a schema cannot express (the IP pool must hold an address
for every server the file system may ever need), because specs also come from StorageClass
parameters (`spec_from_template`) and from CRs written before a schema change. Its messages
name the spec field (`spec.network.ipPool: ...`); `template_error` turns them into messages
that name the StorageClass parameter too.

Object names: the CR is cluster-scoped and named after the fsname when the fsname is a valid
DNS label (`scratch`), otherwise a lowercased form plus a short hash (`Scr_1` -> `scr-1-3fa9c2`),
so the same fsname always maps to the same object and a repeated CreateVolume finds it.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from typing import Any

from csi.errors import InvalidArgument
from csi.lustre.fsname import fsname_problem
from csi.lustre.layout import pool_name_problem
from csi.quantity import format_quantity, parse_quantity
from csi.server_sets import (
    MAX_OST_POOLS,
    MIN_MDT_BYTES,
    MIN_OST_BYTES,
    TEMPLATE_FIELDS,
    OstPool,
    ServerSetTemplate,
    parse_ost_pools,
)
from provisioner.kubevirt.addresses import AddressPool, parse_pool

MIN_MEMORY_BYTES = 1 << 30
MAX_OSTS_PER_OSS = 16
MAX_OSTS = 1024
MAX_OBJECT_NAME = 40  # leaves room for "-oss1023" and KubeVirt's "virt-launcher-...-xxxxx"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_CPU = re.compile(r"^[0-9]+(m)?$")
_NO_SPACE = re.compile(r"^\S{1,253}$")
_LNET = re.compile(r"^tcp[0-9]*$")

# spec path -> StorageClass parameter, for messages about specs built from parameters
_PARAMETER_OF = {"spec.fsname": "fsname", **{f.spec_path: f.parameter for f in TEMPLATE_FIELDS}}
_DEFAULTS = ServerSetTemplate()  # a spec field left out means the template's default


class SpecError(InvalidArgument):
    """One or more fields are wrong; `problems` holds (field path, what is wrong) pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{path}: {text}" for path, text in problems))


@dataclass(frozen=True)
class FileSystemSpec:
    fsname: str
    mdt_size_bytes: int
    ost_size_bytes: int
    osts_per_oss: int
    min_osts: int
    max_osts: int
    ost_count: int  # desired OSTs: max(minOsts, spec.ostCount)
    max_size_bytes: int | None
    growth_threshold: float
    image: str
    cpu: str
    memory: str
    target_storage_class: str
    network_attachment: str
    ip_pool: AddressPool
    storage_interface: str
    lnet_network: str
    gateway: str
    force_delete: bool
    dedicated_to: str
    pools: tuple[OstPool, ...] = ()  # each pool's OSTs sit on OSS VMs of their own

    @property
    def max_servers(self) -> int:
        """The MDS plus every OSS maxOsts (and each pool) could need: what the IP pool must
        be able to hold."""
        pool_servers = sum(math.ceil(p.ost_count / self.osts_per_oss) for p in self.pools)
        return 1 + math.ceil(self.max_osts / self.osts_per_oss) + pool_servers

    def pool(self, name: str) -> OstPool | None:
        return next((p for p in self.pools if p.name == name), None)

    def nid(self, address: str) -> str:
        return f"{address}@{self.lnet_network}"


def object_name(fsname: str) -> str:
    """The LustreFileSystem object name for an fsname (see module docstring)."""
    if _DNS_LABEL.match(fsname):
        return fsname
    readable = re.sub(r"[^a-z0-9-]+", "-", fsname.lower()).strip("-") or "fs"
    return f"{readable}-{hashlib.sha256(fsname.encode()).hexdigest()[:6]}"


def parse_spec(spec: dict[str, Any], name: str | None = None) -> FileSystemSpec:
    """The typed spec; SpecError naming every bad field."""
    problems: list[tuple[str, str]] = []
    reader = _Reader(spec, problems)
    if name is not None and (not _DNS_LABEL.match(name) or len(name) > MAX_OBJECT_NAME):
        problems.append(("metadata.name", f"{name!r} must be a DNS label of at most "
                         f"{MAX_OBJECT_NAME} characters (it prefixes the VM names)"))
    fsname = reader.text("spec.fsname", required=True)
    if fsname and (problem := fsname_problem(fsname)) is not None:
        problems.append(("spec.fsname", problem))
    mdt = reader.size("spec.mdtSize", MIN_MDT_BYTES, required=True)
    ost = reader.size("spec.ostSize", MIN_OST_BYTES, required=True)
    per_oss = reader.integer("spec.ostsPerOss", _DEFAULTS.osts_per_oss, 1, MAX_OSTS_PER_OSS)
    min_osts = reader.integer("spec.minOsts", _DEFAULTS.min_osts, 1, MAX_OSTS)
    max_osts = reader.integer("spec.maxOsts", _DEFAULTS.max_osts, 1, MAX_OSTS)
    if min_osts > max_osts:
        problems.append(("spec.minOsts", f"{min_osts} is above spec.maxOsts ({max_osts})"))
    ost_count = reader.integer("spec.ostCount", 0, 0, MAX_OSTS)
    if ost_count > max_osts:
        problems.append(("spec.ostCount", f"{ost_count} is above spec.maxOsts ({max_osts})"))
    max_size = reader.size("spec.maxSize", MIN_OST_BYTES, required=False)
    threshold_raw = spec.get("growthThreshold", _DEFAULTS.growth_threshold)
    threshold = float(threshold_raw) if isinstance(threshold_raw, int | float) else -1.0
    if not 0.05 <= threshold <= 1.0:
        problems.append(("spec.growthThreshold", f"{threshold_raw!r} must be a number from "
                         "0.05 to 1.0"))
    server = reader.mapping("spec.server")
    image = _Reader(server, problems).text("spec.server.image", required=True)
    cpu = _Reader(server, problems).text("spec.server.cpu") or _DEFAULTS.cpu
    if not _CPU.match(cpu) or cpu in ("0", "0m"):
        problems.append(("spec.server.cpu", f"{cpu!r} must be a CPU quantity such as 2 or 1500m"))
    memory = _Reader(server, problems).text("spec.server.memory") or _DEFAULTS.memory
    try:
        if parse_quantity("spec.server.memory", memory) < MIN_MEMORY_BYTES:
            problems.append(("spec.server.memory", f"{memory!r} is below the minimum of 1Gi"))
    except InvalidArgument:
        problems.append(("spec.server.memory", f"{memory!r} is not a size such as 8Gi"))
    storage_class = reader.text("spec.targetStorageClass")
    network = reader.mapping("spec.network")
    net = _Reader(network, problems)
    attachment = net.text("spec.network.attachment", required=True)
    pool_text = net.text("spec.network.ipPool", required=True)
    interface = net.text("spec.network.interface") or _DEFAULTS.storage_interface
    lnet = net.text("spec.network.lnetNetwork") or "tcp"
    if not _LNET.match(lnet):
        problems.append(("spec.network.lnetNetwork", f"{lnet!r} must be tcp or tcpN"))
    gateway = net.text("spec.network.gateway")
    pool = AddressPool(text="", ranges=())
    if pool_text:
        try:
            pool = parse_pool(pool_text)
        except ValueError as error:
            problems.append(("spec.network.ipPool", f"{pool_text!r}: {error}"))
    force = spec.get("forceDelete", False)
    if not isinstance(force, bool):
        problems.append(("spec.forceDelete", f"{force!r} must be true or false"))
    dedicated = reader.text("spec.dedicatedTo")
    pools = _pools(spec.get("pools"), problems)
    if problems:
        raise SpecError(problems)
    parsed = FileSystemSpec(
        fsname=fsname, mdt_size_bytes=mdt or 0, ost_size_bytes=ost or 0,
        osts_per_oss=per_oss, min_osts=min_osts, max_osts=max_osts,
        ost_count=max(min_osts, ost_count), max_size_bytes=max_size,
        growth_threshold=threshold, image=image, cpu=cpu, memory=memory,
        target_storage_class=storage_class, network_attachment=attachment, ip_pool=pool,
        storage_interface=interface, lnet_network=lnet, gateway=gateway,
        force_delete=bool(force), dedicated_to=dedicated, pools=pools,
    )
    if pool.size < parsed.max_servers:
        for_pools = parsed.max_servers - 1 - math.ceil(max_osts / per_oss)
        pools_part = f" and {for_pools} for the pools" if parsed.pools else ""
        raise SpecError([("spec.network.ipPool", (
            f"{pool_text!r} holds {pool.size} address(es) but the file system may need "
            f"{parsed.max_servers} (1 MDS + {math.ceil(max_osts / per_oss)} OSS for maxOsts "
            f"{max_osts} at ostsPerOss {per_oss}{pools_part}); widen the pool or lower "
            "spec.maxOsts"))])
    floor = parsed.ost_size_bytes * min_osts
    if max_size is not None and max_size < floor:
        raise SpecError([("spec.maxSize", f"{format_quantity(max_size)} is below minOsts x "
                          f"ostSize ({format_quantity(floor)})")])
    return parsed


def _pools(value: Any, problems: list[tuple[str, str]]) -> tuple[OstPool, ...]:
    """spec.pools: a list of {name, ostCount, targetStorageClass}, names unique."""
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_OST_POOLS:
        problems.append(("spec.pools", f"must be a list of at most {MAX_OST_POOLS} pools"))
        return ()
    pools: list[OstPool] = []
    for position, entry in enumerate(value):
        path = f"spec.pools[{position}]"
        reader = _Reader(entry, problems)
        if not isinstance(entry, dict):
            problems.append((path, "must be an object with name, ostCount, targetStorageClass"))
            continue
        name = reader.text(f"{path}.name", required=True)
        if name and (problem := pool_name_problem(name)) is not None:
            problems.append((f"{path}.name", problem))
        elif name in [pool.name for pool in pools]:
            problems.append((f"{path}.name", f"{name!r} is named twice"))
        count = reader.integer(f"{path}.ostCount", 1, 1, MAX_OSTS)
        pools.append(OstPool(name, count, reader.text(f"{path}.targetStorageClass")))
    return tuple(pools)


def spec_from_template(fsname: str, template: ServerSetTemplate,
                       dedicated_to: str = "") -> dict[str, Any]:
    """The spec of a LustreFileSystem built from StorageClass parameters (one field table)."""
    spec: dict[str, Any] = {"fsname": fsname, "ostCount": template.min_osts}
    for field in TEMPLATE_FIELDS:
        value = getattr(template, field.attribute)
        if field.optional and not value:
            continue
        *parents, key = field.spec_path.split(".")[1:]
        place = spec
        for parent in parents:
            place = place.setdefault(parent, {})
        if field.kind == "pools":
            place[key] = [
                {"name": pool.name, "ostCount": pool.ost_count,
                 **({"targetStorageClass": pool.target_storage_class}
                    if pool.target_storage_class else {})}
                for pool in parse_ost_pools(value)
            ]
            continue
        place[key] = format_quantity(value) if field.kind == "size" else value
    if dedicated_to:
        spec["dedicatedTo"] = dedicated_to
    return spec


def template_error(error: SpecError) -> InvalidArgument:
    """The same problems, named as StorageClass parameters (with the spec field beside)."""
    parts = []
    for path, text in error.problems:
        parameter = _PARAMETER_OF.get(path)
        parts.append(f"parameter {parameter} ({path}): {text}" if parameter else f"{path}: {text}")
    return InvalidArgument("; ".join(parts))


class _Reader:
    def __init__(self, source: Any, problems: list[tuple[str, str]]) -> None:
        self._source = source if isinstance(source, dict) else {}
        self._problems = problems

    def _key(self, path: str) -> str:
        return path.rsplit(".", 1)[-1]

    def mapping(self, path: str) -> dict[str, Any]:
        value = self._source.get(self._key(path), {})
        if not isinstance(value, dict):
            self._problems.append((path, "must be an object"))
            return {}
        return value

    def text(self, path: str, required: bool = False) -> str:
        value = self._source.get(self._key(path))
        if value is None or value == "":
            if required:
                self._problems.append((path, "is required"))
            return ""
        if not isinstance(value, str) or not _NO_SPACE.match(value):
            self._problems.append((path, f"{value!r} must be 1-253 characters without spaces"))
            return ""
        return value

    def integer(self, path: str, default: int, low: int, high: int) -> int:
        value = self._source.get(self._key(path), default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self._problems.append((path, f"{value!r} must be a whole number from {low} to {high}"))
            return default
        return value

    def size(self, path: str, minimum: int, required: bool) -> int | None:
        value = self._source.get(self._key(path))
        if value is None or value == "":
            if required:
                self._problems.append((path, "is required"))
            return None
        try:
            size = parse_quantity(path, str(value))
        except InvalidArgument:
            self._problems.append((path, f"{value!r} is not a size; use a whole number with an "
                                   "optional suffix such as 512Mi, 100Gi or 2Ti"))
            return None
        if size < minimum:
            self._problems.append((path, f"{value!r} is below the minimum of "
                                   f"{format_quantity(minimum)}"))
            return None
        return size
