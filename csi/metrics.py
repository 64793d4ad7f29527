"""Prometheus-format metrics, served on --metrics-address.

Hand-written text exposition rather than a client library: three small families (counter,
gauge, histogram) cover what the driver reports, and the format is stable and documented.

- `RpcMetrics`: CSI calls by method and code, and their latency (every mode). Other sections
  (`include`) are appended to its exposition, so one /metrics serves them all.
- `ProvisionerMetrics`: what the provisioner leader measures and does: capacity and inodes
  per file system and per OST, how long provisioning and growth took, fencing and growth.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from http.server import ThreadingHTTPServer

Labels = tuple[str, ...]
RPC_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0)
# A file system boots in minutes (4-12 under emulation), grows in one or two.
PROVISIONING_BUCKETS = (10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)


class MetricsSection(Protocol):
    def lines(self) -> list[str]: ...


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labelled(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    pairs = [f'{name}="{_escape(value)}"' for name, value in zip(names, values, strict=True)]
    if extra:
        pairs.append(extra)
    return "{" + ",".join(pairs) + "}" if pairs else ""


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.6f}"


class _Family:
    """One metric name with its HELP, TYPE and label names; samples are added by the kinds."""

    kind = ""

    def __init__(self, name: str, meaning: str, label_names: Sequence[str]) -> None:
        self.name = name
        self.meaning = meaning
        self.label_names = tuple(label_names)
        self._guard = threading.Lock()

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.meaning}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Family):
    kind = "counter"

    def __init__(self, name: str, meaning: str, label_names: Sequence[str]) -> None:
        super().__init__(name, meaning, label_names)
        self._values: dict[Labels, int] = defaultdict(int)

    def inc(self, *labels: str) -> None:
        with self._guard:
            self._values[labels] += 1

    def value(self, *labels: str) -> int:
        with self._guard:
            return self._values.get(labels, 0)

    def lines(self) -> list[str]:
        with self._guard:
            rows = sorted(self._values.items())
        return [*self.header(), *(f"{self.name}{_labelled(self.label_names, labels)} {count}"
                                  for labels, count in rows)]


class Gauge(_Family):
    kind = "gauge"

    def __init__(self, name: str, meaning: str, label_names: Sequence[str]) -> None:
        super().__init__(name, meaning, label_names)
        self._values: dict[Labels, float] = {}

    def set(self, value: float, *labels: str) -> None:
        with self._guard:
            self._values[labels] = value

    def forget(self, first_label: str) -> None:
        """Drop every sample whose first label is `first_label` (a file system gone)."""
        with self._guard:
            for labels in [k for k in self._values if k[:1] == (first_label,)]:
                del self._values[labels]

    def lines(self) -> list[str]:
        with self._guard:
            rows = sorted(self._values.items())
        return [*self.header(), *(f"{self.name}{_labelled(self.label_names, labels)} "
                                  f"{_number(value)}" for labels, value in rows)]


class Histogram(_Family):
    kind = "histogram"

    def __init__(self, name: str, meaning: str, label_names: Sequence[str],
                 buckets: Sequence[float]) -> None:
        super().__init__(name, meaning, label_names)
        self.buckets = tuple(buckets)
        self._counts: dict[Labels, list[int]] = {}
        self._sums: dict[Labels, float] = defaultdict(float)

    def observe(self, seconds: float, *labels: str) -> None:
        with self._guard:
            counts = self._counts.setdefault(labels, [0] * (len(self.buckets) + 1))
            for position, bound in enumerate(self.buckets):
                if seconds <= bound:
                    counts[position] += 1
            counts[-1] += 1  # +Inf: every observation
            self._sums[labels] += seconds

    def count(self, *labels: str) -> int:
        with self._guard:
            return self._counts.get(labels, [0])[-1]

    def lines(self) -> list[str]:
        lines = self.header()
        with self._guard:
            rows = sorted((labels, list(counts), self._sums[labels])
                          for labels, counts in self._counts.items())
        for labels, counts, total in rows:
            bounds = [str(bound) for bound in self.buckets] + ["+Inf"]
            for bound, count in zip(bounds, counts, strict=True):
                le = 'le="' + bound + '"'
                lines.append(f"{self.name}_bucket{_labelled(self.label_names, labels, le)} {count}")
            lines.append(f"{self.name}_sum{_labelled(self.label_names, labels)} {total:.6f}")
            lines.append(f"{self.name}_count{_labelled(self.label_names, labels)} {counts[-1]}")
        return lines


def exposition_of(sections: Iterable[MetricsSection]) -> str:
    return "\n".join(line for section in sections for line in section.lines()) + "\n"


class RpcMetrics:
    def __init__(self) -> None:
        self.calls = Counter("lustre_csi_rpc_total", "CSI calls by method and status code.",
                             ("method", "code"))
        self.durations = Histogram("lustre_csi_rpc_duration_seconds", "CSI call latency.",
                                   ("method",), RPC_BUCKETS)
        self._included: list[MetricsSection] = []

    def observe(self, method: str, code: str, seconds: float) -> None:
        self.calls.inc(method, code)
        self.durations.observe(seconds, method)

    def include(self, section: MetricsSection) -> None:
        """Serve `section`'s metrics on this process's /metrics too."""
        if section not in self._included:
            self._included.append(section)

    def lines(self) -> list[str]:
        return [*self.calls.lines(), *self.durations.lines(),
                *(line for section in list(self._included) for line in section.lines())]

    def exposition(self) -> str:
        return exposition_of([self])


class ProvisionerMetrics:
    """What the provisioner leader measures (lfs df, lfs df -i) and does (see README)."""

    def __init__(self) -> None:
        fs, ost = ("fsname",), ("fsname", "ost")
        self.fs_used_bytes = Gauge("lustre_csi_filesystem_used_bytes",
                                   "Bytes in use on the file system's OSTs (lfs df).", fs)
        self.fs_available_bytes = Gauge("lustre_csi_filesystem_available_bytes",
                                        "Bytes available to users on its OSTs (lfs df).", fs)
        self.fs_inodes_used = Gauge("lustre_csi_filesystem_inodes_used",
                                    "Files and directories in use (lfs df -i).", fs)
        self.fs_inodes_free = Gauge("lustre_csi_filesystem_inodes_free",
                                    "Files that can still be created (lfs df -i).", fs)
        self.ost_used_bytes = Gauge("lustre_csi_ost_used_bytes", "Bytes in use on one OST.", ost)
        self.ost_available_bytes = Gauge("lustre_csi_ost_available_bytes",
                                         "Bytes available on one OST.", ost)
        self.ost_inodes_used = Gauge("lustre_csi_ost_inodes_used",
                                     "Objects in use on one OST (lfs df -i).", ost)
        self.ost_inodes_free = Gauge("lustre_csi_ost_inodes_free",
                                     "Objects that can still be created on one OST.", ost)
        self.provisioning_seconds = Histogram(
            "lustre_csi_provisioning_duration_seconds",
            "Seconds from a file system's creation (operation=create) or the start of its "
            "growth (operation=grow) until it was Ready.", ("operation",), PROVISIONING_BUCKETS)
        self.fencing = Counter("lustre_csi_fencing_total",
                               "Launcher pods force-deleted because their node was down.", fs)
        self.growth = Counter("lustre_csi_growth_total",
                              "Growth steps: OSTs planned for a file system already built.", fs)
        self._gauges = (self.fs_used_bytes, self.fs_available_bytes, self.fs_inodes_used,
                        self.fs_inodes_free, self.ost_used_bytes, self.ost_available_bytes,
                        self.ost_inodes_used, self.ost_inodes_free)

    def forget(self, fsname: str) -> None:
        """A file system no longer served: its gauges go (counters keep their totals)."""
        for gauge in self._gauges:
            gauge.forget(fsname)

    def forget_osts(self, fsname: str) -> None:
        """Before a new measurement: an OST gone inactive shows no stale figures."""
        for gauge in self._gauges[4:]:
            gauge.forget(fsname)

    def lines(self) -> list[str]:
        families: list[MetricsSection] = [*self._gauges, self.provisioning_seconds,
                                          self.fencing, self.growth]
        return [line for family in families for line in family.lines()]


def serve_metrics(metrics: RpcMetrics, host: str, port: int) -> ThreadingHTTPServer:
    """Start an HTTP server answering GET /metrics in a daemon thread."""
    # Imported here: http.server pulls in email & co. (~1 MiB), paid only when metrics are on.
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/metrics":
                self.send_error(404)
                return
            body = metrics.exposition().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
