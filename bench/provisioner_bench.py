"""The embedded provisioner on a real kube-apiserver, with the KubeVirt stand-in answering at once.

Two figures, each with 1, 10 and 100 file systems already present (Ready, with their VMs):

- creation: from the call that creates a new LustreFileSystem (the provider, as CreateVolume
  would) to every child object (VMs, target PVCs, cloud-init Secrets) existing and the plan
  (servers, OSTs) written to its status;
- growth: from the capacity request that raises spec.ostCount on a Ready file system to the new
  OST objects (PVCs and the new OSS VM) existing and planned in status.

The provisioner runs in this process as the lustre-csi-controller ServiceAccount with deploy/
RBAC, like the tests in tests/provisioner; completion is observed by polling the API server
every `POLL_SECONDS` (the figures' resolution).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

from bench.stats import summary
from csi.errors import InProgress
from csi.server_sets import ServerSetTemplate
from provisioner.kubevirt.kube import LUSTRE_FILE_SYSTEMS, PVCS, SECRETS, VIRTUAL_MACHINES, RestKube
from provisioner.kubevirt.manifests import fs_selector
from provisioner.kubevirt.provider import KubeVirtServerSets
from provisioner.kubevirt.runner import ProvisionerRunner, RunnerConfig
from tests.support.kube import REPO_ROOT, LocalKubeCluster, missing_binaries
from tests.support.kubevirt_standin import KubeVirtStandIn

NAMESPACE = "lustre-csi"  # the driver: its Lease and address claims
SERVER_NAMESPACE = "lustre-servers"  # the server VMs, their PVCs, Secrets and pods
POLL_SECONDS = 0.01
GIB = 1 << 30


def _template(index: int) -> ServerSetTemplate:
    # Each file system gets its own /24 so a hundred of them never exhaust a pool.
    return ServerSetTemplate(
        mdt_size_bytes=GIB, ost_size_bytes=GIB, osts_per_oss=2, min_osts=1, max_osts=8,
        image="example.org/lustre-server:2.16", cpu="1", memory="2Gi",
        network_attachment="lustre-storage", ip_pool=f"10.44.{index}.0/24")


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(InProgress):
            if predicate():
                return
        time.sleep(POLL_SECONDS)
    raise RuntimeError(f"timed out after {timeout}s waiting for {what}")


class ProvisionerBench:
    def __init__(self, log: Callable[[str], None]) -> None:
        self._log = log
        self.errors: list[str] = []

    def _counts(self, admin: RestKube, fs: str) -> tuple[int, int, int]:
        selector = fs_selector(fs)
        return tuple(  # type: ignore[return-value]
            sum(1 for i in admin.list(r, SERVER_NAMESPACE, selector)[0]
                if not i["metadata"].get("deletionTimestamp"))
            for r in (VIRTUAL_MACHINES, PVCS, SECRETS))

    def _planned(self, admin: RestKube, fs: str, osts: int) -> bool:
        lfs = admin.get(LUSTRE_FILE_SYSTEMS, fs) or {}
        status = lfs.get("status") or {}
        return len(status.get("osts") or []) == osts and bool(status.get("servers"))

    def run(self, levels: tuple[int, ...], samples: int) -> dict[str, Any]:
        missing = missing_binaries()
        if missing:
            raise RuntimeError(f"missing {', '.join(map(str, missing))}: run hack/setup.sh")
        cluster = LocalKubeCluster().start()
        try:
            return self._run(cluster, levels, samples)
        finally:
            cluster.stop()

    def _run(self, cluster: LocalKubeCluster, levels: tuple[int, ...], samples: int
             ) -> dict[str, Any]:
        cluster.apply(REPO_ROOT / "deploy" / "crds" / "lustrefilesystems.yaml",
                      REPO_ROOT / "tests" / "support" / "kubevirt-crds.yaml",
                      REPO_ROOT / "deploy" / "rbac" / "provisioner.yaml")
        admin = RestKube(cluster.admin_client())
        sa = RestKube(cluster.service_account_client(NAMESPACE, "lustre-csi-controller"))
        standin = KubeVirtStandIn(admin, SERVER_NAMESPACE).start()
        runner = ProvisionerRunner(sa, RunnerConfig(namespace=NAMESPACE,
                                                    server_namespace=SERVER_NAMESPACE,
                                                    retry_period_seconds=0.2))
        runner.start()
        provider = KubeVirtServerSets(sa)
        results: list[dict[str, Any]] = []
        try:
            if not runner.wait_until_leader(30):
                raise RuntimeError("the provisioner did not become leader")
            self._warm_up(provider, admin)
            present = 1  # the warm-up file system stays
            index = 1
            for level in levels:
                started = time.monotonic()
                while present < level:
                    self._make_ready(provider, f"f{index:03d}", index)
                    index += 1
                    present += 1
                self._log(f"  provisioner: {present} file systems present "
                          f"(filled in {time.monotonic() - started:.1f}s)")
                creation: list[float] = []
                growth: list[float] = []
                for _ in range(samples):
                    fs = f"m{index:03d}"
                    creation.append(self._time_creation(provider, admin, fs, index))
                    growth.append(self._time_growth(provider, admin, fs))
                    index += 1
                    present += 1
                # Samples stay as present file systems: the next level counts them.
                for figure, values in (("creation", creation), ("growth", growth)):
                    row = {"present": level, "figure": figure,
                           **summary(values, sum(values))}
                    results.append(row)
                    self._log(f"  provisioner {figure:8s} with {level:3d} present: "
                              f"p50 {row['p50_ms']:.0f} ms, max {row['max_ms']:.0f} ms "
                              f"({len(values)} samples)")
            self.errors.extend(standin.errors[:20])
        finally:
            runner.stop()
            standin.stop()
        return {"poll_seconds": POLL_SECONDS, "rows": results,
                "standin_errors": len(standin.errors)}

    def _warm_up(self, provider: KubeVirtServerSets, admin: RestKube) -> None:
        """One file system end to end first: the API server's watch caches start on first use."""
        watch_ready = threading.Event()

        def watch() -> None:
            watch_ready.set()
            for _ in admin.watch(LUSTRE_FILE_SYSTEMS, None, None, "0", 2):
                pass

        threading.Thread(target=watch, daemon=True).start()
        watch_ready.wait(5)
        self._make_ready(provider, "f000", 0)

    def _make_ready(self, provider: KubeVirtServerSets, fs: str, index: int) -> None:
        with contextlib.suppress(InProgress):
            provider.ensure_file_system(fs, _template(index))
        _wait(lambda: bool(provider.file_system(fs)), 60, f"{fs} Ready")

    def _time_creation(self, provider: KubeVirtServerSets, admin: RestKube, fs: str,
                       index: int) -> float:
        started = time.monotonic()
        with contextlib.suppress(InProgress):
            provider.ensure_file_system(fs, _template(index))
        # min_osts 1, osts_per_oss 2: mds0 + oss0, MDT + OST0 PVCs, two cloud-init Secrets.
        _wait(lambda: self._counts(admin, fs) == (2, 2, 2) and self._planned(admin, fs, 1),
              30, f"objects of {fs}")
        elapsed = time.monotonic() - started
        _wait(lambda: bool(provider.file_system(fs)), 60, f"{fs} Ready")
        return elapsed

    def _time_growth(self, provider: KubeVirtServerSets, admin: RestKube, fs: str) -> float:
        started = time.monotonic()
        try:
            provider.ensure_capacity(fs, int(2.5 * GIB))  # 80% threshold: 4 OSTs needed
            self.errors.append(f"growth of {fs}: ensure_capacity did not ask for OSTs")
        except InProgress:
            pass
        # OST1 hotplugged onto oss0, OST2-3 on a new oss1: 3 VMs, 5 PVCs, 3 Secrets.
        _wait(lambda: self._counts(admin, fs) == (3, 5, 3) and self._planned(admin, fs, 4),
              30, f"growth objects of {fs}")
        elapsed = time.monotonic() - started
        _wait(lambda: provider.ensure_capacity(fs, int(2.5 * GIB)).ost_count == 4, 60,
              f"{fs} grown")
        return elapsed
