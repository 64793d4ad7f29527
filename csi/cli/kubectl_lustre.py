"""`kubectl lustre status [FS]`: the file systems lustre-csi runs, as an admin wants to see them.

A kubectl plugin (kubectl runs `kubectl-lustre` from PATH). For each LustreFileSystem: phase,
MGS NIDs, capacity as measured, every OST with its state and use, the volumes in it (this
driver's PersistentVolumes and the claims bound to them), its conditions and its last Events.
Aligned columns for a terminal, or `-o json` for scripts. It only reads: what it needs is
`get`/`list` of lustrefilesystems, persistentvolumes and events.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, Protocol, cast

from csi.errors import DriverError
from csi.identity import DRIVER_NAME
from csi.volume_id import parse_volume_id

GROUP, VERSION, PLURAL = "lustre.csi.io", "v1alpha1", "lustrefilesystems"
# The API server keeps Events about cluster-scoped objects in `default` (as for Nodes).
EVENTS_NAMESPACE = "default"
LAST_EVENTS = 5


class ClusterReader(Protocol):
    """The three reads the view makes."""

    def file_systems(self) -> list[dict[str, Any]]: ...

    def persistent_volumes(self) -> list[dict[str, Any]]: ...

    def events_of(self, name: str) -> list[dict[str, Any]]: ...


class KubernetesReader:
    """ClusterReader over the Kubernetes API (the user's kubeconfig)."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes import client

        self._api = api_client
        self._custom = client.CustomObjectsApi(api_client)
        self._core = client.CoreV1Api(api_client)

    def file_systems(self) -> list[dict[str, Any]]:
        listed = self._custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)
        return list(cast(dict[str, Any], listed).get("items") or [])

    def persistent_volumes(self) -> list[dict[str, Any]]:
        return self._plain(self._core.list_persistent_volume()).get("items") or []

    def events_of(self, name: str) -> list[dict[str, Any]]:
        selector = f"involvedObject.kind=LustreFileSystem,involvedObject.name={name}"
        events = self._core.list_namespaced_event(EVENTS_NAMESPACE, field_selector=selector)
        return self._plain(events).get("items") or []

    def _plain(self, obj: Any) -> dict[str, Any]:
        return dict(self._api.sanitize_for_serialization(obj))


def fsname_of_volume(pv: dict[str, Any]) -> str | None:
    """The file system one of this driver's PersistentVolumes lives in, else None.

    Provisioned volumes say it in their handle; static ones in the `fsname` attribute.
    """
    csi = (pv.get("spec") or {}).get("csi") or {}
    if csi.get("driver") != DRIVER_NAME:
        return None
    attribute = (csi.get("volumeAttributes") or {}).get("fsname")
    if attribute:
        return str(attribute)
    try:
        return parse_volume_id(str(csi.get("volumeHandle", ""))).fsname
    except DriverError:
        return None


def file_system_report(lfs: dict[str, Any], pvs: list[dict[str, Any]],
                       events: list[dict[str, Any]]) -> dict[str, Any]:
    """One file system as `-o json` prints it (and the text view reads)."""
    spec, status = lfs.get("spec") or {}, lfs.get("status") or {}
    fsname = str(spec.get("fsname", ""))
    volumes = []
    for pv in sorted(pvs, key=lambda p: p["metadata"]["name"]):
        if fsname_of_volume(pv) != fsname:
            continue
        claim = (pv.get("spec") or {}).get("claimRef") or {}
        volumes.append({
            "persistentVolume": pv["metadata"]["name"],
            "claim": f"{claim['namespace']}/{claim['name']}" if claim.get("name") else "",
            "capacity": ((pv.get("spec") or {}).get("capacity") or {}).get("storage", ""),
            "phase": (pv.get("status") or {}).get("phase", ""),
            "volumeHandle": (pv["spec"].get("csi") or {}).get("volumeHandle", ""),
        })
    latest = sorted(events, key=_event_time)[-LAST_EVENTS:]
    return {
        "name": lfs["metadata"]["name"],
        "fsname": fsname,
        "phase": status.get("phase", "Pending"),
        "mgsNids": list(status.get("mgsNids") or []),
        "capacity": dict(status.get("capacity") or {}),
        "osts": [dict(ost) for ost in status.get("osts") or []],
        "volumes": volumes,
        "conditions": [dict(c) for c in status.get("conditions") or []],
        "events": [{"time": _event_time(e), "type": e.get("type", ""),
                    "reason": e.get("reason", ""), "message": e.get("message", "")}
                   for e in latest],
    }


def status_report(reader: ClusterReader, name: str | None = None) -> list[dict[str, Any]]:
    """Every file system (or the one whose name or fsname is `name`); LookupError if none."""
    systems = sorted(reader.file_systems(), key=lambda i: i["metadata"]["name"])
    if name is not None:
        systems = [s for s in systems
                   if name in (s["metadata"]["name"], (s.get("spec") or {}).get("fsname"))]
        if not systems:
            raise LookupError(f"no LustreFileSystem named {name!r} (by name or fsname)")
    pvs = reader.persistent_volumes() if systems else []
    return [file_system_report(s, pvs, reader.events_of(s["metadata"]["name"]))
            for s in systems]


