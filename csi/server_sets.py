"""The seam between the CSI controller and whatever runs Lustre servers.

The controller asks three things of a server-set provider: make sure a file system exists
(creating it from a template if allowed), make sure it has room for a total reservation
(adding OSTs if not), and tear down a dedicated one. Two providers implement it:

- `provisioner.local.LocalServerSets`: the embedded default; a file system is a directory tree
  on this machine and its OSTs are rows in a ledger, so every call completes at once.
- the KubeVirt provider: LustreFileSystem custom resources reconciled into VMs; calls that
  start work answer `InProgress` (retryable) until the servers are Ready.

Providers never block for long: an RPC starts work, records it in the system of record, and
answers InProgress; a retry of the same request finds the work done.

Dedication: a file system made for one dedicated volume records that volume's id
(`template.extra["dedicatedTo"]` when it is created: the local ledger's `dedicated_to`, the
LustreFileSystem's `spec.dedicatedTo`). The provider, not the caller, checks it: creating a
volume on a file system dedicated to another volume (or a dedicated volume on a shared one)
is refused, and `delete_file_system` removes only a file system dedicated to the volume named.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from csi.errors import AlreadyExists, FailedPrecondition, InvalidArgument
from csi.lustre.layout import pool_name_problem

# Smallest targets a server set accepts (ldiskfs needs room for its journal and object index).
MIN_MDT_BYTES = 1 << 30
MIN_OST_BYTES = 1 << 30


DEDICATED_TO = "dedicatedTo"  # template.extra key: the id of the volume a file system is for


def dedication(template: ServerSetTemplate) -> str:
    """The volume id a file system built from `template` is dedicated to ('' when shared)."""
    return template.extra.get(DEDICATED_TO, "")


def check_dedication(fsname: str, recorded: str, template: ServerSetTemplate) -> None:
    """AlreadyExists unless an existing file system is dedicated exactly as `template` asks.

    Never adopt: a dedicated volume must not land in a shared file system or in another
    volume's, and a shared volume must not land in a dedicated one.
    """
    wanted = dedication(template)
    if recorded == wanted:
        return
    if wanted:
        holder = f"dedicated to volume {recorded}" if recorded else "a shared file system"
        raise AlreadyExists(
            f"file system {fsname!r}, derived from this volume's name, already exists and is "
            f"{holder}; use another volume name"
        )
    raise AlreadyExists(
        f"file system {fsname!r} is dedicated to volume {recorded}; shared volumes cannot be "
        "made in it, choose another fsname"
    )


def check_deletable(fsname: str, recorded: str, dedicated_to: str) -> None:
    """FailedPrecondition unless the file system is dedicated to volume `dedicated_to`."""
    if not dedicated_to:
        raise InvalidArgument("delete_file_system: dedicated_to must name the volume")
    if recorded != dedicated_to:
        holder = f"dedicated to volume {recorded}" if recorded else "a shared file system"
        raise FailedPrecondition(
            f"file system {fsname!r} is {holder}, not dedicated to volume {dedicated_to}; "
            "lustre-csi will not delete it"
        )


@dataclass(frozen=True)
class FileSystemEndpoint:
    """What a client needs to mount a file system.

    `mgs_nids` holds one entry per MGS service node (failover partners); an entry may list
    several NIDs of the same node separated by ','. They are joined by ':' in a mount source.
    """

    fsname: str
    mgs_nids: tuple[str, ...]

    def mount_source(self, subdir: str = "") -> str:
        path = f"/{self.fsname}" + (f"/{subdir}" if subdir else "")
        return ":".join(self.mgs_nids) + ":" + path


@dataclass(frozen=True)
class ServerSetTemplate:
    """How to build a new server set; parsed from StorageClass parameters or a CR spec.

    Sizes are bytes. The KubeVirt-only fields are ignored by the local provider.
    """

    mdt_size_bytes: int = 64 << 30
    ost_size_bytes: int = 1 << 40
    osts_per_oss: int = 2
    min_osts: int = 1
    max_osts: int = 64
    # Add OSTs once reserved capacity would exceed this fraction of the total.
    growth_threshold: float = 0.8
    image: str = "ghcr.io/lustre-csi/lustre-server:2.16"
    cpu: str = "2"
    memory: str = "8Gi"
    target_storage_class: str = ""
    network_attachment: str = "lustre-storage"
    ip_pool: str = ""
    storage_interface: str = "eth1"
    # OST pools, in their parameter form (`format_ost_pools`): text, so a template compares
    # and stores (records, ledgers) as it is written.
    ost_pools: str = ""
    extra: dict[str, str] = field(default_factory=dict)


MAX_OST_POOLS = 8
POOL_INDEX_BLOCK = 1024  # pool k's OSTs have indices (k+1)*1024 ... (see kubevirt layout)


@dataclass(frozen=True)
class OstPool:
    """An OST pool of a server set: its own OSTs, on their own storage class."""

    name: str
    ost_count: int
    target_storage_class: str = ""  # empty: the file system's own


def parse_ost_pools(text: str, field_name: str = "parameter ostPools") -> tuple[OstPool, ...]:
    """`<name>:<OST count>[:<storage class>],...` (for example `flash:2:fast-ssd,disk:4`).

    InvalidArgument naming `field_name` and what it takes."""
    if not text:
        return ()
    takes = ("it takes comma-separated <pool>:<OST count>[:<target storage class>] entries, "
             f"at most {MAX_OST_POOLS}, for example flash:2:fast-ssd,disk:4")
    pools: list[OstPool] = []
    for entry in text.split(","):
        name, _, rest = entry.strip().partition(":")
        count, _, storage_class = rest.partition(":")
        problem = pool_name_problem(name)
        if problem is None and not (count.isdigit() and 1 <= int(count) <= 1024):
            problem = f"OST count {count!r} of pool {name!r} must be a whole number from 1 to 1024"
        if problem is None and (":" in storage_class or any(c.isspace() for c in storage_class)
                                or len(storage_class) > 253):
            problem = f"storage class {storage_class!r} of pool {name!r} is not a name"
        if problem is None and name in [pool.name for pool in pools]:
            problem = f"pool {name!r} is named twice"
        if problem is not None:
            raise InvalidArgument(f"{field_name}: {problem}; {takes}")
        pools.append(OstPool(name, int(count), storage_class))
    if len(pools) > MAX_OST_POOLS:
        raise InvalidArgument(f"{field_name}: {len(pools)} pools; {takes}")
    return tuple(pools)


def format_ost_pools(pools: tuple[OstPool, ...]) -> str:
    return ",".join(
        f"{p.name}:{p.ost_count}" + (f":{p.target_storage_class}" if p.target_storage_class
                                     else "")
        for p in pools
    )


@dataclass(frozen=True)
class TemplateField:
    """One StorageClass parameter: the template field it sets and the spec field it becomes.

    The one table of the template's fields: StorageClass parameters are parsed by it
    (csi.controller.parameters), LustreFileSystem specs are built from it and their errors
    named back as parameters (provisioner.kubevirt.spec).
    """

    parameter: str  # StorageClass parameter
    attribute: str  # ServerSetTemplate field
    spec_path: str  # LustreFileSystem field
    kind: Literal["size", "count", "fraction", "text", "pools"]
    minimum: int = 0  # sizes: the smallest a server set accepts
    optional: bool = False  # left out of a spec when empty


TEMPLATE_FIELDS: tuple[TemplateField, ...] = (
    TemplateField("mdtSize", "mdt_size_bytes", "spec.mdtSize", "size", MIN_MDT_BYTES),
    TemplateField("ostSize", "ost_size_bytes", "spec.ostSize", "size", MIN_OST_BYTES),
    TemplateField("ostsPerOss", "osts_per_oss", "spec.ostsPerOss", "count"),
    TemplateField("minOsts", "min_osts", "spec.minOsts", "count"),
    TemplateField("maxOsts", "max_osts", "spec.maxOsts", "count"),
    TemplateField("growthThreshold", "growth_threshold", "spec.growthThreshold", "fraction"),
    TemplateField("image", "image", "spec.server.image", "text"),
    TemplateField("cpu", "cpu", "spec.server.cpu", "text"),
    TemplateField("memory", "memory", "spec.server.memory", "text"),
    TemplateField("targetStorageClass", "target_storage_class", "spec.targetStorageClass",
                  "text", optional=True),
    TemplateField("networkAttachment", "network_attachment", "spec.network.attachment", "text"),
    TemplateField("ipPool", "ip_pool", "spec.network.ipPool", "text"),
    TemplateField("storageInterface", "storage_interface", "spec.network.interface", "text"),
    TemplateField("ostPools", "ost_pools", "spec.pools", "pools", optional=True),
)


@dataclass(frozen=True)
class FileSystemCapacity:
    """Capacity as the provider accounts it (sum of active OSTs)."""

    total_bytes: int
    ost_count: int
    max_total_bytes: int


def growth_ceiling_bytes(*, allocated_bytes: int, default_osts: int, max_osts: int,
                         ost_size_bytes: int, max_size_bytes: int | None = None) -> int:
    """The most a file system holds once grown (FileSystemCapacity.max_total_bytes).

    Every OST allocated so far at its own size, the OST pools' ones too (a volume on no pool
    is striped over them), and the default OSTs maxOsts still allows at `ost_size_bytes`:
    maxOsts counts `default_osts` only (a pool is bounded by its own index block, so a pool
    that grows raises the ceiling). At most `max_size_bytes` (spec.maxSize) when set. One rule
    for every provider and for GetCapacity: the controller skips a record larger than it.
    """
    ceiling = allocated_bytes + max(0, max_osts - default_osts) * ost_size_bytes
    return ceiling if max_size_bytes is None else min(ceiling, max_size_bytes)


def template_ceiling_bytes(template: ServerSetTemplate) -> int:
    """`growth_ceiling_bytes` of the file system `template` makes, before it exists: its
    minOsts default OSTs and every pool's OSTs, all of `ost_size_bytes`."""
    pool_osts = sum(pool.ost_count for pool in parse_ost_pools(template.ost_pools))
    return growth_ceiling_bytes(
        allocated_bytes=(template.min_osts + pool_osts) * template.ost_size_bytes,
        default_osts=template.min_osts, max_osts=template.max_osts,
        ost_size_bytes=template.ost_size_bytes,
    )


