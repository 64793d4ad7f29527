"""Fixtures for the provisioner's tests against the real kube-apiserver (marker `kube`).

`kube_env` installs our LustreFileSystem CRD, the test KubeVirt CRDs and deploy/rbac/
provisioner.yaml, and starts the KubeVirt stand-in (admin credentials: it plays KubeVirt and
the kubelets). Everything the provisioner does runs as the lustre-csi-controller
ServiceAccount, so a permission missing from deploy/ fails the test.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from csi.server_sets import ServerSetTemplate
from provisioner.kubevirt.kube import EVENTS, LUSTRE_FILE_SYSTEMS, RestKube
from provisioner.kubevirt.provider import KubeVirtServerSets
from provisioner.kubevirt.runner import ProvisionerRunner, RunnerConfig
from tests.support.kubevirt_standin import KubeVirtStandIn

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "lustre-csi"  # the driver's own: its ServiceAccounts, the Lease
SERVER_NAMESPACE = "lustre-servers"  # the server VMs, their PVCs, Secrets and pods
T = TypeVar("T")

FAST = RunnerConfig(
    namespace=NAMESPACE, server_namespace=SERVER_NAMESPACE, lease_duration_seconds=3,
    renew_deadline_seconds=2.0, retry_period_seconds=0.2, resync_seconds=1.0,
    fence_after_seconds=2.0, deletion_retry_seconds=0.3, watch_timeout_seconds=5,
)


def template(**changes: Any) -> ServerSetTemplate:
    base = dict(mdt_size_bytes=1 << 30, ost_size_bytes=1 << 30, osts_per_oss=2, min_osts=1,
                max_osts=6, image="example.org/lustre-server:2.16", cpu="1", memory="2Gi",
                network_attachment="lustre-storage", ip_pool="10.44.0.0/24")
    base.update(changes)
    return ServerSetTemplate(**base)


def wait_for(predicate: Callable[[], T], timeout: float = 15.0, what: str = "") -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
        except Exception as error:  # predicates may raise InProgress & co. while waiting
            last = error
        else:
            if result:
                return result
            last = result
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}: {last!r}")


@dataclass
class KubeEnv:
    cluster: Any
    admin: RestKube
    sa: RestKube
    standin: KubeVirtStandIn
    runners: list[ProvisionerRunner] = field(default_factory=list)

    def provider(self) -> KubeVirtServerSets:
        return KubeVirtServerSets(self.sa)

    def runner(self, config: RunnerConfig = FAST, kube: Any = None) -> ProvisionerRunner:
        runner = ProvisionerRunner(kube or self.sa, config)
        self.runners.append(runner)
        runner.start()
        return runner

    def lfs(self, name: str) -> dict[str, Any] | None:
        return self.admin.get(LUSTRE_FILE_SYSTEMS, name)

    def condition(self, name: str, kind: str) -> dict[str, Any]:
        lfs = self.lfs(name) or {}
        conditions = (lfs.get("status") or {}).get("conditions") or []
        return next((c for c in conditions if c["type"] == kind), {})

    def event_reasons(self, name: str) -> list[str]:
        items = self.admin.list(EVENTS, "default")[0]
        items = [e for e in items if e["involvedObject"].get("name") == name]
        items.sort(key=lambda e: e["metadata"]["creationTimestamp"])
        return [e["reason"] for e in items]

    def events(self, name: str, reason: str) -> list[str]:
        items = self.admin.list(EVENTS, "default")[0]
        return [e["message"] for e in items
                if e["involvedObject"].get("name") == name and e["reason"] == reason]


def _warm_up(admin: RestKube) -> None:
    """Pay the API server's one-time cost before anything is timed.

    On a fresh kube-apiserver the first write to a custom resource after the first watch of it
    takes ~2 s (the resource's watch cache starting); a long-running cluster never shows it.
    """
    def watch() -> None:
        for _ in admin.watch(LUSTRE_FILE_SYSTEMS, None, None, "0", 2):
            pass

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    time.sleep(0.1)
    admin.create(LUSTRE_FILE_SYSTEMS, {
        "apiVersion": "lustre.csi.io/v1alpha1", "kind": "LustreFileSystem",
        "metadata": {"name": "warm-up"},
        "spec": {"fsname": "warm-up", "mdtSize": "1Gi", "ostSize": "1Gi", "server": {"image": "x"},
                 "network": {"attachment": "n", "ipPool": "10.255.0.0/24"}},
    })
    admin.delete(LUSTRE_FILE_SYSTEMS, "warm-up")
    watcher.join()


@pytest.fixture(scope="session")
def kube_env(kube_cluster: Any) -> Iterator[KubeEnv]:
    with kube_environment(kube_cluster) as env:
        yield env


@contextlib.contextmanager
def kube_environment(kube_cluster: Any) -> Iterator[KubeEnv]:
    """The provisioner's CRDs and RBAC on `kube_cluster`, and the KubeVirt stand-in serving."""
    kube_cluster.apply(REPO / "deploy" / "crds" / "lustrefilesystems.yaml",
                       REPO / "tests" / "support" / "kubevirt-crds.yaml",
                       REPO / "deploy" / "rbac" / "provisioner.yaml")
    admin = RestKube(kube_cluster.admin_client())
    sa = RestKube(kube_cluster.service_account_client(NAMESPACE, "lustre-csi-controller"))
    _warm_up(admin)
    standin = KubeVirtStandIn(admin, SERVER_NAMESPACE).start()
    env = KubeEnv(kube_cluster, admin, sa, standin)
    try:
        yield env
    finally:
        standin.stop()


@pytest.fixture
def env(kube_env: KubeEnv) -> Iterator[KubeEnv]:
    """The session's environment; runners started by the test are stopped after it."""
    kube_env.standin.hold_ready = False
    yield kube_env
    for runner in kube_env.runners:
        runner.stop()
    kube_env.runners.clear()
    for node in kube_env.standin.node_names:
        kube_env.standin.revive_node(node)
