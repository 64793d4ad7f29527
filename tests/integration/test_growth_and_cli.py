"""Growth through CreateVolume/ControllerExpandVolume, capacity reporting, and the CLI client."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import grpc
import pytest

from csi.rpc import csi_pb2
from tests.support.driver import REPO, DriverProcess

GiB = 1 << 30
SMALL = {
    "fsname": "grow",
    "ostSize": "4Gi",
    "minOsts": "1",
    "maxOsts": "3",
    "growthThreshold": "0.5",
}


def _ost_indices(driver: DriverProcess) -> list[int]:
    ledger = json.loads((driver.state_dir / "filesystems/grow/server-set.json").read_text())
    return [ost["index"] for ost in ledger["osts"]]


def test_volumes_past_free_capacity_add_osts_until_the_limit(driver: DriverProcess) -> None:
    client = driver.client()
    client.create_volume("a", 2 * GiB, SMALL)  # 2 GiB of 4 GiB at threshold 0.5: fits
    assert _ost_indices(driver) == [0]
    client.create_volume("b", 2 * GiB, SMALL)  # 4 GiB reserved needs 8 GiB: one more OST
    assert _ost_indices(driver) == [0, 1]
    client.expand_volume(client.create_volume("c", GiB, SMALL).volume_id, 2 * GiB)
    assert _ost_indices(driver) == [0, 1, 2]
    with pytest.raises(grpc.RpcError) as full:
        client.create_volume("d", GiB, SMALL)
    assert full.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "maxOsts" in (full.value.details() or "")
    assert len(client.list_volumes().entries) == 3  # the refused volume left nothing behind

    capacity = client.controller.GetCapacity(csi_pb2.GetCapacityRequest(parameters=SMALL))
    # 12 GiB at most, 6 GiB reserved, half of what is left is usable under the threshold.
    assert capacity.available_capacity == 3 * GiB
    assert capacity.maximum_volume_size.value == 3 * GiB


def test_controller_get_volume_reports_a_missing_directory(driver: DriverProcess) -> None:
    client = driver.client()
    volume = client.create_volume("watched", GiB, {"fsname": "cond"})
    request = csi_pb2.ControllerGetVolumeRequest(volume_id=volume.volume_id)
    assert not client.controller.ControllerGetVolume(request).status.volume_condition.abnormal
    shutil.rmtree(driver.state_dir / "filesystems/cond/root" / volume.volume_context["subdir"])
    condition = client.controller.ControllerGetVolume(request).status.volume_condition
    assert condition.abnormal and "missing" in condition.message


def _run_cli(driver: DriverProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """`lustre-csi client ARGS...` against the driver, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "csi.cli", "client", "--endpoint", f"unix://{driver.socket}", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _cli(driver: DriverProcess, *args: str) -> str:
    done = _run_cli(driver, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_cli_client_walks_a_volume(driver: DriverProcess) -> None:
    created = json.loads(
        _cli(driver, "create", "cli-vol", "--size", "3Gi", "--param", "fsname=cli")
    )
    assert created["capacity_bytes"] == str(3 * GiB)
    volume_id = created["volume_id"]
    listed = json.loads(_cli(driver, "list"))
    assert [e["volume"]["volume_id"] for e in listed["entries"]] == [volume_id]
    assert "is now" in _cli(driver, "expand", volume_id, "--size", "4Gi")
    assert "modified" in _cli(driver, "modify", volume_id, "--param", "inodeLimit=5000")
    volume = json.loads(_cli(driver, "get", volume_id))["volume"]
    assert volume["volume_context"]["inodeLimit"] == "5000", volume
    refused = _run_cli(driver, "modify", volume_id, "--param", "stripeSize=100Ki")
    assert refused.returncode != 0 and "stripeSize" in refused.stderr, refused.stderr
    assert json.loads(_cli(driver, "info"))["name"] == "lustre.csi.io"
    assert _cli(driver, "probe").strip() == "ready"
    assert "deleted" in _cli(driver, "delete", volume_id)
    failed = _run_cli(driver, "create", "bad", "--param", "fsname=much-too-long")
    assert failed.returncode != 0 and "INVALID_ARGUMENT" in failed.stderr


def test_node_plugin_without_a_lustre_client_probes_not_ready(tmp_path) -> None:
    # This machine has no Lustre client: with the real tools the node plugin must say so.
    node = DriverProcess(tmp_path, mode="node", extra_args=["--lustre-tools", "kernel"])
    with pytest.raises(RuntimeError, match="did not become ready"):
        node.start(timeout=3)
    try:
        assert "Lustre client NOT ready" in node.log_path.read_text()
        with node.client() as client:
            assert client.probe() is False
            info = client.node.NodeGetInfo(csi_pb2.NodeGetInfoRequest())
            assert info.node_id == "test-node"
    finally:
        node.stop()
