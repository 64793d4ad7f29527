"""The status of a LustreFileSystem, derived from what is desired and what is observed.

Pure: `derive_status(lfs, spec, layout, observed, now=...)` reads the spec, the planned
layout, the VMs and VMIs seen and the previous status, and answers the new status and the
Events that go with it; the reconciler writes both. Servers and OSTs follow one state
machine each, of the same shape: up (Ready / Active), down after having been up (NotReady /
Unavailable), or not up yet (Starting / Pending).

The reconciler's other status writes are derived here too: `planned_status` (a new plan,
before any object is made), `failed_status` (a spec refused) and `deletion_blocked_status`
(a deletion refused while volumes use the file system).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from csi.quantity import format_quantity
from provisioner.kubevirt import manifests
from provisioner.kubevirt.capacity import FileSystemUsage
from provisioner.kubevirt.layout import MDS, Layout, ServerRecord, layout_status
from provisioner.kubevirt.spec import FileSystemSpec

CONDITION_TYPES = ("Ready", "Progressing", "Degraded", "DeletionBlocked")


@dataclass(frozen=True)
class Observed:
    """What the reconciler saw of one file system's servers, by VM name."""

    vms: dict[str, dict[str, Any]] = field(default_factory=dict)
    vmis: dict[str, dict[str, Any]] = field(default_factory=dict)
    conflicts: list[str] = field(default_factory=list)  # addresses others hold the claim of
    fence_notes: list[str] = field(default_factory=list)
    usage: FileSystemUsage | None = None  # the latest `lfs df`, when one was taken


@dataclass(frozen=True)
class StatusEvent:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Duration:
    """How long one provisioning operation took ("create" or "grow"), for the histogram."""

    operation: str
    seconds: float


@dataclass(frozen=True)
class DerivedStatus:
    status: dict[str, Any]
    events: list[StatusEvent]
    durations: list[Duration] = field(default_factory=list)


@dataclass(frozen=True)
class _Lifecycle:
    """One state machine: `up`, `down` once it has been up, else `not_yet`."""

    up: str
    down: str
    not_yet: str

    def next(self, is_up: bool, before: str) -> str:
        if is_up:
            return self.up
        return self.down if before in (self.up, self.down) else self.not_yet


SERVER_STATES = _Lifecycle(up="Ready", down="NotReady", not_yet="Starting")
OST_STATES = _Lifecycle(up="Active", down="Unavailable", not_yet="Pending")


