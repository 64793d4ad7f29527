"""The end-to-end stack on this machine, all real processes except KubeVirt and Lustre:

  kube-apiserver + etcd + kube-controller-manager (PV binder, protection, expander)
  csi-provisioner, csi-resizer          (kubernetes-csi sidecars, leader election on)
  lustre-csi controller                 (--server-sets kubevirt: the embedded provisioner)
  lustre-csi node plugin                (its calls driven over its socket, as kubelet would)
  KubeVirt stand-in                     (moves VM status like virt-controller)

The controller and both sidecars run as the lustre-csi-controller ServiceAccount with the
RBAC in deploy/, so a missing permission fails these tests. The Lustre data of the file
systems lives in one stand-in directory shared by the controller and the node plugin.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from provisioner.kubevirt.kube import RestKube
from tests.support.driver import REPO, STANDIN_LAUNCHER, DriverProcess
from tests.support.kubevirt_standin import KubeVirtStandIn

NAMESPACE = "lustre-csi"
SERVER_NAMESPACE = "lustre-servers"  # the server VMs, as deploy/ has them
BIN = REPO / ".cache" / "bin"
SMALL_CLASS = {
    "apiVersion": "storage.k8s.io/v1",
    "kind": "StorageClass",
    "metadata": {"name": "lustre-small"},
    "provisioner": "lustre.csi.io",
    "reclaimPolicy": "Delete",
    "allowVolumeExpansion": True,
    "parameters": {
        "fsname": "small",
        "mdtSize": "1Gi",
        "ostSize": "2Gi",
        "minOsts": "1",
        "maxOsts": "6",
        "ostsPerOss": "2",
        "growthThreshold": "0.5",
        "image": "example.org/lustre:2.16",
        "networkAttachment": "lustre-storage",
        "ipPool": "10.47.0.0/24",
    },
}
BAD_CLASS = {
    "apiVersion": "storage.k8s.io/v1",
    "kind": "StorageClass",
    "metadata": {"name": "lustre-typo"},
    "provisioner": "lustre.csi.io",
    "parameters": {"fsname": "typo", "ostSzie": "2Gi"},
}


@dataclass
class Stack:
    cluster: Any
    core: Any  # kubernetes.client.CoreV1Api as admin
    admin: RestKube
    controller: DriverProcess
    node: DriverProcess
    standin_dir: Path
    sidecar_logs: dict[str, Path]

    def sidecar_log(self, name: str) -> str:
        return self.sidecar_logs[name].read_text(errors="replace")


def _sidecar(
    name: str, socket: Path, kubeconfig: Path, log: Path, extra: list[str]
) -> subprocess.Popen[bytes]:
    argv = [
        str(BIN / name),
        f"--kubeconfig={kubeconfig}",
        f"--csi-address={socket}",
        "--leader-election",
        f"--leader-election-namespace={NAMESPACE}",
        "--leader-election-lease-duration=4s",
        "--leader-election-renew-deadline=3s",
        "--leader-election-retry-period=1s",
        "--timeout=30s",
        "--v=3",
        *extra,
    ]
    handle = log.open("ab")
    return subprocess.Popen(argv, stdout=handle, stderr=handle)


@pytest.fixture(scope="session")
def stack(
    kube_cluster_with_controllers: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    from kubernetes import client as k8s

    cluster = kube_cluster_with_controllers
    cluster.apply(
        REPO / "deploy" / "crds" / "lustrefilesystems.yaml",
        REPO / "tests" / "support" / "kubevirt-crds.yaml",
        REPO / "deploy" / "rbac" / "provisioner.yaml",
        REPO / "deploy" / "rbac" / "controller-sidecars.yaml",
        REPO / "deploy" / "csidriver.yaml",
        REPO / "deploy" / "storageclasses.yaml",
        SMALL_CLASS,
        BAD_CLASS,
    )
    work = tmp_path_factory.mktemp("e2e")
    kubeconfig = cluster.kubeconfig_for(
        cluster.service_account_client(NAMESPACE, "lustre-csi-controller"), work / "sa.kubeconfig"
    )
    admin = RestKube(cluster.admin_client())
    standin = KubeVirtStandIn(admin, SERVER_NAMESPACE).start()
    standin_dir = work / "lustre-data"
    common = ["--lustre-tools", "standin", "--standin-dir", str(standin_dir)]
    controller = DriverProcess(
        work / "controller",
        mode="controller",
        module=STANDIN_LAUNCHER,
        extra_args=[
            *common,
            "--server-sets",
            "kubevirt",
            "--kubeconfig",
            str(kubeconfig),
            "--namespace",
            NAMESPACE,
            "--server-namespace",
            SERVER_NAMESPACE,
        ],
    ).start()
    node = DriverProcess(
        work / "node", mode="node", extra_args=common, module=STANDIN_LAUNCHER
    ).start()
    logs = {name: work / f"{name}.log" for name in ("csi-provisioner", "csi-resizer")}
    sidecars = [
        _sidecar(
            "csi-provisioner",
            controller.socket,
            kubeconfig,
            logs["csi-provisioner"],
            [
                "--extra-create-metadata",
                "--retry-interval-start=500ms",
                "--retry-interval-max=3s",
                "--worker-threads=4",
            ],
        ),
        _sidecar(
            "csi-resizer",
            controller.socket,
            kubeconfig,
            logs["csi-resizer"],
            [
                "--retry-interval-start=500ms",
                "--retry-interval-max=3s",
            ],
        ),
    ]
    stack = Stack(
        cluster, k8s.CoreV1Api(cluster.admin_client()), admin, controller, node, standin_dir, logs
    )
    try:
        yield stack
    finally:
        for process in sidecars:
            process.terminate()
        for process in sidecars:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        controller.stop()
        node.stop()
        standin.stop()