def table(header: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "    ") -> list[str]:
    """Columns padded to their widest cell, three spaces apart, as kubectl prints them."""
    cells = [list(header), *([str(cell) for cell in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return [(indent + "   ".join(cell.ljust(width) for cell, width in
                                 zip(row, widths, strict=True))).rstrip() for row in cells]


def _section(title: str, header: Sequence[str], rows: Sequence[Sequence[str]],
             empty: str) -> list[str]:
    return [f"  {title}:", *(table(header, rows) if rows else [f"    {empty}"]), ""]


def _bytes(value: Any) -> str:
    """A size to read at a glance: 1.7Gi, 9.4Mi, 512 (exact figures are in -o json)."""
    if not isinstance(value, int):
        return "-"
    for unit, shift in (("Pi", 50), ("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)):
        if value >= 1 << shift:
            shown = f"{value / (1 << shift):.1f}".removesuffix(".0")
            return f"{shown}{unit}"
    return str(value)


def _percent(used: Any, available: Any) -> str:
    if not isinstance(used, int) or not isinstance(available, int) or used + available == 0:
        return "-"
    # As lfs df counts it: used over what users can reach (used + available).
    return f"{-(-100 * used // (used + available))}%"


def render_text(reports: list[dict[str, Any]]) -> str:
    if not reports:
        return "No LustreFileSystems.\n"
    lines: list[str] = []
    for report in reports:
        capacity = report["capacity"]
        lines.append(f"LustreFileSystem {report['name']} (fsname {report['fsname']}): "
                     f"{report['phase']}")
        lines.append(f"  MGS NIDs:  {', '.join(report['mgsNids']) or '(none yet)'}")
        measured = ""
        if "usedBytes" in capacity:
            measured = (f", {_bytes(capacity.get('usedBytes'))} used, "
                        f"{_bytes(capacity.get('availableBytes'))} available "
                        f"({_percent(capacity.get('usedBytes'), capacity.get('availableBytes'))})"
                        f"; inodes {capacity.get('inodesUsed', '-')} used, "
                        f"{capacity.get('inodesFree', '-')} free; measured "
                        f"{capacity.get('measuredAt', '?')}")
        lines.append(f"  Capacity:  {_bytes(capacity.get('totalBytes'))} serving of "
                     f"{_bytes(capacity.get('plannedBytes'))} planned{measured}")
        lines.append("")
        lines += _section("OSTs", ("INDEX", "OSS", "STATE", "SIZE", "USED", "AVAILABLE", "USE%",
                                   "INODES"),
                          [(str(o.get("index", "")), str(o.get("oss", "")),
                            str(o.get("state", "")), _bytes(o.get("sizeBytes")),
                            _bytes(o.get("usedBytes")), _bytes(o.get("availableBytes")),
                            _percent(o.get("usedBytes"), o.get("availableBytes")), _inodes(o))
                           for o in report["osts"]], "(none planned yet)")
        lines += _section("Volumes", ("PERSISTENTVOLUME", "CLAIM", "CAPACITY", "PHASE"),
                          [(v["persistentVolume"], v["claim"] or "(none)", v["capacity"],
                            v["phase"]) for v in report["volumes"]], "(none)")
        lines += _section("Conditions", ("TYPE", "STATUS", "REASON", "MESSAGE"),
                          [(c.get("type", ""), c.get("status", ""), c.get("reason", ""),
                            c.get("message", "")) for c in report["conditions"]], "(none yet)")
        lines += _section(f"Events (last {LAST_EVENTS})", ("TIME", "TYPE", "REASON", "MESSAGE"),
                          [(e["time"], e["type"], e["reason"], e["message"])
                           for e in report["events"]], "(none)")
    return "\n".join(lines)


def _inodes(ost: dict[str, Any]) -> str:
    if "inodesUsed" not in ost:
        return "-"
    return f"{ost['inodesUsed']}/{ost['inodesUsed'] + ost.get('inodesFree', 0)}"


def _event_time(event: dict[str, Any]) -> str:
    return str(event.get("lastTimestamp") or event.get("eventTime")
               or event.get("firstTimestamp") or (event.get("metadata") or {}).get(
                   "creationTimestamp") or "")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubectl lustre", description="What lustre-csi runs: file systems, OSTs, volumes.")
    parser.add_argument("--kubeconfig", default="",
                        help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    parser.add_argument("--context", default="", help="kubeconfig context to use")
    commands = parser.add_subparsers(dest="command", required=True)
    status = commands.add_parser("status", help="file systems, OSTs, volumes, conditions, "
                                               "Events")
    status.add_argument("fs", nargs="?", help="a LustreFileSystem's name or fsname")
    status.add_argument("-o", "--output", choices=("text", "json"), default="text")
    return parser


def _reader(kubeconfig: str, context: str) -> ClusterReader:
    from kubernetes import config

    try:
        api = config.new_client_from_config(config_file=kubeconfig or None,
                                            context=context or None)
    except config.ConfigException:
        if kubeconfig or context:
            raise
        config.load_incluster_config()  # run inside a pod
        from kubernetes import client

        api = client.ApiClient()
    return KubernetesReader(api)


def main(argv: Sequence[str] | None = None, reader: ClusterReader | None = None) -> int:
    args = _parser().parse_args(argv)
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config import ConfigException

    try:
        reports = status_report(reader or _reader(args.kubeconfig, args.context), args.fs)
    except LookupError as error:
        print(f"error: {error.args[0]}", file=sys.stderr)
        return 1
    except ConfigException as error:
        print(f"error: no usable kubeconfig: {error}", file=sys.stderr)
        return 1
    except ApiException as error:
        print(f"error: the API server answered {error.status} {error.reason}", file=sys.stderr)
        return 1
    if args.output == "json":
        print(json.dumps(reports if args.fs is None else reports[0], indent=2))
    else:
        sys.stdout.write(render_text(reports))
    return 0


if __name__ == "__main__":
    sys.exit(main())
