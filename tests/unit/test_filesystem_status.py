"""The LustreFileSystem status derived from spec, layout and observed VMs (no API server),
and the status of a new plan, a refused spec and a refused deletion."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from provisioner.kubevirt.capacity import FileSystemUsage, OstUsage
from provisioner.kubevirt.layout import Layout, extend_layout, read_layout
from provisioner.kubevirt.spec import parse_spec
from provisioner.kubevirt.status import (
    Observed,
    deletion_blocked_status,
    derive_status,
    failed_status,
    planned_status,
)

NOW = "2026-12-01T00:00:00Z"
SPEC = parse_spec({"fsname": "scratch", "mdtSize": "1Gi", "ostSize": "1Gi", "minOsts": 2,
                   "maxOsts": 4, "server": {"image": "img"},
                   "network": {"attachment": "n", "ipPool": "10.0.0.0/29"}}, "scr")


def _lfs(status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": "scr", "generation": 3}, "status": status or {}}


def _layout() -> Layout:
    return extend_layout(read_layout(None), SPEC, ())


def _vm(ready: bool) -> dict[str, Any]:
    return {"status": {"ready": ready}}


def _all_up(layout: Layout) -> Observed:
    names = [f"scr-{s.name}" for s in layout.servers]
    return Observed(vms={n: _vm(True) for n in names},
                    vmis={n: {"status": {"nodeName": "w1"}} for n in names})


def _conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


def test_nothing_running_yet_is_creating_and_not_ready() -> None:
    derived = derive_status(_lfs(), SPEC, _layout(), Observed(), now=NOW)
    status = derived.status
    assert status["phase"] == "Creating"
    assert {s["state"] for s in status["servers"]} == {"Starting"}
    assert {o["state"] for o in status["osts"]} == {"Pending"}
    assert status["capacity"]["totalBytes"] == 0
    assert _conditions(status)["Ready"]["status"] == "False"
    assert [e.reason for e in derived.events] == ["PhaseCreating"]


def test_every_server_ready_serves_every_ost_with_the_mgs_nid() -> None:
    layout = _layout()
    status = derive_status(_lfs(), SPEC, layout, _all_up(layout), now=NOW).status
    assert status["phase"] == "Ready"
    assert status["readyOsts"] == len(layout.osts) == 2
    assert status["capacity"]["totalBytes"] == 2 << 30
    assert status["mgsNids"] == [SPEC.nid(layout.mds.address)]
    ready = _conditions(status)["Ready"]
    assert (ready["status"], ready["reason"], ready["lastTransitionTime"]) == ("True", "Serving",
                                                                                 NOW)


def test_a_server_that_was_ready_and_is_not_makes_it_degraded_with_events_both_ways() -> None:
    layout = _layout()
    ready = derive_status(_lfs(), SPEC, layout, _all_up(layout), now=NOW).status
    oss = next(s for s in layout.servers if s.name != "mds0")
    down = Observed(vms={**_all_up(layout).vms, f"scr-{oss.name}": _vm(False)})
    lost = derive_status(_lfs(ready), SPEC, layout, down, now="later")
    assert lost.status["phase"] == "Degraded"
    assert {s["name"]: s["state"] for s in lost.status["servers"]}[oss.name] == "NotReady"
    assert {o["state"] for o in lost.status["osts"]} == {"Unavailable"}
    assert [e.reason for e in lost.events] == ["ServerNotReady", "PhaseDegraded"]
    # Ready stays False -> only its message moves; the transition time is the one of the change.
    assert _conditions(lost.status)["Ready"]["lastTransitionTime"] == "later"
    back = derive_status(_lfs(lost.status), SPEC, layout, _all_up(layout), now="again")
    assert back.status["phase"] == "Ready"
    assert [e.reason for e in back.events] == ["ServerRecovered", "PhaseReady"]


def test_a_storage_address_other_than_the_recorded_nid_is_a_problem_reported_once() -> None:
    layout = _layout()
    observed = _all_up(layout)
    mds = f"scr-{layout.mds.name}"
    observed.vmis[mds] = {"status": {"interfaces": [
        {"name": "storage", "ipAddress": "192.0.2.9"}]}}
    first = derive_status(_lfs(), SPEC, layout, observed, now=NOW)
    assert first.status["phase"] == "Degraded"
    assert "AddressMismatch" in [e.reason for e in first.events]
    again = derive_status(_lfs(first.status), SPEC, layout, observed, now=NOW)
    assert "AddressMismatch" not in [e.reason for e in again.events]


def test_conflicts_and_fence_notes_show_in_the_degraded_condition() -> None:
    layout = _layout()
    observed = Observed(vms=_all_up(layout).vms, conflicts=["10.0.0.1 is claimed by other"],
                        fence_notes=["oss0 fenced off node w1"])
    degraded = _conditions(derive_status(_lfs(), SPEC, layout, observed, now=NOW).status)
    assert degraded["Degraded"]["status"] == "True"
    assert "10.0.0.1 is claimed by other" in degraded["Degraded"]["message"]
    assert "oss0 fenced off node w1" in degraded["Degraded"]["message"]


def _usage(*osts: OstUsage) -> FileSystemUsage:
    return FileSystemUsage(used_bytes=3 << 20, available_bytes=5 << 30, inodes_used=40,
                           inodes_free=900, osts=osts, measured_at=NOW)


def test_measured_use_is_written_per_ost_and_in_total_and_kept_until_measured_again() -> None:
    layout = _layout()
    usage = _usage(OstUsage(0, True, 1 << 20, 2 << 30, 10, 400),
                   OstUsage(1, True, 2 << 20, 3 << 30, 30, 500))
    observed = replace(_all_up(layout), usage=usage)
    status = derive_status(_lfs(), SPEC, layout, observed, now=NOW).status
    capacity = status["capacity"]
    assert (capacity["usedBytes"], capacity["used"], capacity["availableBytes"]) == (
        3 << 20, "3Mi", 5 << 30)
    assert (capacity["inodesUsed"], capacity["inodesFree"], capacity["measuredAt"]) == (
        40, 900, NOW)
    assert [(o["usedBytes"], o["inodesFree"]) for o in status["osts"]] == [
        (1 << 20, 400), (2 << 20, 500)]
    # A reconcile with no new measurement (another leader, a restart) keeps the figures.
    again = derive_status(_lfs(status), SPEC, layout, _all_up(layout), now="later").status
    assert again["capacity"]["usedBytes"] == 3 << 20
    assert [o["usedBytes"] for o in again["osts"]] == [1 << 20, 2 << 20]


def test_an_ost_inactive_in_lfs_df_shows_no_stale_figures() -> None:
    layout = _layout()
    measured = replace(_all_up(layout), usage=_usage(OstUsage(0, True, 1 << 20, 2 << 30, 1, 2),
                                                     OstUsage(1, True, 7, 8, 9, 10)))
    before = derive_status(_lfs(), SPEC, layout, measured, now=NOW).status
    inactive = replace(measured, usage=_usage(OstUsage(0, True, 1 << 20, 2 << 30, 1, 2),
                                              OstUsage(1, False)))
    after = derive_status(_lfs(before), SPEC, layout, inactive, now="later").status
    assert "usedBytes" not in after["osts"][1]
    assert after["osts"][0]["usedBytes"] == 1 << 20


def test_the_first_ready_counts_as_create_and_a_finished_growth_as_grow() -> None:
    layout = _layout()
    created = {"name": "scr", "generation": 3, "creationTimestamp": "2026-12-01T00:00:00Z"}
    lfs = {"metadata": created, "status": {}}
    first = derive_status(lfs, SPEC, layout, _all_up(layout), now="2026-12-01T00:05:00Z")
    assert [(d.operation, d.seconds) for d in first.durations] == [("create", 300.0)]
    assert first.status["firstReadyTime"] == "2026-12-01T00:05:00Z"
    # Growth: spec.ostCount 2 -> 3; the new OST pending, then serving.
    grown_spec = replace(SPEC, ost_count=3)
    grown = extend_layout(layout, grown_spec, ())
    new_oss = f"scr-{grown.osts[-1].oss}"
    booting = replace(_all_up(grown), vms={**_all_up(grown).vms, new_oss: _vm(False)})
    growing = derive_status({"metadata": created, "status": first.status}, grown_spec, grown,
                            booting, now="2026-12-01T01:00:00Z")
    assert growing.status["phase"] == "Growing" and not growing.durations
    # The new OST's server comes up a minute later.
    done = derive_status({"metadata": created, "status": growing.status}, grown_spec, grown,
                         _all_up(grown), now="2026-12-01T01:01:00Z")
    assert [(d.operation, d.seconds) for d in done.durations] == [("grow", 60.0)]
    # Recovery from Degraded is neither.
    degraded = {**done.status, "phase": "Degraded"}
    recovered = derive_status({"metadata": created, "status": degraded}, grown_spec, grown,
                              _all_up(grown), now="2026-12-01T02:00:00Z")
    assert recovered.status["phase"] == "Ready" and not recovered.durations


def test_a_first_plan_is_creating_and_its_event_names_every_server_address_and_ost() -> None:
    layout = _layout()
    planned = planned_status(_lfs(), SPEC, read_layout(None), layout)
    assert planned.status["phase"] == "Creating"
    assert planned.status["desiredOsts"] == 2
    assert [s["name"] for s in planned.status["servers"]] == [s.name for s in layout.servers]
    [event] = planned.events
    assert (event.type, event.reason) == ("Normal", "Planned")
    for server in layout.servers:
        assert f"{server.name} at {server.address} ({server.mac})" in event.message
    for ost in layout.osts:
        assert f"{ost.label} (1Gi) on {ost.oss}" in event.message


def test_a_plan_grown_on_a_serving_file_system_is_growing_and_names_only_what_it_adds() -> None:
    layout = _layout()
    ready = derive_status(_lfs(), SPEC, layout, _all_up(layout), now=NOW).status
    grown_spec = replace(SPEC, ost_count=3)
    grown = extend_layout(layout, grown_spec, ())
    planned = planned_status(_lfs(ready), grown_spec, layout, grown)
    assert planned.status["phase"] == "Growing"
    assert planned.status["desiredOsts"] == 3
    [event] = planned.events
    added = grown.osts[-1]
    assert f"{added.label} (1Gi) on {added.oss}" in event.message
    assert all(o.label not in event.message for o in layout.osts)
    assert planned_status(_lfs(ready), SPEC, layout, layout).events == []


def test_a_refused_spec_is_failed_keeps_what_was_reported_and_warns_once() -> None:
    layout = _layout()
    ready = derive_status(_lfs(), SPEC, layout, _all_up(layout), now=NOW).status
    failed = failed_status(_lfs(ready), "InvalidSpec", "spec.ostSize: bad", now="later")
    assert failed.status["phase"] == "Failed"
    assert failed.status["servers"] == ready["servers"]  # the servers still run
    conditions = _conditions(failed.status)
    assert (conditions["Ready"]["status"], conditions["Ready"]["reason"],
            conditions["Ready"]["lastTransitionTime"]) == ("False", "InvalidSpec", "later")
    assert conditions["Progressing"]["status"] == "False"
    assert [(e.type, e.reason, e.message) for e in failed.events] == [
        ("Warning", "InvalidSpec", "spec.ostSize: bad")]
    again = failed_status(_lfs(failed.status), "InvalidSpec", "spec.ostSize: bad", now="later")
    assert again.events == []
    other = failed_status(_lfs(failed.status), "InvalidSpec", "spec.mdtSize: bad", now="later")
    assert [e.message for e in other.events] == ["spec.mdtSize: bad"]


def test_a_refused_deletion_names_five_volumes_counts_the_rest_and_warns_once() -> None:
    users = [f"pv-{n}" for n in range(7)]
    blocked = deletion_blocked_status(_lfs({"phase": "Ready"}), "scratch", users, now=NOW)
    assert (blocked.status["phase"], blocked.status["volumesInUse"]) == ("Deleting", 7)
    condition = _conditions(blocked.status)["DeletionBlocked"]
    assert (condition["status"], condition["reason"]) == ("True", "VolumesInUse")
    assert "pv-0, pv-1, pv-2, pv-3, pv-4 and 2 more" in condition["message"]
    assert "pv-5" not in condition["message"]
    assert "'scratch'" in condition["message"]
    assert [(e.type, e.reason) for e in blocked.events] == [("Warning", "DeletionBlocked")]
    again = deletion_blocked_status(_lfs(blocked.status), "scratch", users, now="later")
    assert again.events == []
    fewer = deletion_blocked_status(_lfs(blocked.status), "scratch", users[:1], now="later")
    assert [e.reason for e in fewer.events] == ["DeletionBlocked"]
    assert "(pv-0)" in _conditions(fewer.status)["DeletionBlocked"]["message"]
