"""KubeVirtServerSets: the ServerSetProvider the CSI controller calls (every replica).

It never creates VMs itself and never waits: it writes the desired state into the
LustreFileSystem (create the object; raise `spec.ostCount`) and reads the outcome from its
status, answering `InProgress` (retryable) until the leader's reconciler has made it so.

Where a growth request is recorded: `spec.ostCount`, the desired number of OSTs. It is the
durable, level-based form of "make room for N bytes": `ensure_capacity` computes the OST count
the reservation (or the use measured in status.capacity, when larger) needs
(`provisioner.growth.plan_growth`, against every OST already planned,
so a repeated request adds nothing), raises `spec.ostCount` to it (never lowers it) with
optimistic concurrency, and answers InProgress until enough OSTs are `Active` in status. A
provisioner restart loses nothing: the request is in the spec, the plan in the status.

OST pools: every pool's OSTs are room for the file system as a whole (a volume on no pool is
striped over all of them), but spec.ostCount and maxOsts count only the default OSTs. A pool
short of room for its own volumes grows by its `spec.pools[].ostCount`
(`ensure_pool_capacity`, the csi.server_sets.PoolCapacity port; the plan is
kubevirt/pool_growth.py's), in the same way and through the same loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from csi.errors import FailedPrecondition, InProgress, NotFound, TeardownStarted
from csi.lustre.fsname import validate_fsname
from csi.quantity import format_quantity
from csi.server_sets import (
    FileSystemCapacity,
    FileSystemEndpoint,
    ServerSetTemplate,
    check_dedication,
    check_deletable,
    dedication,
    growth_ceiling_bytes,
)
from provisioner.growth import plan_growth
from provisioner.kubevirt.events import EventRecorder
from provisioner.kubevirt.kube import LUSTRE_FILE_SYSTEMS, ConflictError, Kube
from provisioner.kubevirt.pool_growth import asked_for, pool_growth
from provisioner.kubevirt.spec import (
    FileSystemSpec,
    SpecError,
    object_name,
    parse_spec,
    spec_from_template,
    template_error,
)

log = logging.getLogger(__name__)
_PATCH_ATTEMPTS = 5


class KubeVirtServerSets:
    """ServerSetProvider over LustreFileSystem objects (see module docstring).

    `kube`: a `Kube` (e.g. `RestKube(api_client)`) with the controller's ServiceAccount;
    `identity`: names this replica in the Events it records.
    """

    def __init__(self, kube: Kube, identity: str = "") -> None:
        self._kube = kube
        self._events = EventRecorder(kube, identity)

    # -- ServerSetProvider -------------------------------------------------------------------
    def file_system(self, fsname: str) -> FileSystemEndpoint:
        return endpoint_of(self._require(fsname))

    def ensure_file_system(self, fsname: str, template: ServerSetTemplate) -> FileSystemEndpoint:
        validate_fsname(fsname)
        lfs = self.find(fsname)
        if lfs is None:
            lfs = self._create(fsname, template)
        check_dedication(fsname, _dedicated_to(lfs), template)
        return endpoint_of(lfs)

    def ensure_capacity(self, fsname: str, required_bytes: int) -> FileSystemCapacity:
        def step(lfs: dict[str, Any], spec: FileSystemSpec) -> _GrowthStep:
            status = lfs.get("status") or {}
            osts = status.get("osts") or []
            default = asked_for(spec, osts, "")
            # Every pool's OSTs are room too (a volume on no pool is striped over all of
            # them, and required_bytes counts the pools' volumes), but spec.ostCount and
            # maxOsts count only the default OSTs.
            pools = [asked_for(spec, osts, name) for name in _pool_names(spec, osts)]
            used = int((status.get("capacity") or {}).get("usedBytes") or 0)
            plan = plan_growth(
                fsname=fsname, required_bytes=required_bytes,
                current_total_bytes=default.total_bytes + sum(p.total_bytes for p in pools),
                current_osts=default.count, ost_size_bytes=spec.ost_size_bytes,
                threshold=spec.growth_threshold, max_osts=spec.max_osts,
                max_total_bytes=spec.max_size_bytes, used_bytes=used,
            )
            needs = _what_needs_room(required_bytes, plan.sized_for)
            serving = _capacity_of(lfs)
            waiting = ""
            if plan.sized_for > serving.total_bytes * spec.growth_threshold:
                waiting = (f"growing to hold {needs} "
                           f"(OSTs {serving.ost_count}/"
                           f"{plan.target_osts + sum(p.count for p in pools)} serving, "
                           f"{format_quantity(serving.total_bytes)} of "
                           f"{format_quantity(plan.target_total_bytes)})")
            return _GrowthStep(
                patch=_spec_patch(lfs, {"ostCount": plan.target_osts}) if plan.add else None,
                requested=(f"{needs} need {format_quantity(plan.target_total_bytes)} at the "
                           f"{spec.growth_threshold:.0%} threshold: spec.ostCount "
                           f"{default.count} -> {plan.target_osts}"),
                waiting=waiting,
            )

        return _capacity_of(self._grow(fsname, step))

    def ensure_pool_capacity(self, fsname: str, pool: str, required_bytes: int) -> None:
        """PoolCapacity: raise the pool's spec.pools ostCount (the reconciler plans its new
        OSTs in the pool's own index block) and wait until the pool's OSTs serve."""
        def step(lfs: dict[str, Any], spec: FileSystemSpec) -> _GrowthStep:
            growth = pool_growth(lfs, pool, required_bytes)
            volumes = f"{format_quantity(required_bytes)} of volumes"
            waiting = ""
            if not growth.serving:
                waiting = (f"growing OST pool {pool} to hold {volumes} "
                           f"(OSTs {growth.active_osts}/{growth.target_osts} serving, "
                           f"{format_quantity(growth.active_bytes)} of "
                           f"{format_quantity(growth.target_total_bytes)})")
            return _GrowthStep(
                patch=growth.patch,
                requested=(f"{volumes} on OST pool {pool} need "
                           f"{format_quantity(growth.target_total_bytes)} at the "
                           f"{spec.growth_threshold:.0%} threshold: spec.pools[{pool}].ostCount "
                           f"{growth.desired_osts} -> {growth.target_osts}"),
                waiting=waiting,
            )

        self._grow(fsname, step)

    def capacity(self, fsname: str) -> FileSystemCapacity:
        return _capacity_of(self._require(fsname))

    def dedicated_to(self, fsname: str) -> str:
        return _dedicated_to(self._require(fsname))

    def delete_file_system(self, fsname: str, *, dedicated_to: str) -> None:
        validate_fsname(fsname)
        lfs = self.find(fsname)
        if lfs is None:
            return
        # The object itself must say whom it serves: a made-up or stale volume id never
        # deletes a shared file system or another volume's.
        check_deletable(fsname, _dedicated_to(lfs), dedicated_to)
        name = lfs["metadata"]["name"]
        if not lfs["metadata"].get("deletionTimestamp"):
            self._kube.delete(LUSTRE_FILE_SYSTEMS, name)
            lfs = self._kube.get(LUSTRE_FILE_SYSTEMS, name)
            if lfs is None:
                return
        blocked = _condition(lfs, "DeletionBlocked")
        if blocked.get("status") == "True":
            raise FailedPrecondition(f"file system {fsname!r}: {blocked.get('message')}")
        raise TeardownStarted(f"file system {fsname!r} is being torn down; retry shortly")

    def list_file_systems(self) -> list[str]:
        items = self._kube.list(LUSTRE_FILE_SYSTEMS)[0]
        return sorted(str((i.get("spec") or {}).get("fsname")) for i in items
                      if (i.get("spec") or {}).get("fsname"))

    # -- extras for the controller -----------------------------------------------------------
    def find(self, fsname: str) -> dict[str, Any] | None:
        """The LustreFileSystem whose spec.fsname is `fsname`, or None."""
        lfs = self._kube.get(LUSTRE_FILE_SYSTEMS, object_name(fsname))
        if lfs is not None and (lfs.get("spec") or {}).get("fsname") == fsname:
            return LUSTRE_FILE_SYSTEMS.typed(lfs)
        # Created by hand under another name: the oldest one with this fsname is the real one.
        matches = [i for i in self._kube.list(LUSTRE_FILE_SYSTEMS)[0]
                   if (i.get("spec") or {}).get("fsname") == fsname]
        matches.sort(key=lambda i: (i["metadata"].get("creationTimestamp", ""),
                                    i["metadata"]["name"]))
        return LUSTRE_FILE_SYSTEMS.typed(matches[0]) if matches else None

    # -- internals -----------------------------------------------------------------------------
    def _grow(self, fsname: str,
              step: Callable[[dict[str, Any], FileSystemSpec], _GrowthStep]) -> dict[str, Any]:
        """Request growth as `step` plans it against the object as read, with optimistic
        concurrency (a conflict reads it again and plans anew), recording a GrowthRequested
        Event for each patch. The object once its serving OSTs hold the request; InProgress
        until then."""
        for _ in range(_PATCH_ATTEMPTS):
            lfs = self._require(fsname)
            _check_usable(lfs)
            growth = step(lfs, _parsed(lfs))
            if growth.patch is not None:
                try:
                    lfs = LUSTRE_FILE_SYSTEMS.typed(self._kube.patch(
                        LUSTRE_FILE_SYSTEMS, lfs["metadata"]["name"], growth.patch))
                except ConflictError:
                    continue
                self._events.record(lfs, "Normal", "GrowthRequested", growth.requested)
            if growth.waiting:
                raise InProgress(waiting_for(lfs, growth.waiting))
            return lfs
        raise InProgress(f"waiting for the LustreFileSystem of file system {fsname!r}: it "
                         f"changed {_PATCH_ATTEMPTS} times while this request grew it; retrying")

    def _require(self, fsname: str) -> dict[str, Any]:
        validate_fsname(fsname)
        lfs = self.find(fsname)
        if lfs is None:
            raise NotFound(f"file system {fsname!r} does not exist")
        return lfs

    def _create(self, fsname: str, template: ServerSetTemplate) -> dict[str, Any]:
        spec = spec_from_template(fsname, template, dedication(template))
        name = object_name(fsname)
        try:
            parse_spec(spec, name)
        except SpecError as error:
            raise template_error(error) from None
        body = {"apiVersion": LUSTRE_FILE_SYSTEMS.api_version, "kind": LUSTRE_FILE_SYSTEMS.kind,
                "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by":
                                                      "lustre-csi"}},
                "spec": spec}
        try:
            created = LUSTRE_FILE_SYSTEMS.typed(self._kube.create(LUSTRE_FILE_SYSTEMS, body))
        except ConflictError:
            found = self.find(fsname)
            if found is None:
                raise InProgress(f"file system {fsname!r} is being replaced; retry") from None
            return found
        self._events.record(created, "Normal", "Requested",
                            f"created from StorageClass parameters for file system {fsname!r}")
        return created


@dataclass(frozen=True)
class _GrowthStep:
    """One growth request planned against the object as read."""

    patch: dict[str, Any] | None  # the spec patch asking for more OSTs; None: enough asked
    requested: str  # the GrowthRequested Event's message, when patched
    waiting: str  # what the request still waits for; '' once the serving OSTs hold it


def _spec_patch(lfs: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    """A patch of `spec` fields that applies only to the object as read (else Conflict)."""
    return {"metadata": {"resourceVersion": lfs["metadata"]["resourceVersion"]}, "spec": spec}


def _pool_names(spec: FileSystemSpec, osts: list[dict[str, Any]]) -> list[str]:
    """Pools declared, and pools with OSTs planned (their OSTs stay when the spec drops one)."""
    names = [p.name for p in spec.pools]
    return names + sorted({o["pool"] for o in osts if o.get("pool")} - set(names))


def _what_needs_room(required_bytes: int, sized_for: int) -> str:
    volumes = f"{format_quantity(required_bytes)} of volumes"
    if sized_for > required_bytes:
        return f"{format_quantity(sized_for)} measured in use ({volumes})"
    return volumes


def _dedicated_to(lfs: dict[str, Any]) -> str:
    """The volume id in spec.dedicatedTo ('' for a shared file system)."""
    return str((lfs.get("spec") or {}).get("dedicatedTo") or "")


def _condition(lfs: dict[str, Any], kind: str) -> dict[str, Any]:
    conditions = (lfs.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == kind), {})


def _parsed(lfs: dict[str, Any]) -> FileSystemSpec:
    try:
        return parse_spec(lfs.get("spec") or {}, lfs["metadata"]["name"])
    except SpecError as error:
        raise FailedPrecondition(
            f"LustreFileSystem {lfs['metadata']['name']} has an invalid spec: {error}") from None


def _check_usable(lfs: dict[str, Any]) -> None:
    if lfs["metadata"].get("deletionTimestamp"):
        raise InProgress(waiting_for(lfs, "it is being deleted; once it is gone, a retry "
                                          "creates it again"))
    status = lfs.get("status") or {}
    if status.get("phase") == "Failed":
        ready = _condition(lfs, "Ready")
        raise FailedPrecondition(f"LustreFileSystem {lfs['metadata']['name']} cannot be built: "
                                 f"{ready.get('message', 'see its status')}")


def endpoint_of(lfs: dict[str, Any]) -> FileSystemEndpoint:
    """How to mount a Ready file system; InProgress (or FailedPrecondition) when it is not."""
    _check_usable(lfs)
    fsname = lfs["spec"]["fsname"]
    status = lfs.get("status") or {}
    ready = _condition(lfs, "Ready")
    nids = tuple(status.get("mgsNids") or [])
    if ready.get("status") != "True" or not nids:
        raise InProgress(waiting_for(lfs, _not_ready(lfs)))
    return FileSystemEndpoint(fsname=fsname, mgs_nids=nids)


def waiting_for(lfs: dict[str, Any], what: str) -> str:
    """What a volume waits for, as its PVC's Event shows it (the external-provisioner turns
    a retryable CreateVolume error into one): the LustreFileSystem to look at, and why."""
    name = lfs["metadata"]["name"]
    fsname = (lfs.get("spec") or {}).get("fsname")
    also = f" (fsname {fsname})" if fsname and fsname != name else ""
    return f"waiting for LustreFileSystem {name}{also}: {what}"


def _not_ready(lfs: dict[str, Any]) -> str:
    """Why a file system does not serve yet: its phase, and how far its servers are."""
    status = lfs.get("status") or {}
    servers = status.get("servers") or []
    if not status.get("phase") or not servers:
        return "requested; the provisioner has not planned its servers yet"

    def ready(role: str) -> str:
        mine = [s for s in servers if s.get("role") == role]
        return f"{sum(1 for s in mine if s.get('state') == 'Ready')}/{len(mine)}"

    osts = status.get("osts") or []
    active = sum(1 for o in osts if o.get("state") == "Active")
    progress = (f"MDS {ready('mds')} ready, OSS {ready('oss')} ready, "
                f"OSTs {active}/{len(osts)} serving")
    phase = status["phase"]
    if phase == "Degraded":
        detail = _condition(lfs, "Degraded").get("message")
        return f"servers not ready ({progress})" + (f": {detail}" if detail else "")
    stuck = _condition(lfs, "Progressing")
    if stuck.get("reason") == "AddressPoolExhausted":
        return f"cannot place its servers: {stuck.get('message')}"
    return f"{'booting' if phase == 'Creating' else phase.lower()} ({progress})"


def _capacity_of(lfs: dict[str, Any]) -> FileSystemCapacity:
    spec = _parsed(lfs)
    osts = (lfs.get("status") or {}).get("osts") or []
    active = [o for o in osts if o.get("state") == "Active"]
    return FileSystemCapacity(
        total_bytes=sum(int(o["sizeBytes"]) for o in active),
        ost_count=len(active),
        # Every OST planned, the pools' too; maxOsts bounds the default OSTs only.
        max_total_bytes=growth_ceiling_bytes(
            allocated_bytes=sum(int(o["sizeBytes"]) for o in osts),
            default_osts=sum(1 for o in osts if not o.get("pool")),
            max_osts=spec.max_osts, ost_size_bytes=spec.ost_size_bytes,
            max_size_bytes=spec.max_size_bytes,
        ),
    )