def derive_status(lfs: dict[str, Any], spec: FileSystemSpec, layout: Layout,
                  observed: Observed, *, now: str) -> DerivedStatus:
    """The new status and its Events; `now` stamps conditions whose status changes."""
    fs = lfs["metadata"]["name"]
    previous = lfs.get("status") or {}
    prev_servers = {s["name"]: s for s in previous.get("servers") or []}
    prev_osts = {int(o["index"]): o for o in previous.get("osts") or []}
    planned_rows = layout_status(layout, spec)
    events: list[StatusEvent] = []

    servers_status: list[dict[str, Any]] = []
    ready: dict[str, bool] = {}
    problems: list[str] = list(observed.conflicts)
    recovered: list[str] = []
    lost: list[str] = []
    for record, row in zip(layout.servers, planned_rows["servers"], strict=True):
        name = manifests.vm_name(fs, record.name)
        vm, vmi = observed.vms.get(name), observed.vmis.get(name)
        is_ready = bool(vm and (vm.get("status") or {}).get("ready"))
        node = ((vmi or {}).get("status") or {}).get("nodeName", "")
        address_problem = _address_problem(record, vmi)
        if address_problem:
            problems.append(address_problem)
            is_ready = False
        before = prev_servers.get(record.name, {}).get("state", "")
        state = SERVER_STATES.next(is_ready, before)
        if state == SERVER_STATES.up and before == SERVER_STATES.down:
            recovered.append(f"{record.name} ({name}) on node {node or '?'}")
        if state == SERVER_STATES.down and before == SERVER_STATES.up:
            lost.append(f"{record.name} ({name})")
        ready[record.name] = is_ready
        servers_status.append({**row, "vm": name, "ready": is_ready, "node": node,
                               "state": state})

    osts_status = []
    for ost, row in zip(layout.osts, planned_rows["osts"], strict=True):
        vmi = observed.vmis.get(manifests.vm_name(fs, ost.oss))
        attached = not ost.hotplug or _hotplug_ready(vmi, ost.label.lower())
        before = prev_osts.get(ost.index, {}).get("state", "")
        state = OST_STATES.next(bool(ready.get(ost.oss)) and attached, before)
        osts_status.append({**row, "pvc": manifests.pvc_name(fs, ost.label), "state": state,
                            **_ost_usage(observed.usage, ost.index, prev_osts.get(ost.index))})

    active = [o for o in osts_status if o["state"] == "Active"]
    total = sum(int(o["sizeBytes"]) for o in active)
    planned_total = sum(int(o["sizeBytes"]) for o in osts_status)
    not_ready = [s for s in servers_status if s["state"] == "NotReady"]
    starting = [s for s in servers_status if s["state"] == "Starting"]
    pending = [o for o in osts_status if o["state"] != "Active"]
    mds_ready = ready.get(MDS, False)
    generation = lfs["metadata"].get("generation", 0)

    if not_ready or problems:
        phase = "Degraded"
    elif not mds_ready or not active:
        phase = "Creating"
    elif starting or pending or len(layout.osts) < spec.ost_count:
        phase = "Growing"
    else:
        phase = "Ready"
    usable = mds_ready and bool(active) and not not_ready and not problems
    conditions = {
        "Ready": condition(
            "Ready", usable,
            "Serving" if usable else ("ServersNotReady" if not_ready or problems
                                      else "Creating"),
            (f"MGS at {spec.nid(layout.mds.address)}; {len(active)} of "
             f"{len(layout.osts)} OSTs serving") if usable and layout.mds else
            _waiting_message(servers_status, osts_status, problems)),
        "Progressing": condition(
            "Progressing", bool(starting or pending or layout.problems
                                or len(layout.osts) < spec.ost_count),
            "AddressPoolExhausted" if layout.problems else
            ("Provisioning" if starting or pending else "Converged"),
            "; ".join(layout.problems) if layout.problems else
            (f"waiting for {', '.join(s['name'] for s in starting) or 'no server'} to start "
             f"and {len(pending)} OST(s) to serve" if starting or pending
             else "all planned servers and OSTs are serving")),
        "Degraded": condition(
            "Degraded", bool(not_ready or problems),
            "ServersNotReady" if not_ready or problems else "AllServersReady",
            "; ".join([*(f"{s['name']} ({s['vm']}) is not ready"
                         + (f" on node {s['node']}" if s["node"] else "")
                         for s in not_ready), *problems, *observed.fence_notes])
            or "every server is ready"),
    }
    if lost:
        events.append(StatusEvent("Warning", "ServerNotReady", "not ready: " + ", ".join(lost)))
    if recovered:
        events.append(StatusEvent("Normal", "ServerRecovered",
                                  "ready again: " + ", ".join(recovered)))
    for problem in problems:
        if problem not in json.dumps(previous.get("conditions") or []):
            events.append(StatusEvent("Warning", "AddressMismatch", problem))
    status = {
        "phase": phase,
        "observedGeneration": generation,
        "desiredOsts": spec.ost_count,
        "readyOsts": len(active),
        "nextOstIndex": layout.next_ost_index,
        "mgsNids": [spec.nid(layout.mds.address)] if layout.mds else [],
        "servers": servers_status,
        "osts": osts_status,
        "capacity": {**(previous.get("capacity") or {}),
                     "total": format_quantity(total), "totalBytes": total,
                     "planned": format_quantity(planned_total),
                     "plannedBytes": planned_total,
                     **_measured(observed.usage)},
        "conditions": merge_conditions(previous.get("conditions") or [], conditions,
                                       generation, now=now),
    }
    durations = []
    if phase == "Ready" and previous.get("phase") != "Ready":
        durations = _durations(lfs, previous, now)
    if phase == "Ready" or previous.get("firstReadyTime"):
        status["firstReadyTime"] = previous.get("firstReadyTime") or now
    if previous.get("phase") != phase:
        events.append(StatusEvent(
            "Warning" if phase == "Degraded" else "Normal", f"Phase{phase}",
            f"phase {previous.get('phase') or 'none'} -> {phase}: "
            f"{conditions['Ready']['message']}"))
    return DerivedStatus(status, events, durations)


