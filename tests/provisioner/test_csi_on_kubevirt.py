"""The CSI controller process with the embedded KubeVirt provisioner, end to end.

`lustre-csi serve --server-sets kubevirt` runs as a real process with the controller's
ServiceAccount (RBAC from deploy/): CreateVolume for a new file system creates its
LustreFileSystem and answers UNAVAILABLE until the (stand-in) VMs are Ready, then succeeds; a
volume past free capacity raises spec.ostCount, answers UNAVAILABLE while OSTs are added, and
succeeds on retry. The Lustre client side is the stand-in (no kernel modules here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest

from csi.cli.client import CsiClient
from csi.node.paths import kubelet_staging_path
from csi.rpc import csi_pb2
from tests.provisioner.conftest import NAMESPACE, KubeEnv, wait_for
from tests.support.driver import STANDIN_LAUNCHER, DriverProcess

GiB = 1 << 30
PARAMS = {
    "fsname": "csikv",
    "mdtSize": "1Gi",
    "ostSize": "2Gi",
    "minOsts": "1",
    "maxOsts": "4",
    "ostsPerOss": "2",
    "growthThreshold": "0.5",
    "image": "example.org/lustre-server:2.16",
    "networkAttachment": "lustre-storage",
    "ipPool": "10.46.0.0/24",
}

pytestmark = pytest.mark.kube


def _create_when_ready(client: CsiClient, name: str, size: int) -> tuple[csi_pb2.Volume, int]:
    """CreateVolume as the external-provisioner does: retry while the answer is UNAVAILABLE."""
    retries = 0

    def attempt() -> csi_pb2.Volume | None:
        nonlocal retries
        try:
            return client.create_volume(name, size, PARAMS)
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            retries += 1
            return None

    volume = wait_for(attempt, timeout=60, what=f"CreateVolume {name}")
    return volume, retries


def test_create_volume_boots_and_grows_a_file_system(env: KubeEnv, tmp_path: Path) -> None:
    kubeconfig = env.cluster.kubeconfig_for(
        env.cluster.service_account_client(NAMESPACE, "lustre-csi-controller")
    )
    driver = DriverProcess(
        tmp_path,
        mode="all",
        module=STANDIN_LAUNCHER,
        extra_args=[
            "--server-sets", "kubevirt", "--lustre-tools", "standin",
            "--kubeconfig", str(kubeconfig), "--namespace", NAMESPACE,
        ],
    )
    with driver, driver.client() as client:
        with pytest.raises(grpc.RpcError) as booting:
            client.create_volume("first", GiB, PARAMS)
        assert booting.value.code() == grpc.StatusCode.UNAVAILABLE
        lfs: dict[str, Any] = wait_for(lambda: env.lfs("csikv"), what="LustreFileSystem csikv")
        assert lfs["spec"]["fsname"] == "csikv"

        first, _ = _create_when_ready(client, "first", GiB)
        nids = first.volume_context["mgsNids"]
        assert nids.startswith("10.46.0.") and nids.endswith("@tcp")
        osts_before = (env.lfs("csikv") or {})["spec"].get("ostCount", 1)

        # 1 GiB + 3 GiB reserved needs 8 GiB at a 0.5 threshold: two OSTs of 2 GiB are not
        # enough, so the provisioner must add OSTs before this volume can exist.
        big, retries = _create_when_ready(client, "big", 3 * GiB)
        assert retries >= 1, "growth should have answered UNAVAILABLE at least once"
        grown = env.lfs("csikv") or {}
        assert grown["spec"]["ostCount"] > osts_before
        active = [o for o in grown["status"]["osts"] if o.get("state") == "Active"]
        assert len(active) * 2 * GiB >= 8 * GiB

        # Retrying a finished request is idempotent: same id, nothing more created.
        again = client.create_volume("big", 3 * GiB, PARAMS)
        assert again.volume_id == big.volume_id

        # The node side mounts it with the context the PV would carry.
        # The layouts kubelet uses (the node plugin accepts no others).
        staging = Path(kubelet_staging_path(str(driver.kubelet_dir), big.volume_id))
        target = driver.kubelet_dir / "pods/p/volumes/kubernetes.io~csi/big/mount"
        staging.mkdir(parents=True)
        target.parent.mkdir(parents=True)
        context = dict(big.volume_context)
        client.stage(big.volume_id, str(staging), context)
        client.publish(big.volume_id, str(staging), str(target), context)
        (target / "hello").write_text("through the stand-in")
        stats = client.volume_stats(big.volume_id, str(target))
        assert stats.usage[0].total == 3 * GiB
        client.unpublish(big.volume_id, str(target))
        client.unstage(big.volume_id, str(staging))

        # A made-up dedicated id naming this shared file system deletes nothing: the
        # LustreFileSystem stays (it names no volume in spec.dedicatedTo), and so do volumes.
        client.delete_volume("v1:dedicated:csikv:anything")
        client.delete_volume("v1:dedicated:csikv:big")
        survivor = env.lfs("csikv")
        assert survivor is not None and not survivor["metadata"].get("deletionTimestamp")
        assert len(client.list_volumes().entries) == 2

        client.delete_volume(big.volume_id)
        client.delete_volume(first.volume_id)
