"""Summaries of latency samples: percentiles by nearest rank, in milliseconds."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def percentile(samples: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (the value at rank ceil(fraction * n)); 0.0 for no samples."""
    if not samples:
        return 0.0
    ordered = sorted(samples)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def summary(samples: Sequence[float], wall_seconds: float, operations: int | None = None
            ) -> dict[str, Any]:
    """count, p50/p99/mean/max in ms, and throughput (operations per second of wall time)."""
    done = len(samples) if operations is None else operations
    return {
        "count": len(samples),
        "p50_ms": round(percentile(samples, 0.50) * 1e3, 3),
        "p99_ms": round(percentile(samples, 0.99) * 1e3, 3),
        "mean_ms": round(sum(samples) / len(samples) * 1e3, 3) if samples else 0.0,
        "max_ms": round(max(samples) * 1e3, 3) if samples else 0.0,
        "throughput_per_s": round(done / wall_seconds, 1) if wall_seconds > 0 else 0.0,
    }