def planned_status(lfs: dict[str, Any], spec: FileSystemSpec, old: Layout,
                   new: Layout) -> DerivedStatus:
    """The status that records plan `new` (replacing `old`), and a Planned Event naming what
    it adds; the phase is Growing for a file system that was serving, else as it was."""
    before = (lfs.get("status") or {}).get("phase")
    phase = "Growing" if before in ("Ready", "Growing") else (before or "Creating")
    parts = [f"{s.name} at {s.address} ({s.mac})" for s in new.servers if s not in old.servers]
    parts += [f"{o.label} ({format_quantity(o.size_bytes)}) on {o.oss}"
              + (" as a hotplugged disk" if o.hotplug else "")
              for o in new.osts if o not in old.osts]
    events = [StatusEvent("Normal", "Planned", "allocated " + "; ".join(parts))] if parts else []
    return DerivedStatus({**layout_status(new, spec), "phase": phase,
                          "desiredOsts": spec.ost_count}, events)


def failed_status(lfs: dict[str, Any], reason: str, message: str, *,
                  now: str) -> DerivedStatus:
    """Phase Failed for a spec that cannot be served; the Warning only when the message is new."""
    previous = lfs.get("status") or {}
    generation = lfs["metadata"].get("generation", 0)
    reported = find_condition(previous.get("conditions"), "Ready").get("message")
    events = [] if reported == message else [StatusEvent("Warning", reason, message)]
    return DerivedStatus({
        **previous, "phase": "Failed", "observedGeneration": generation,
        "conditions": merge_conditions(previous.get("conditions") or [], {
            "Ready": condition("Ready", False, reason, message),
            "Progressing": condition("Progressing", False, reason,
                                     "fix the spec; nothing is created until then"),
        }, generation, now=now),
    }, events)


def deletion_blocked_status(lfs: dict[str, Any], fsname: str, users: list[str], *,
                            now: str) -> DerivedStatus:
    """Phase Deleting with DeletionBlocked: `users`, the PersistentVolumes that still use
    `fsname`, are named (the first five); the Warning only when the message is new."""
    previous = lfs.get("status") or {}
    generation = lfs["metadata"].get("generation", 0)
    shown = ", ".join(users[:5]) + (f" and {len(users) - 5} more" if len(users) > 5 else "")
    message = (f"deletion refused: {len(users)} PersistentVolume(s) still use file "
               f"system {fsname!r} ({shown}); delete them first, or set "
               "spec.forceDelete: true to delete the file system and their data")
    reported = find_condition(previous.get("conditions"), "DeletionBlocked").get("message")
    events = [] if reported == message else [StatusEvent("Warning", "DeletionBlocked", message)]
    return DerivedStatus({
        **previous, "phase": "Deleting", "volumesInUse": len(users),
        "conditions": merge_conditions(previous.get("conditions") or [], {
            "DeletionBlocked": condition("DeletionBlocked", True, "VolumesInUse", message),
        }, generation, now=now),
    }, events)


def _measured(usage: FileSystemUsage | None) -> dict[str, Any]:
    """status.capacity's measured figures (kept from before when nothing new was measured)."""
    if usage is None:
        return {}
    return {"used": format_quantity(usage.used_bytes), "usedBytes": usage.used_bytes,
            "available": format_quantity(usage.available_bytes),
            "availableBytes": usage.available_bytes,
            "inodesUsed": usage.inodes_used, "inodesFree": usage.inodes_free,
            "measuredAt": usage.measured_at}


_OST_USAGE_KEYS = ("usedBytes", "availableBytes", "inodesUsed", "inodesFree")


