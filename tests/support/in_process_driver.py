"""`lustre-csi serve` in this process, for the tests that reach into its parts (a provider
that waits at a gate, a world of volumes read between calls)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from csi.server import Driver, DriverConfig
from csi.server_sets import ServerSetProvider


@contextlib.contextmanager
def serving_in_process(
    socket: Path,
    state_dir: Path,
    kubelet_dir: Path,
    *,
    node_id: str,
    mode: str = "all",
    provider: ServerSetProvider | None = None,
) -> Iterator[Driver]:
    """The driver serving `mode` on unix socket `socket`, on the embedded local server set
    unless `provider` replaces it; stopped (gracefully, as on SIGTERM) on the way out."""
    driver = Driver(
        DriverConfig(
            mode=mode,
            endpoint=f"unix://{socket}",
            node_id=node_id,
            state_dir=state_dir,
            kubelet_dirs=[str(kubelet_dir)],
        ),
        provider=provider,
    )
    driver.start()
    try:
        yield driver
    finally:
        driver.stop()
