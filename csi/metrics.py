"""Prometheus-format metrics for RPCs, served on --metrics-address.

Hand-written text exposition (a dozen lines) rather than a client library: the driver exposes
only request counters and latency sums, and the format is stable and documented.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from http.server import ThreadingHTTPServer

_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0)


class RpcMetrics:
    def __init__(self) -> None:
        self._count: dict[tuple[str, str], int] = defaultdict(int)
        self._seconds: dict[str, float] = defaultdict(float)
        self._buckets: dict[str, list[int]] = defaultdict(lambda: [0] * len(_BUCKETS))
        self._observed: dict[str, int] = defaultdict(int)
        self._guard = threading.Lock()

    def observe(self, method: str, code: str, seconds: float) -> None:
        with self._guard:
            self._count[(method, code)] += 1
            self._seconds[method] += seconds
            self._observed[method] += 1
            buckets = self._buckets[method]
            for position, bound in enumerate(_BUCKETS):
                if seconds <= bound:
                    buckets[position] += 1

    def exposition(self) -> str:
        lines = [
            "# HELP lustre_csi_rpc_total CSI calls by method and status code.",
            "# TYPE lustre_csi_rpc_total counter",
        ]
        with self._guard:
            for (method, code), count in sorted(self._count.items()):
                lines.append(f'lustre_csi_rpc_total{{method="{method}",code="{code}"}} {count}')
            lines += [
                "# HELP lustre_csi_rpc_duration_seconds CSI call latency.",
                "# TYPE lustre_csi_rpc_duration_seconds histogram",
            ]
            for method in sorted(self._observed):
                for bound, count in zip(_BUCKETS, self._buckets[method], strict=True):
                    lines.append(
                        f'lustre_csi_rpc_duration_seconds_bucket{{method="{method}",le="{bound}"}}'
                        f" {count}"
                    )
                total = self._observed[method]
                lines.append(
                    f'lustre_csi_rpc_duration_seconds_bucket{{method="{method}",le="+Inf"}} {total}'
                )
                lines.append(
                    f'lustre_csi_rpc_duration_seconds_sum{{method="{method}"}} '
                    f"{self._seconds[method]:.6f}"
                )
                lines.append(f'lustre_csi_rpc_duration_seconds_count{{method="{method}"}} {total}')
        return "\n".join(lines) + "\n"


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
