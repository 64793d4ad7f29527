"""Level-based reconciliation of one LustreFileSystem into KubeVirt VMs, PVCs and Secrets.

`Reconciler.reconcile(name)` reads the desired state (spec) and the actual state (status,
child objects, VM status, launcher pods, nodes) and takes the steps that close the gap. The
only thing it keeps in memory between calls is what it has itself seen of nodes' readiness
(step 6); everything else is read again, so a provisioner killed at any point and restarted
(or a new leader) continues where the last one stopped:

1. finalizer: added before anything is created, so deletion always passes through step 7;
2. spec: parsed and validated; a bad spec sets phase Failed with a message naming the field;
3. layout: servers, their static addresses and the OST table are *planned* and written to
   status (optimistic concurrency on resourceVersion) before any object is created. Each
   address is first claimed in the one claims object (a ConfigMap in the driver's namespace,
   written with resourceVersion guards, see claims.py), so no two file systems, planned by
   two leaders at once or not, get one address. A crash after the status write leaves a plan
   the next pass builds; a crash before it leaves at most claims the next pass reuses;
4. children: missing PVCs, cloud-init Secrets and VMs are created (AlreadyExists is success);
   a VM whose desired spec changed (a hotplugged OST) is patched;
5. observation: VM readiness, the VMI's storage-interface address (must be the recorded one),
   hotplug volume status; the OST table, capacity, MGS NIDs, phase and conditions follow
   (derived by status.py, a pure function, as is every other status this module writes:
   a new plan's, a bad spec's, a refused deletion's; `_report` writes them);
6. recovery (fencing.py): a launcher pod is force-deleted, so KubeVirt starts the VM
   elsewhere with the same PVCs, MAC and address, only on evidence that its node is down (the
   out-of-service taint, or this provisioner's own unbroken observation of it down for
   `fence_after_seconds`), never on the Node's lastTransitionTime;
7. deletion: refused while PersistentVolumes of this driver still name the file system
   (condition DeletionBlocked) unless spec.forceDelete; otherwise VMs, PVCs and Secrets are
   deleted, the address claims released and the finalizer removed.

Destructive steps (fencing, deleting children, releasing addresses) first confirm with the
`guard` that this process still holds the provisioner Lease (leader.py), immediately before
they are taken.

Every action is an Event on the LustreFileSystem; every state is in its status. The return
value is how long until the object should be looked at again regardless of watch events
(None: only on events and the periodic resync).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from csi.metrics import ProvisionerMetrics
from provisioner.kubevirt import manifests
from provisioner.kubevirt.addresses import AddressClaimStore
from provisioner.kubevirt.capacity import FileSystemUsage
from provisioner.kubevirt.claims import claim_plan, release_claims
from provisioner.kubevirt.events import EventRecorder, now_rfc3339
from provisioner.kubevirt.fencing import Fencing
from provisioner.kubevirt.in_use import volumes_using
from provisioner.kubevirt.kube import (
    LUSTRE_FILE_SYSTEMS,
    PVCS,
    PVS,
    SECRETS,
    VIRTUAL_MACHINE_INSTANCES,
    VIRTUAL_MACHINES,
    ConflictError,
    Kube,
)
from provisioner.kubevirt.layout import Layout, read_layout
from provisioner.kubevirt.leader import LeadershipGuard
from provisioner.kubevirt.spec import FileSystemSpec, SpecError, parse_spec
from provisioner.kubevirt.status import (
    DerivedStatus,
    Observed,
    StatusEvent,
    deletion_blocked_status,
    derive_status,
    failed_status,
    planned_status,
)

log = logging.getLogger(__name__)

FINALIZER = "lustre.csi.io/server-set"
SPEC_HASH = "lustre.csi.io/spec-hash"


@dataclass(frozen=True)
class ReconcilerConfig:
    namespace: str = "lustre-csi"  # where the server VMs, PVCs, Secrets and pods live
    claims_namespace: str = "lustre-csi"  # the driver's: the address claims object
    driver_name: str = "lustre.csi.io"
    fence_after_seconds: float = 300.0
    deletion_retry_seconds: float = 10.0


class Reconciler:
    """See the module docstring.

    `usage`: the latest measured use of a LustreFileSystem by name (capacity.UsageMeter), or
    None; `metrics`: where provisioning durations and growth steps are counted.
    """

    def __init__(self, kube: Kube, config: ReconcilerConfig, events: EventRecorder,
                 monotonic: Callable[[], float] = time.monotonic,
                 guard: LeadershipGuard | None = None,
                 usage: Callable[[str], FileSystemUsage | None] | None = None,
                 metrics: ProvisionerMetrics | None = None) -> None:
        self._kube = kube
        self._config = config
        self._events = events
        self._guard = guard
        self._usage = usage or (lambda name: None)
        self._metrics = metrics or ProvisionerMetrics()
        self._claims = AddressClaimStore(kube, config.claims_namespace)
        self._fencing = Fencing(kube, config.namespace, _CountedFencing(events, self._metrics),
                                fence_after_seconds=config.fence_after_seconds,
                                confirm=self._confirm, monotonic=monotonic)

    # -- entry point --------------------------------------------------------------------------
    def reconcile(self, name: str) -> float | None:
        lfs = self._kube.get(LUSTRE_FILE_SYSTEMS, name)
        if lfs is None:
            return None
        lfs = LUSTRE_FILE_SYSTEMS.typed(lfs)
        if lfs["metadata"].get("deletionTimestamp"):
            return self._finalize(lfs)
        if FINALIZER not in (lfs["metadata"].get("finalizers") or []):
            lfs = self._patch_meta(lfs, {"finalizers": [
                *(lfs["metadata"].get("finalizers") or []), FINALIZER]})
        try:
            spec = parse_spec(lfs.get("spec") or {}, lfs["metadata"]["name"])
        except SpecError as error:
            self._fail(lfs, "InvalidSpec", str(error))
            return None
        others = [o for o in self._kube.list(LUSTRE_FILE_SYSTEMS)[0]
                  if o["metadata"]["name"] != name]
        rival = _older_with_fsname(lfs, spec.fsname, others)
        if rival is not None:
            self._fail(lfs, "FsnameConflict", (
                f"spec.fsname: {spec.fsname!r} is already used by LustreFileSystem {rival!r}; "
                "fsnames must be unique in the cluster"))
            return None

        layout = read_layout(lfs.get("status"))
        claimed = claim_plan(self._claims, name, spec, layout, others)
        if claimed is None:
            return 0.0  # the claims kept changing under us: look again at once
        planned, conflicts = claimed
        if (planned.servers, planned.osts) != (layout.servers, layout.osts):
            lfs = self._record_plan(lfs, spec, layout, planned)
            if lfs is None:
                return 0.0  # status changed under us: look again at once
        self._ensure_children(lfs, spec, planned)
        return self._observe(lfs, spec, planned, conflicts)

    def _confirm(self, action: str) -> None:
        if self._guard is not None:
            self._guard.confirm(action)

    # -- step 3: the plan ----------------------------------------------------------------------
    def _record_plan(self, lfs: dict[str, Any], spec: FileSystemSpec, old: Layout,
                     new: Layout) -> dict[str, Any] | None:
        derived = planned_status(lfs, spec, old, new)
        try:
            updated = self._patch_status(lfs, derived.status)
        except ConflictError:
            return None
        self._record(lfs, derived.events)  # only once written: a conflict plans it again
        if old.osts and any(o not in old.osts for o in new.osts):
            self._metrics.growth.inc(spec.fsname)
        return updated

    # -- step 4: the objects -------------------------------------------------------------------
    def _ensure_children(self, lfs: dict[str, Any], spec: FileSystemSpec,
                         layout: Layout) -> None:
        namespace = self._config.namespace
        fs = lfs["metadata"]["name"]
        selector = manifests.fs_selector(fs)
        created: list[str] = []
        existing_pvcs = {p["metadata"]["name"] for p in self._kube.list(
            PVCS, namespace, selector)[0]}
        for pvc in manifests.server_pvcs(lfs, spec, layout, namespace):
            if pvc["metadata"]["name"] not in existing_pvcs:
                self._create(PVCS, pvc, created)
        if layout.mds is None:
            return
        for server in layout.servers:
            self._ensure_secret(manifests.cloudinit_secret(lfs, spec, layout, server, namespace),
                                created, lfs)
        existing_vms = {v["metadata"]["name"]: v for v in self._kube.list(
            VIRTUAL_MACHINES, namespace, selector)[0]}
        for server in layout.servers:
            desired = manifests.virtual_machine(lfs, spec, layout, server, namespace)
            digest = _digest(desired["spec"])
            desired["metadata"]["annotations"] = {SPEC_HASH: digest}
            current = existing_vms.get(desired["metadata"]["name"])
            if current is None:
                self._create(VIRTUAL_MACHINES, desired, created)
            elif (current["metadata"].get("annotations") or {}).get(SPEC_HASH) != digest:
                # Merge patch: our lists (disks, volumes, interfaces) are replaced whole,
                # fields defaulted by KubeVirt's webhooks in maps are kept.
                self._kube.patch(VIRTUAL_MACHINES, desired["metadata"]["name"], {
                    "metadata": {"annotations": {SPEC_HASH: digest}},
                    "spec": desired["spec"],
                }, namespace)
                self._events.record(lfs, "Normal", "UpdatedVM", (
                    f"updated VirtualMachine {desired['metadata']['name']}: "
                    f"targets {', '.join(_targets_of(desired))}"))
        if created:
            self._events.record(lfs, "Normal", "Created", "created " + ", ".join(created))

    def _create(self, resource: Any, body: dict[str, Any], created: list[str]) -> None:
        try:
            self._kube.create(resource, body, self._config.namespace)
        except ConflictError:
            return  # made by an earlier pass that crashed before recording it: fine
        created.append(f"{resource.kind} {body['metadata']['name']}")

    def _ensure_secret(self, desired: dict[str, Any], created: list[str],
                       lfs: dict[str, Any]) -> None:
        name = desired["metadata"]["name"]
        current = self._kube.get(SECRETS, name, self._config.namespace)
        if current is None:
            self._create(SECRETS, desired, created)
            return
        data = {k: base64.b64decode(v).decode() for k, v in (current.get("data") or {}).items()}
        if data != desired["stringData"]:
            self._kube.patch(SECRETS, name, {"stringData": desired["stringData"]},
                             self._config.namespace)
            self._events.record(lfs, "Normal", "UpdatedCloudInit", (
                f"updated Secret {name}; the VM reads it at its next boot"))

    # -- steps 5 and 6: observe, recover, report ------------------------------------------------
    def _observe(self, lfs: dict[str, Any], spec: FileSystemSpec, layout: Layout,
                 conflicts: list[str]) -> float | None:
        """Steps 5 and 6: fence what must be, then derive the status and write it."""
        namespace = self._config.namespace
        fs = lfs["metadata"]["name"]
        selector = manifests.fs_selector(fs)
        fence_notes, requeue = self._fencing.fence(lfs, fs, layout)
        observed = Observed(
            vms={v["metadata"]["name"]: v
                 for v in self._kube.list(VIRTUAL_MACHINES, namespace, selector)[0]},
            vmis={v["metadata"]["name"]: v
                  for v in self._kube.list(VIRTUAL_MACHINE_INSTANCES, namespace, selector)[0]},
            conflicts=conflicts,
            fence_notes=fence_notes,
            usage=self._usage(fs),
        )
        derived = derive_status(lfs, spec, layout, observed, now=now_rfc3339())
        self._report(lfs, derived)
        for duration in derived.durations:  # only once written: a conflict derives it again
            self._metrics.provisioning_seconds.observe(duration.seconds, duration.operation)
        return requeue

    # -- step 7: deletion -------------------------------------------------------------------
    def _finalize(self, lfs: dict[str, Any]) -> float | None:
        finalizers = lfs["metadata"].get("finalizers") or []
        if FINALIZER not in finalizers:
            return None
        spec = lfs.get("spec") or {}
        fsname = str(spec.get("fsname", ""))
        users = self.volumes_using(fsname)
        if users and not spec.get("forceDelete"):
            self._report(lfs, deletion_blocked_status(lfs, fsname, users, now=now_rfc3339()))
            return self._config.deletion_retry_seconds
        namespace = self._config.namespace
        fs = lfs["metadata"]["name"]
        selector = manifests.fs_selector(fs)
        removed: list[str] = []
        self._confirm(f"delete the servers, disks and cloud-init Secrets of {fs}")
        for resource in (VIRTUAL_MACHINES, PVCS):
            for item in self._kube.list(resource, namespace, selector)[0]:
                if self._kube.delete(resource, item["metadata"]["name"], namespace):
                    removed.append(f"{resource.kind} {item['metadata']['name']}")
        for server in read_layout(lfs.get("status")).servers:
            if self._kube.delete(SECRETS, manifests.secret_name(fs, server.name), namespace):
                removed.append(f"Secret {manifests.secret_name(fs, server.name)}")
        if removed:
            note = " (forced while volumes use it)" if users else ""
            self._events.record(lfs, "Normal", "Deleting", f"deleted{note}: " + ", ".join(removed))
        if self._kube.list(VIRTUAL_MACHINES, namespace, selector)[0]:
            return 1.0  # VMs still shutting down (KubeVirt finalizers): wait for them
        # Only now: a VM still running still uses its address.
        release_claims(self._claims, fs, self._confirm)
        try:
            self._patch_meta(lfs, {"finalizers": [f for f in finalizers if f != FINALIZER]})
        except ConflictError:
            return 0.0
        log.info("LustreFileSystem %s: servers removed, finalizer released", fs)
        return None

    def volumes_using(self, fsname: str) -> list[str]:
        """Names of this driver's PersistentVolumes that still use `fsname`."""
        return volumes_using(self._kube.list(PVS)[0], self._config.driver_name, fsname)

    # -- helpers -------------------------------------------------------------------------------
    def _patch_meta(self, lfs: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
        return LUSTRE_FILE_SYSTEMS.typed(self._kube.patch(
            LUSTRE_FILE_SYSTEMS, lfs["metadata"]["name"],
            {"metadata": {**changes, "resourceVersion": lfs["metadata"]["resourceVersion"]}}))

    def _patch_status(self, lfs: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        """Merges `status` into the object's, unless it changed since `lfs` was read."""
        return LUSTRE_FILE_SYSTEMS.typed(self._kube.patch(
            LUSTRE_FILE_SYSTEMS, lfs["metadata"]["name"],
            {"metadata": {"resourceVersion": lfs["metadata"]["resourceVersion"]},
             "status": status},
            subresource="status"))

    def _fail(self, lfs: dict[str, Any], reason: str, message: str) -> None:
        self._report(lfs, failed_status(lfs, reason, message, now=now_rfc3339()))

    def _record(self, lfs: dict[str, Any], events: list[StatusEvent]) -> None:
        for event in events:
            self._events.record(lfs, event.type, event.reason, event.message)

    def _report(self, lfs: dict[str, Any], derived: DerivedStatus) -> None:
        """Records a derived status's Events and writes the status, unless it is unchanged."""
        self._record(lfs, derived.events)
        previous = lfs.get("status") or {}
        if {**previous, **derived.status} == previous:
            return
        try:
            self._patch_status(lfs, derived.status)
        except ConflictError:
            log.info("LustreFileSystem %s changed while reconciling; will look again",
                     lfs["metadata"]["name"])
            raise


class _CountedFencing(EventRecorder):
    """The Events fencing records, passed on to `inner`; each `Fenced` one is counted."""

    def __init__(self, inner: EventRecorder, metrics: ProvisionerMetrics) -> None:
        # Nothing of the base's own: every Event goes through `inner`.
        self._inner = inner
        self._metrics = metrics

    def record(self, obj: dict[str, Any], event_type: str, reason: str, message: str) -> None:
        self._inner.record(obj, event_type, reason, message)
        if reason == "Fenced":
            self._metrics.fencing.inc(str((obj.get("spec") or {}).get("fsname", "")))


def _older_with_fsname(lfs: dict[str, Any], fsname: str,
                       others: list[dict[str, Any]]) -> str | None:
    mine = (lfs["metadata"].get("creationTimestamp", ""), lfs["metadata"]["name"])
    for other in others:
        if (other.get("spec") or {}).get("fsname") != fsname:
            continue
        theirs = (other["metadata"].get("creationTimestamp", ""), other["metadata"]["name"])
        if theirs < mine:
            return str(other["metadata"]["name"])
    return None


def _digest(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def _targets_of(vm: dict[str, Any]) -> list[str]:
    disks = vm["spec"]["template"]["spec"]["domain"]["devices"]["disks"]
    return [d["serial"] for d in disks if d.get("serial")]
