"""Measured capacity in LustreFileSystem status and on /metrics, on the real API server.

The provisioner leader runs as the controller's ServiceAccount (deploy/ RBAC); the KubeVirt
stand-in boots the servers. What `lfs df` and `lfs df -i` print is what real Lustre 2.17
printed (tests/fixtures/lustre-2.17), renamed to this test's file system: the stand-in sits
at the command runner, below the driver's Lustre client and parsers.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from csi.host.command import DEFAULT_TIMEOUT_S, CommandResult
from csi.lustre.client import LustreClient
from csi.metrics import RpcMetrics, serve_metrics
from csi.server_sets import FileSystemEndpoint
from provisioner.kubevirt.kube import LUSTRE_FILE_SYSTEMS
from provisioner.kubevirt.runner import ProvisionerRunner
from tests.provisioner.conftest import FAST, KubeEnv, template, wait_for

pytestmark = pytest.mark.kube
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "lustre-2.17"
KIB = 1024
POOL = "10.47.0.0/24"


class RealLfsDf:
    """`lfs df [-i]` as Lustre 2.17 printed it for a one-OST file system, named after the
    mount point's last component (the fsname); records the calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def run(self, argv: Sequence[str], *, timeout: float = DEFAULT_TIMEOUT_S) -> CommandResult:
        args = tuple(argv)
        self.calls.append(args)
        assert args[:2] == ("lfs", "df"), args
        fixture = "lfs-df-i.txt" if "-i" in args else "lfs-df.txt"
        fsname = Path(args[-1]).name
        text = (FIXTURES / fixture).read_text().replace("real-", f"{fsname}-")
        return CommandResult(args, 0, text.replace("/mnt/real", args[-1]), "")


def mounted_at(tmp_path: Path, seen: list[FileSystemEndpoint] | None = None):
    """The controller's mount of each file system, as `ControllerMounts.mountpoint` answers."""

    def mountpoint(endpoint: FileSystemEndpoint) -> Path:
        if seen is not None:
            seen.append(endpoint)
        return tmp_path / endpoint.fsname

    return mountpoint


def _scrape(metrics: RpcMetrics) -> str:
    server = serve_metrics(metrics, "127.0.0.1", 0)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
        return str(urllib.request.urlopen(url, timeout=5).read().decode())
    finally:
        server.shutdown()


def test_status_and_metrics_show_measured_use_per_ost_and_in_total(
    env: KubeEnv, tmp_path: Path,
) -> None:
    lfs_df = RealLfsDf()
    endpoints: list[FileSystemEndpoint] = []
    runner = ProvisionerRunner(env.sa, replace(FAST, usage_interval_seconds=0.2))
    rpc_metrics = RpcMetrics()
    runner.attach_controller(rpc_metrics, LustreClient(lfs_df), mounted_at(tmp_path, endpoints))
    env.runners.append(runner)
    runner.start()
    provider = env.provider()
    # An address pool of its own: other tests of the session count on theirs.
    wait_for(lambda: provider.ensure_file_system("capa", template(ip_pool=POOL)), timeout=30,
             what="file system capa Ready")

    def measured() -> dict[str, Any]:
        status = (env.lfs("capa") or {}).get("status") or {}
        return status if "usedBytes" in (status.get("capacity") or {}) else {}

    status = wait_for(measured, timeout=30, what="measured capacity in status")
    capacity = status["capacity"]
    assert capacity["usedBytes"] == 9604 * KIB
    assert capacity["availableBytes"] == 1769856 * KIB
    assert (capacity["inodesUsed"], capacity["inodesFree"]) == (309, 130770)
    assert capacity["used"] == "9604Ki"
    ost0 = next(o for o in status["osts"] if o["index"] == 0)
    assert (ost0["usedBytes"], ost0["availableBytes"]) == (9604 * KIB, 1769856 * KIB)
    assert (ost0["inodesUsed"], ost0["inodesFree"]) == (302, 130770)
    # Measured through the controller's mount of the file system the status names.
    assert FileSystemEndpoint("capa", tuple(status["mgsNids"])) in endpoints
    assert ("lfs", "df", "-v", "-i", str(tmp_path / "capa")) in lfs_df.calls

    body = _scrape(rpc_metrics)
    assert f'lustre_csi_filesystem_used_bytes{{fsname="capa"}} {9604 * KIB}' in body
    assert f'lustre_csi_filesystem_available_bytes{{fsname="capa"}} {1769856 * KIB}' in body
    assert 'lustre_csi_filesystem_inodes_used{fsname="capa"} 309' in body
    assert 'lustre_csi_filesystem_inodes_free{fsname="capa"} 130770' in body
    assert f'lustre_csi_ost_used_bytes{{fsname="capa",ost="OST0000"}} {9604 * KIB}' in body
    assert 'lustre_csi_ost_inodes_used{fsname="capa",ost="OST0000"} 302' in body
    assert 'lustre_csi_provisioning_duration_seconds_bucket{operation="create",le="+Inf"}' in body

    # kubectl get shows what was measured.
    table = env.cluster.kubectl("get", "lustrefilesystems", "capa").stdout
    header, row = table.splitlines()[:2]
    assert header.split()[4:7] == ["CAPACITY", "USED", "AVAILABLE"]
    assert row.split()[5:7] == ["9604Ki", capacity["available"]]
    remove_file_system(env, "capa")


def remove_file_system(env: KubeEnv, name: str) -> None:
    """Delete a test's file system and wait until the provisioner has let it go."""
    env.admin.delete(LUSTRE_FILE_SYSTEMS, name)
    wait_for(lambda: env.lfs(name) is None, timeout=30, what=f"{name} gone")