class ServerSetProvider(Protocol):
    def file_system(self, fsname: str) -> FileSystemEndpoint:
        """The endpoint of an existing, Ready file system (a lookup: nothing is created).

        NotFound when it does not exist; InProgress while it is being created or not Ready.
        """
        ...

    def ensure_file_system(self, fsname: str, template: ServerSetTemplate) -> FileSystemEndpoint:
        """The endpoint of a Ready file system, created from `template` when missing.

        Raises InProgress while it is being created or is not Ready. An existing file system
        must be dedicated as the template says (`check_dedication`), else AlreadyExists.
        """
        ...

    def ensure_capacity(self, fsname: str, required_bytes: int) -> FileSystemCapacity:
        """Make `required_bytes` of reservations fit under the growth threshold.

        Adds OSTs (never reusing an index) when they do not; raises InProgress while new OSTs
        are not yet serving, CapacityExhausted when even max_osts would not be enough.
        """
        ...

    def capacity(self, fsname: str) -> FileSystemCapacity:
        """Current capacity; NotFound for an unknown file system."""
        ...

    def dedicated_to(self, fsname: str) -> str:
        """The volume id the file system is dedicated to ('' for a shared one); NotFound for
        an unknown file system. The controller trusts a dedicated volume's record only when
        this names it."""
        ...

    def delete_file_system(self, fsname: str, *, dedicated_to: str) -> None:
        """Tear down the file system dedicated to volume `dedicated_to` (a volume id).

        Idempotent (a missing file system is gone already); TeardownStarted while it goes.
        FailedPrecondition, touching nothing, when the file system is not dedicated to that
        very volume (a shared one, or another volume's); InvalidArgument for an empty id.
        """
        ...

    def list_file_systems(self) -> list[str]:
        """Names of the file systems this provider serves, sorted."""
        ...


@runtime_checkable
class PoolCapacity(Protocol):
    """A provider that grows an OST pool by itself (the controller asks it when a volume
    names a pool; a provider without it grows only the file system as a whole)."""

    def ensure_pool_capacity(self, fsname: str, pool: str, required_bytes: int) -> None:
        """Make `required_bytes` of reservations of volumes on pool `pool` fit under the
        growth threshold of the pool's own OSTs, adding OSTs to that pool when they do not.

        InProgress while new OSTs are not yet serving; CapacityExhausted when the pool's index
        block is full; NotFound for a pool the file system does not have."""
        ...
