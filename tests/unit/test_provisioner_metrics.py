"""The provisioner's metrics as Prometheus reads them: names, labels, values, one /metrics."""

from __future__ import annotations

import urllib.request

from csi.metrics import ProvisionerMetrics, RpcMetrics, serve_metrics
from csi.server_sets import FileSystemEndpoint
from provisioner.kubevirt.capacity import FileSystemUsage, OstUsage, UsageMeter

NOW = "2026-12-01T00:00:00Z"


def _ready(name: str, fsname: str) -> dict:
    return {"metadata": {"name": name}, "spec": {"fsname": fsname},
            "status": {"mgsNids": ["10.0.0.5@tcp"],
                       "conditions": [{"type": "Ready", "status": "True"}]}}


class Figures:
    """A UsageReader answering fixed figures per fsname; a missing one fails as a dead MDS."""

    def __init__(self, figures: dict[str, FileSystemUsage]) -> None:
        self.figures = figures

    def usage(self, endpoint: FileSystemEndpoint) -> FileSystemUsage:
        if endpoint.fsname not in self.figures:
            raise OSError(110, "Connection timed out")
        return self.figures[endpoint.fsname]


def _scrape(metrics: RpcMetrics) -> list[str]:
    server = serve_metrics(metrics, "127.0.0.1", 0)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
        return urllib.request.urlopen(url, timeout=5).read().decode().splitlines()
    finally:
        server.shutdown()


def test_one_metrics_endpoint_serves_rpc_and_provisioner_metrics_by_name_and_value() -> None:
    rpc, provisioner = RpcMetrics(), ProvisionerMetrics()
    rpc.include(provisioner)
    rpc.observe("CreateVolume", "OK", 0.002)
    meter = UsageMeter(Figures({"scratch": FileSystemUsage(
        used_bytes=1000, available_bytes=9000, inodes_used=5, inodes_free=95,
        osts=(OstUsage(0, True, 600, 4000, 3, 40), OstUsage(10, False)), measured_at=NOW)}),
        provisioner)
    assert meter.measure_all([_ready("scr", "scratch")]) == ["scr"]
    provisioner.provisioning_seconds.observe(240.0, "create")
    provisioner.fencing.inc("scratch")
    provisioner.growth.inc("scratch")
    lines = _scrape(rpc)
    for expected in (
        'lustre_csi_rpc_total{method="CreateVolume",code="OK"} 1',
        'lustre_csi_rpc_duration_seconds_bucket{method="CreateVolume",le="0.005"} 1',
        "# TYPE lustre_csi_filesystem_used_bytes gauge",
        'lustre_csi_filesystem_used_bytes{fsname="scratch"} 1000',
        'lustre_csi_filesystem_available_bytes{fsname="scratch"} 9000',
        'lustre_csi_filesystem_inodes_used{fsname="scratch"} 5',
        'lustre_csi_filesystem_inodes_free{fsname="scratch"} 95',
        'lustre_csi_ost_used_bytes{fsname="scratch",ost="OST0000"} 600',
        'lustre_csi_ost_available_bytes{fsname="scratch",ost="OST0000"} 4000',
        'lustre_csi_ost_inodes_used{fsname="scratch",ost="OST0000"} 3',
        'lustre_csi_ost_inodes_free{fsname="scratch",ost="OST0000"} 40',
        "# TYPE lustre_csi_provisioning_duration_seconds histogram",
        'lustre_csi_provisioning_duration_seconds_bucket{operation="create",le="120.0"} 0',
        'lustre_csi_provisioning_duration_seconds_bucket{operation="create",le="300.0"} 1',
        'lustre_csi_provisioning_duration_seconds_bucket{operation="create",le="+Inf"} 1',
        'lustre_csi_provisioning_duration_seconds_sum{operation="create"} 240.000000',
        "# TYPE lustre_csi_fencing_total counter",
        'lustre_csi_fencing_total{fsname="scratch"} 1',
        'lustre_csi_growth_total{fsname="scratch"} 1',
    ):
        assert expected in lines, expected
    # An inactive OST (OST000a) has no figures rather than zeros that read as "empty".
    assert not any('ost="OST000a"' in line for line in lines)


def test_a_file_system_that_cannot_be_measured_keeps_its_figures_and_a_deleted_one_loses_them(
) -> None:
    provisioner = ProvisionerMetrics()
    reader = Figures({"a": FileSystemUsage(1, 2, 3, 4, (), NOW),
                      "b": FileSystemUsage(5, 6, 7, 8, (), NOW)})
    meter = UsageMeter(reader, provisioner)
    meter.measure_all([_ready("a", "a"), _ready("b", "b")])
    del reader.figures["a"]  # its MDS stops answering
    assert meter.measure_all([_ready("a", "a"), _ready("b", "b")]) == ["b"]
    assert meter.latest("a") == FileSystemUsage(1, 2, 3, 4, (), NOW)
    assert 'lustre_csi_filesystem_used_bytes{fsname="a"} 1' in provisioner.lines()
    meter.measure_all([_ready("b", "b")])  # "a" was deleted
    assert not any('fsname="a"' in line for line in provisioner.lines())
