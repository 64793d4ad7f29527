"""Metrics are private to the host unless an admin opens them; the server VMs' namespace is the
driver's own flag, apart from the driver's namespace."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

from csi.cli.main import build_parser
from csi.server import Driver, DriverConfig


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_metrics_address_without_a_host_listens_on_loopback_only(tmp_path: Path) -> None:
    port = _free_port()
    driver = Driver(DriverConfig(mode="controller", endpoint=f"unix://{tmp_path}/csi.sock",
                                 node_id="n", state_dir=tmp_path / "state",
                                 metrics_address=f":{port}"))
    driver.start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            assert b"lustre_csi_rpc" in reply.read() or reply.status == 200
        host = driver._metrics_server.server_address[0]
        assert host == "127.0.0.1", f"metrics listen on {host}, not loopback"
    finally:
        driver.stop()


def test_server_vms_get_a_namespace_of_their_own_by_default() -> None:
    args = build_parser().parse_args(["serve"])
    assert args.namespace == "lustre-csi"
    assert args.server_namespace == "lustre-servers"
    assert args.metrics_address == ""  # off unless asked for
