"""pytest fixtures for the real local Kubernetes control plane (see tests/support/kube.py).

Registered from tests/conftest.py with ``pytest_plugins = ["tests.support.kube_fixture"]``.
Missing binaries fail the test (they are part of the dev setup, not optional): run
hack/setup.sh. Set LUSTRE_CSI_KEEP_KUBE=1 to keep the cluster's work dir (logs, certs).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.kube import SETUP_HINT, LocalKubeCluster, missing_binaries


def _start_cluster(with_controller_manager: bool) -> LocalKubeCluster:
    missing = missing_binaries(with_controller_manager=with_controller_manager)
    if missing:
        names = ", ".join(p.name for p in missing)
        pytest.fail(
            f"Kubernetes test binaries missing from {missing[0].parent} ({names}): {SETUP_HINT}",
            pytrace=False,
        )
    keep = os.environ.get("LUSTRE_CSI_KEEP_KUBE", "") not in ("", "0")
    cluster = LocalKubeCluster(with_controller_manager=with_controller_manager, keep_work_dir=keep)
    return cluster.start()


@pytest.fixture(scope="session")
def kube_cluster() -> Iterator[LocalKubeCluster]:
    """etcd + kube-apiserver with RBAC enforced, shared by the whole session."""
    cluster = _start_cluster(with_controller_manager=False)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def kube_cluster_with_controllers() -> Iterator[LocalKubeCluster]:
    """Like kube_cluster, plus kube-controller-manager (garbage collector, namespace
    deletion, ...); a separate cluster, started only by tests that ask for it."""
    cluster = _start_cluster(with_controller_manager=True)
    try:
        yield cluster
    finally:
        cluster.stop()
