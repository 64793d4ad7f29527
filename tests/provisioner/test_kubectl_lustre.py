"""`kubectl lustre status` against the real API server, run by kubectl as a plugin.

The provisioner (controller ServiceAccount) runs a file system on the KubeVirt stand-in and
measures it with what real Lustre 2.17 printed; PVs are written as the external-provisioner
and an admin would. The plugin then reads it all as kubectl's user does.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from csi.lustre.client import LustreClient
from csi.metrics import RpcMetrics
from provisioner.kubevirt.kube import PVS, KubeError
from provisioner.kubevirt.runner import ProvisionerRunner
from tests.provisioner.conftest import FAST, KubeEnv, template, wait_for
from tests.provisioner.test_capacity import (
    KIB,
    POOL,
    RealLfsDf,
    mounted_at,
    remove_file_system,
)

pytestmark = pytest.mark.kube
BIN = Path(sys.executable).parent


def _pv(name: str, driver: str, handle: str, claim: str = "",
        attributes: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"],
        "persistentVolumeReclaimPolicy": "Retain",
        "csi": {"driver": driver, "volumeHandle": handle,
                "volumeAttributes": attributes or {}},
    }
    if claim:
        namespace, claim_name = claim.split("/")
        spec["claimRef"] = {"namespace": namespace, "name": claim_name}
    return {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
            "spec": spec}


def _kubectl_lustre(env: KubeEnv, *args: str) -> subprocess.CompletedProcess[str]:
    """`kubectl lustre ...`: kubectl finds kubectl-lustre on PATH and hands it the args."""
    assert (BIN / "kubectl-lustre").exists(), "pip install -e . makes the console script"
    path = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    return subprocess.run(
        [str(env.cluster.bin_dir / "kubectl"), "lustre", *args], capture_output=True,
        text=True, timeout=60, check=False,
        env={**os.environ, "PATH": path, "KUBECONFIG": str(env.cluster.admin_kubeconfig)})


@pytest.fixture
def measured_file_system(env: KubeEnv, tmp_path: Path) -> Iterator[dict[str, Any]]:
    runner = ProvisionerRunner(env.sa, replace(FAST, usage_interval_seconds=0.2))
    runner.attach_controller(RpcMetrics(), LustreClient(RealLfsDf()), mounted_at(tmp_path))
    env.runners.append(runner)
    runner.start()
    wait_for(lambda: env.provider().ensure_file_system("kview", template(ip_pool=POOL)),
             timeout=30, what="kview Ready")
    pvs = [_pv("pv-kview-a", "lustre.csi.io", "v1:shared:kview:data-a", "team-a/data-a"),
           _pv("pv-kview-static", "lustre.csi.io", "kview-static",
               attributes={"fsname": "kview", "mgsNids": "10.9.9.9@tcp"}),
           _pv("pv-other-fs", "lustre.csi.io", "v1:shared:otherfs:x", "team-b/x"),
           _pv("pv-other-driver", "nfs.csi.k8s.io", "v1:shared:kview:nfs", "team-c/nfs")]
    for pv in pvs:
        env.admin.create(PVS, pv)
    try:
        yield wait_for(lambda: (env.lfs("kview") or {}).get("status", {}).get(
            "capacity", {}).get("usedBytes") and env.lfs("kview"), timeout=30,
            what="kview measured")
    finally:
        for pv in pvs:
            with contextlib.suppress(KubeError):  # as the cluster would: unbound, it goes
                env.admin.delete(PVS, pv["metadata"]["name"])
                env.admin.patch(PVS, pv["metadata"]["name"], {"metadata": {"finalizers": None}})
        remove_file_system(env, "kview")


def test_status_shows_the_file_system_its_osts_volumes_conditions_and_events(
        env: KubeEnv, measured_file_system: dict[str, Any]) -> None:
    shown = _kubectl_lustre(env, "status", "kview")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    nid = measured_file_system["status"]["mgsNids"][0]
    assert lines[0] == "LustreFileSystem kview (fsname kview): Ready"
    assert lines[1] == f"  MGS NIDs:  {nid}"
    assert "9.4Mi used, 1.7Gi available (1%)" in lines[2]
    assert "inodes 309 used, 130770 free" in lines[2]

    def rows_after(title: str) -> list[list[str]]:
        start = lines.index(f"  {title}:") + 1
        end = lines.index("", start) if "" in lines[start:] else len(lines)
        return [line.split() for line in lines[start:end]]

    osts = rows_after("OSTs")
    assert osts[0] == ["INDEX", "OSS", "STATE", "SIZE", "USED", "AVAILABLE", "USE%", "INODES"]
    assert osts[1] == ["0", "oss0", "Active", "1Gi", "9.4Mi", "1.7Gi", "1%", "302/131072"]
    # Columns line up: every cell starts where its header does.
    header, row = lines[lines.index("  OSTs:") + 1:lines.index("  OSTs:") + 3]
    assert header.index("STATE") == row.index("Active")
    assert header.index("AVAILABLE") == row.index("1.7Gi")

    volumes = rows_after("Volumes")
    # This driver's PVs in this file system (by handle, or a static PV's fsname), no other.
    assert [row[:3] for row in volumes[1:]] == [["pv-kview-a", "team-a/data-a", "1Gi"],
                                                ["pv-kview-static", "(none)", "1Gi"]]
    conditions = {row[0]: row[1] for row in rows_after("Conditions")[1:]}
    assert conditions["Ready"] == "True" and conditions["Degraded"] == "False"
    events = rows_after("Events (last 5)")
    assert len(events) >= 2 and any("PhaseReady" in row for row in events[1:])


def test_status_as_json_and_a_name_that_does_not_exist(
        env: KubeEnv, measured_file_system: dict[str, Any]) -> None:
    shown = _kubectl_lustre(env, "status", "kview", "-o", "json")
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    assert (report["name"], report["fsname"], report["phase"]) == ("kview", "kview", "Ready")
    assert report["capacity"]["usedBytes"] == 9604 * KIB
    assert report["osts"][0]["inodesFree"] == 130770
    assert [(v["persistentVolume"], v["claim"]) for v in report["volumes"]] == [
        ("pv-kview-a", "team-a/data-a"), ("pv-kview-static", "")]
    assert {c["type"] for c in report["conditions"]} >= {"Ready", "Progressing", "Degraded"}
    assert report["events"] and all(e["reason"] for e in report["events"])

    every = json.loads(_kubectl_lustre(env, "status", "-o", "json").stdout)
    assert "kview" in [r["name"] for r in every]

    missing = _kubectl_lustre(env, "status", "nosuchfs")
    assert missing.returncode == 1
    assert "no LustreFileSystem named 'nosuchfs'" in missing.stderr
