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
"""

from __future__ import annotations

import logging
from typing import Any

from csi.errors import FailedPrecondition, InProgress, NotFound
from csi.lustre.fsname import validate_fsname
from csi.quantity import format_quantity
from csi.server_sets import (
    FileSystemCapacity,
    FileSystemEndpoint,
    ServerSetTemplate,
    check_dedication,
    check_deletable,
    dedication,
)
from provisioner.growth import plan_growth
from provisioner.kubevirt.events import EventRecorder
from provisioner.kubevirt.kube import LUSTRE_FILE_SYSTEMS, ConflictError, Kube
from provisioner.kubevirt.spec import (
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
        for _ in range(_PATCH_ATTEMPTS):
            lfs = self._require(fsname)
            _check_usable(lfs)
            spec = _parsed(lfs)
            status = lfs.get("status") or {}
            planned = status.get("osts") or []
            planned_total = sum(int(o["sizeBytes"]) for o in planned)
            desired = max(spec.ost_count, len(planned))
            # OSTs desired but not yet planned will get today's ostSize.
            desired_total = planned_total + (desired - len(planned)) * spec.ost_size_bytes
            used = int((status.get("capacity") or {}).get("usedBytes") or 0)
            plan = plan_growth(
                fsname=fsname, required_bytes=required_bytes,
                current_total_bytes=desired_total, current_osts=desired,
                ost_size_bytes=spec.ost_size_bytes, threshold=spec.growth_threshold,
                max_osts=spec.max_osts, max_total_bytes=spec.max_size_bytes, used_bytes=used,
            )
            if plan.add:
                try:
                    lfs = self._kube.patch(LUSTRE_FILE_SYSTEMS, lfs["metadata"]["name"], {
                        "metadata": {"resourceVersion": lfs["metadata"]["resourceVersion"]},
                        "spec": {"ostCount": plan.target_osts},
                    })
                except ConflictError:
                    continue
                lfs.setdefault("kind", LUSTRE_FILE_SYSTEMS.kind)
                lfs.setdefault("apiVersion", LUSTRE_FILE_SYSTEMS.api_version)
                self._events.record(lfs, "Normal", "GrowthRequested", (
                    f"{_what_needs_room(required_bytes, plan.sized_for)} need "
                    f"{format_quantity(plan.target_total_bytes)} at the "
                    f"{spec.growth_threshold:.0%} threshold: spec.ostCount {desired} -> "
                    f"{plan.target_osts}"))
            capacity = _capacity_of(lfs)
            if plan.sized_for <= capacity.total_bytes * spec.growth_threshold:
                return capacity
            raise InProgress(waiting_for(lfs, (
                f"growing to hold {_what_needs_room(required_bytes, plan.sized_for)} "
                f"(OSTs {capacity.ost_count}/{max(desired, plan.target_osts)} serving, "
                f"{format_quantity(capacity.total_bytes)} of "
                f"{format_quantity(plan.target_total_bytes)})")))
        raise InProgress(f"waiting for the LustreFileSystem of file system {fsname!r}: it "
                         f"changed {_PATCH_ATTEMPTS} times while this request grew it; retrying")

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
        raise InProgress(f"file system {fsname!r} is being torn down; retry shortly")

    def list_file_systems(self) -> list[str]:
        items = self._kube.list(LUSTRE_FILE_SYSTEMS)[0]
        return sorted(str((i.get("spec") or {}).get("fsname")) for i in items
                      if (i.get("spec") or {}).get("fsname"))

    # -- extras for the controller -----------------------------------------------------------
    def find(self, fsname: str) -> dict[str, Any] | None:
        """The LustreFileSystem whose spec.fsname is `fsname`, or None."""
        lfs = self._kube.get(LUSTRE_FILE_SYSTEMS, object_name(fsname))
        if lfs is not None and (lfs.get("spec") or {}).get("fsname") == fsname:
            return _typed(lfs)
        # Created by hand under another name: the oldest one with this fsname is the real one.
        matches = [i for i in self._kube.list(LUSTRE_FILE_SYSTEMS)[0]
                   if (i.get("spec") or {}).get("fsname") == fsname]
        matches.sort(key=lambda i: (i["metadata"].get("creationTimestamp", ""),
                                    i["metadata"]["name"]))
        return _typed(matches[0]) if matches else None

    # -- internals -----------------------------------------------------------------------------
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
            created = _typed(self._kube.create(LUSTRE_FILE_SYSTEMS, body))
        except ConflictError:
            found = self.find(fsname)
            if found is None:
                raise InProgress(f"file system {fsname!r} is being replaced; retry") from None
            return found
        self._events.record(created, "Normal", "Requested",
                            f"created from StorageClass parameters for file system {fsname!r}")
        return created


def _what_needs_room(required_bytes: int, sized_for: int) -> str:
    volumes = f"{format_quantity(required_bytes)} of volumes"
    if sized_for > required_bytes:
        return f"{format_quantity(sized_for)} measured in use ({volumes})"
    return volumes


def _typed(lfs: dict[str, Any]) -> dict[str, Any]:
    lfs.setdefault("apiVersion", LUSTRE_FILE_SYSTEMS.api_version)
    lfs.setdefault("kind", LUSTRE_FILE_SYSTEMS.kind)
    return lfs


def _dedicated_to(lfs: dict[str, Any]) -> str:
    """The volume id in spec.dedicatedTo ('' for a shared file system)."""
    return str((lfs.get("spec") or {}).get("dedicatedTo") or "")


def _condition(lfs: dict[str, Any], kind: str) -> dict[str, Any]:
    conditions = (lfs.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == kind), {})


def _parsed(lfs: dict[str, Any]) -> Any:
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
    planned_total = sum(int(o["sizeBytes"]) for o in osts)
    ceiling = planned_total + max(0, spec.max_osts - len(osts)) * spec.ost_size_bytes
    if spec.max_size_bytes is not None:
        ceiling = min(ceiling, spec.max_size_bytes)
    return FileSystemCapacity(
        total_bytes=sum(int(o["sizeBytes"]) for o in active),
        ost_count=len(active),
        max_total_bytes=ceiling,
    )