def _ost_usage(usage: FileSystemUsage | None, index: int,
               previous: dict[str, Any] | None) -> dict[str, Any]:
    """One OST row's measured figures: from this measurement, else as reported before."""
    if usage is None:
        before = previous or {}
        return {key: before[key] for key in _OST_USAGE_KEYS if key in before}
    ost = usage.ost(index)
    if ost is None or not ost.active:
        return {}  # not in lfs df yet, or inactive: no figures rather than stale ones
    return {"usedBytes": ost.used_bytes, "availableBytes": ost.available_bytes,
            "inodesUsed": ost.inodes_used, "inodesFree": ost.inodes_free}


def _durations(lfs: dict[str, Any], previous: dict[str, Any], now: str) -> list[Duration]:
    """Provisioning just finished: the first Ready (create) or the end of a growth (grow).

    A create counts from the object's creation; a growth from when Progressing turned True.
    Both come from the API server's records, so a leader change in between loses nothing.
    A recovery (Degraded -> Ready) is neither.
    """
    if not previous.get("firstReadyTime"):
        operation, since = "create", lfs["metadata"].get("creationTimestamp")
    elif previous.get("phase") == "Growing":
        progressing = find_condition(previous.get("conditions"), "Progressing")
        operation, since = "grow", progressing.get("lastTransitionTime")
    else:
        return []
    seconds = _seconds_between(since, now)
    return [] if seconds is None else [Duration(operation, seconds)]


def _seconds_between(start: str | None, end: str) -> float | None:
    try:
        began = datetime.fromisoformat(str(start).replace("Z", "+00:00"))
        ended = datetime.fromisoformat(end.replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, (ended - began).total_seconds())


def find_condition(conditions: list[dict[str, Any]] | None, kind: str) -> dict[str, Any]:
    return next((c for c in conditions or [] if c.get("type") == kind), {})


def condition(kind: str, status: bool, reason: str, message: str) -> dict[str, Any]:
    return {"type": kind, "status": "True" if status else "False", "reason": reason,
            "message": message}


def merge_conditions(old: list[dict[str, Any]], new: dict[str, dict[str, Any]],
                     generation: int, *, now: str) -> list[dict[str, Any]]:
    """Conditions with `new` applied; lastTransitionTime moves only when the status does."""
    result = []
    seen = set()
    for existing in old:
        kind = existing.get("type")
        seen.add(kind)
        if kind not in new:
            result.append(existing)
            continue
        update = {**new[kind], "observedGeneration": generation}
        same = existing.get("status") == update["status"]
        update["lastTransitionTime"] = (existing.get("lastTransitionTime") if same
                                        else now) or now
        result.append(update)
    for kind, added in new.items():
        if kind not in seen:
            result.append({**added, "observedGeneration": generation,
                           "lastTransitionTime": now})
    order = {kind: n for n, kind in enumerate(CONDITION_TYPES)}
    return sorted(result, key=lambda c: order.get(c.get("type", ""), 99))


def _address_problem(record: ServerRecord, vmi: dict[str, Any] | None) -> str:
    """A message when the running VMI reports a storage address other than the recorded one."""
    if vmi is None:
        return ""
    for interface in (vmi.get("status") or {}).get("interfaces") or []:
        if interface.get("name") != "storage":
            continue
        reported = set(interface.get("ipAddresses") or []) | {interface.get("ipAddress")}
        reported.discard(None)
        reported.discard("")
        if reported and record.address not in reported:
            return (f"{record.name} reports storage address {', '.join(sorted(reported))} but "
                    f"its NID is {record.address}; check the cloud-init network data")
    return ""


def _hotplug_ready(vmi: dict[str, Any] | None, volume: str) -> bool:
    for entry in ((vmi or {}).get("status") or {}).get("volumeStatus") or []:
        if entry.get("name") == volume:
            return entry.get("phase") == "Ready"
    return False


def _waiting_message(servers: list[dict[str, Any]], osts: list[dict[str, Any]],
                     problems: list[str]) -> str:
    parts = [f"{s['name']} {s['state'].lower()}" for s in servers if s["state"] != "Ready"]
    waiting = [o["label"] for o in osts if o["state"] != "Active"]
    if waiting:
        parts.append(f"OSTs not serving: {', '.join(waiting)}")
    return "; ".join([*problems, *parts]) or "waiting for the servers to be planned"
