"""deploy/overlays/local on the one-node cluster, and what the node tests ask of it."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import kubernetes.client
from kubernetes.client.exceptions import ApiException

from tests.node.node import LOCAL_SERVER_SET_DIR, LocalNode, NodeError, NodeKubeCluster
from tests.support.kube import REPO_ROOT

OVERLAY = REPO_ROOT / "deploy" / "overlays" / "local"
NAMESPACE = "lustre-csi"
DRIVER = "lustre.csi.io"
KUBELET_DIR = Path("/var/lib/kubelet")
T = TypeVar("T")


def wait_for(
    what: str,
    probe: Callable[[], T | None],
    timeout: float = 180,
    interval: float = 1.0,
    explain: Callable[[], str] | None = None,
) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` (and ``explain()``)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = f"\n{explain()}" if explain else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(interval)


def staged_overlay() -> Path:
    """deploy/overlays/local, staged where kustomize accepts it.

    kustomize refuses an overlay whose base (deploy/) contains it ("cycle detected"), so the
    overlay's files are copied to .cache/node-overlay/local with ``../..`` pointing at deploy/
    from there. The files applied are exactly the overlay's; only the base's path differs.
    """
    staged = REPO_ROOT / ".cache" / "node-overlay" / "local"
    if staged.exists():
        shutil.rmtree(staged)
    staged.mkdir(parents=True)
    for source in OVERLAY.iterdir():
        shutil.copy2(source, staged / source.name)
    kustomization = staged / "kustomization.yaml"
    text = kustomization.read_text()
    if "\n  - ../..\n" not in text:
        raise NodeError(f"{OVERLAY}/kustomization.yaml no longer has the base as '  - ../..'")
    kustomization.write_text(text.replace("\n  - ../..\n", "\n  - ../../../deploy\n"))
    return staged


@dataclass
class Stack:
    cluster: NodeKubeCluster
    node: LocalNode
    overlay: Path

    @property
    def core(self) -> kubernetes.client.CoreV1Api:
        return kubernetes.client.CoreV1Api(self.cluster._admin_api())

    @property
    def apps(self) -> kubernetes.client.AppsV1Api:
        return kubernetes.client.AppsV1Api(self.cluster._admin_api())

    @property
    def storage(self) -> kubernetes.client.StorageV1Api:
        return kubernetes.client.StorageV1Api(self.cluster._admin_api())

    def kubectl(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        result = self.cluster.kubectl(*args, check=False, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    # -- the driver's pods ------------------------------------------------------------------

    def pods(self, component: str) -> list[Any]:
        selector = f"app.kubernetes.io/name=lustre-csi,app.kubernetes.io/component={component}"
        return list(self.core.list_namespaced_pod(NAMESPACE, label_selector=selector).items)

    def node_pod(self) -> Any:
        pods = [p for p in self.pods("node") if p.metadata.deletion_timestamp is None]
        assert len(pods) == 1, [p.metadata.name for p in pods]
        return pods[0]

    def logs(self, pod: str, container: str, namespace: str = NAMESPACE) -> str:
        return self.kubectl("logs", "-n", namespace, pod, "-c", container).stdout

    def node_plugin_log(self) -> str:
        return self.logs(self.node_pod().metadata.name, "lustre-csi")

    def explain(self) -> str:
        """Pods, events and the node components' log tails: what a failed wait shows."""
        parts = [
            self.kubectl("get", "pods", "-A", "-o", "wide", check=False).stdout,
            self.kubectl("get", "events", "-A", "--sort-by=.lastTimestamp", check=False).stdout[
                -4000:
            ],
        ]
        for name in ("kubelet", "containerd"):
            path = self.cluster.log_path(name)
            if path.exists():
                parts.append(
                    f"--- {path} (tail)\n"
                    + "\n".join(path.read_text(errors="replace").splitlines()[-30:])
                )
        return "\n".join(parts)

    def wait_ready(self, timeout: float = 300) -> None:
        def ready() -> bool:
            deployment = self.apps.read_namespaced_deployment("lustre-csi-controller", NAMESPACE)
            daemonset = self.apps.read_namespaced_daemon_set("lustre-csi-node", NAMESPACE)
            want = deployment.spec.replicas or 0
            status, ds = deployment.status, daemonset.status
            return bool(
                status.available_replicas == want
                and status.updated_replicas == want
                and ds.desired_number_scheduled == 1
                and ds.number_ready == 1
                and ds.updated_number_scheduled == 1
            )

        wait_for(
            "the controller Deployment and node DaemonSet to be Ready",
            ready,
            timeout,
            explain=self.explain,
        )

    def healthz(self, address: str) -> tuple[int, str]:
        with urllib.request.urlopen(f"http://{address}/healthz", timeout=10) as response:
            return response.status, response.read().decode()

    # -- workloads --------------------------------------------------------------------------

    def pv_of(self, claim: str, namespace: str = "default") -> Any:
        pvc = self.core.read_namespaced_persistent_volume_claim(claim, namespace)
        return self.core.read_persistent_volume(pvc.spec.volume_name)

    def volume_dir(self, pv: Any) -> Path:
        """Where the volume's data lives on the local server set (on this host)."""
        attributes = pv.spec.csi.volume_attributes
        return (
            LOCAL_SERVER_SET_DIR
            / "filesystems"
            / attributes["fsname"]
            / "root"
            / attributes["subdir"].lstrip("/")
        )

    def wait_pod_phase(
        self, name: str, phase: str, namespace: str = "default", timeout: float = 240
    ) -> Any:
        def reached() -> Any:
            pod = self.core.read_namespaced_pod(name, namespace)
            return pod if pod.status.phase == phase else None

        return wait_for(f"pod {namespace}/{name} {phase}", reached, timeout, explain=self.explain)

    def wait_gone(self, read: Callable[[], Any], what: str, timeout: float = 240) -> None:
        def gone() -> bool:
            try:
                read()
            except ApiException as exc:
                if exc.status == 404:
                    return True
                raise
            return False

        wait_for(f"{what} to be gone", gone, timeout, explain=self.explain)

    def exec(self, pod: str, command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``sh -c command`` in the pod's container, through the API server and kubelet."""
        return self.kubectl("exec", "-n", "default", pod, "--", "sh", "-c", command, check=check)

    def wait_bound(self, claim: str, timeout: float = 240) -> Any:
        def bound() -> Any:
            pvc = self.core.read_namespaced_persistent_volume_claim(claim, "default")
            return pvc if pvc.status.phase == "Bound" else None

        return wait_for(f"PVC {claim} to bind", bound, timeout, explain=self.explain)

    def delete_workloads(self, pods: list[str], claims: list[str]) -> None:
        """Delete pods (waiting: kubelet unmounts first), then claims."""
        for kind, names in (("pod", pods), ("pvc", claims)):
            if names:
                self.kubectl(
                    "delete", kind, "-n", "default", *names, "--ignore-not-found",
                    "--wait=true", "--timeout=180s", check=False, timeout=240,
                )

    def remove(self) -> None:
        """Delete what the overlay made, waiting for the node plugin to stop."""
        self.kubectl(
            "delete",
            "-k",
            str(self.overlay),
            "--ignore-not-found",
            "--wait=true",
            "--timeout=120s",
            check=False,
            timeout=180,
        )


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path`` in this (the node's) mount namespace."""
    found = []
    with open("/proc/self/mountinfo", "rb") as table:
        for line in table:
            point = line.split()[4].decode(errors="surrogateescape")
            point = point.encode().decode("unicode_escape")
            if point == str(path) or point.startswith(f"{path}/"):
                found.append(point)
    return found


def deploy_overlay(cluster: NodeKubeCluster, node: LocalNode) -> Stack:
    overlay = staged_overlay()
    stack = Stack(cluster, node, overlay)
    result = stack.kubectl("apply", "--server-side", "-k", str(overlay), check=False)
    if result.returncode != 0:
        raise AssertionError(f"kubectl apply -k {OVERLAY} failed:\n{result.stderr}")
    stack.wait_ready()
    return stack


def staged_at(log: str, volume_id: str) -> list[str]:
    """Staging paths the node plugin logged for volume_id ("staged <id> (<source>) at <path>")."""
    pattern = re.compile(rf"staged {re.escape(volume_id)} \(.*\) at (\S+)$")
    return [m[1] for line in log.splitlines() if (m := pattern.search(line))]


def published_at(log: str, volume_id: str) -> list[str]:
    """Target paths the node plugin logged for volume_id ("published <id> at <path>")."""
    pattern = re.compile(rf"published {re.escape(volume_id)} at (\S+?)( \(ro\))?$")
    return [m[1] for line in log.splitlines() if (m := pattern.search(line))]


def calls_ok(log: str, method: str) -> int:
    """How many ``method`` calls the node plugin answered OK ("<method> -> OK in ...")."""
    return sum(1 for line in log.splitlines() if f": {method} -> OK in " in line)


def busybox_pod(
    name: str,
    claim: str,
    command: str = "sleep 3600",
    *,
    read_only: bool = False,
    security_context: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A pod of the example's busybox image with ``claim`` at /data."""
    spec: dict[str, Any] = {
        "terminationGracePeriodSeconds": 2,
        "containers": [
            {
                "name": "main",
                "image": "docker.io/library/busybox:1.37",
                "command": ["sh", "-c", command],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            }
        ],
        "volumes": [
            {"name": "data", "persistentVolumeClaim": {"claimName": claim, "readOnly": read_only}}
        ],
    }
    if security_context is not None:
        spec["securityContext"] = security_context
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }


def lustre_claim(name: str, size: str = "1Gi") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "storageClassName": "lustre",
            "accessModes": ["ReadWriteMany"],
            "resources": {"requests": {"storage": size}},
        },
    }
