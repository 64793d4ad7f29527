"""The node tier: a one-node cluster with a real kubelet and containerd (see node.py) running
our images from deploy/overlays/local. Marked ``node``; it never skips: when it cannot run
here it fails and says why (build it with hack/node/build.sh). Set LUSTRE_CSI_KEEP_KUBE=1 to
keep the cluster's work dir (logs of every component).

It runs when asked for: `pytest tests/node` (or a file in it), `-m node`, or
LUSTRE_CSI_NODE_TIER=1. A plain `pytest` of the whole suite deselects it, visibly ("N
deselected" in the summary), because it needs its own build step (hack/node/build.sh) and
minutes of its own."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.node.node import LocalNode, NodeError, NodeKubeCluster, one_node_cluster
from tests.node.stack import Stack, deploy_overlay
from tests.support.own_process_tier import keep_to_its_own_process

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    keep_to_its_own_process(config, items, HERE, ("node",), "LUSTRE_CSI_NODE_TIER")


@pytest.fixture(scope="package")
def node_cluster() -> Iterator[tuple[NodeKubeCluster, LocalNode]]:
    keep = os.environ.get("LUSTRE_CSI_KEEP_KUBE", "") not in ("", "0")
    work_dir = Path(tempfile.mkdtemp(prefix="lustre-csi-node-")) if keep else None
    failure = None
    try:
        with one_node_cluster(work_dir) as (cluster, node):
            yield cluster, node
    except NodeError as exc:
        failure = str(exc)
    if failure is not None:
        pytest.fail(failure, pytrace=False)


@pytest.fixture(scope="package")
def stack(node_cluster: tuple[NodeKubeCluster, LocalNode]) -> Iterator[Stack]:
    """deploy/overlays/local applied with `kubectl apply -k`, controller and node pods Ready."""
    cluster, node = node_cluster
    deployed = deploy_overlay(cluster, node)
    try:
        yield deployed
    finally:
        deployed.remove()
