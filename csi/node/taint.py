"""The startup taint: a node is tainted until its Lustre client is ready, then untainted.

Admins register nodes with `lustre.csi.io/agent-not-ready:NoExecute` (kubelet
`--register-with-taints`), so no pod that needs Lustre lands on (or stays on) a node whose
client cannot mount it yet. The node plugin tolerates the taint, checks the client
(readiness.py) and, once it is ready, writes its LustreClientReady condition and then removes
the taint from its own Node, and only that taint: the admission policy in
deploy/rbac/node-status-policy.yaml refuses any other change, or another node.

The removal is a JSON patch that tests each taint it removes at its index first, so a
concurrent change of the taint list (another controller adding one) makes it fail and be
tried again instead of removing the wrong entry.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Protocol

from csi.node.readiness import ClientReadiness, node_condition_patch

log = logging.getLogger(__name__)
AGENT_NOT_READY_TAINT = "lustre.csi.io/agent-not-ready"
JSON_PATCH = "application/json-patch+json"


class NodeApi(Protocol):
    """The three calls the node plugin makes on its own Node."""

    def get(self, name: str) -> dict[str, Any]: ...

    def patch_status(self, name: str, patch: dict[str, Any]) -> None: ...

    def json_patch(self, name: str, operations: list[dict[str, Any]]) -> None: ...


class CoreNodeApi:
    """NodeApi over `kubernetes.client.CoreV1Api` (the node plugin's ServiceAccount)."""

    def __init__(self, core: Any) -> None:
        self._core = core

    def get(self, name: str) -> dict[str, Any]:
        # The JSON as the server wrote it: a patch's `test` compares values exactly, and the
        # client's models would turn a taint's timeAdded into another spelling of the time.
        response = self._core.read_node(name, _preload_content=False)
        return dict(json.loads(response.data))

    def patch_status(self, name: str, patch: dict[str, Any]) -> None:
        self._core.patch_node_status(name, patch)

    def json_patch(self, name: str, operations: list[dict[str, Any]]) -> None:
        self._core.patch_node(name, operations, _content_type=JSON_PATCH)


def taint_removal(node: dict[str, Any]) -> list[dict[str, Any]]:
    """JSON patch operations removing every startup taint of `node` (none: [])."""
    taints = (node.get("spec") or {}).get("taints") or []
    operations: list[dict[str, Any]] = []
    # Highest index first: removing one does not move the ones still to remove.
    for index in reversed(range(len(taints))):
        if taints[index].get("key") == AGENT_NOT_READY_TAINT:
            path = f"/spec/taints/{index}"
            operations += [{"op": "test", "path": path, "value": taints[index]},
                           {"op": "remove", "path": path}]
    return operations


class NodeReadinessReporter:
    """Reports the client's readiness on this node's Node: the condition, then the taint.

    Raises when a call fails, so ClientReadinessWatch reports again at its next check.
    """

    def __init__(self, api: NodeApi, node_name: str) -> None:
        self._api = api
        self._node_name = node_name

    def __call__(self, state: ClientReadiness) -> None:
        # The condition first: once the taint is gone, it already says why the node serves.
        self._api.patch_status(self._node_name, node_condition_patch(state))
        if not state.ready:
            return  # the taint stays: pods that need Lustre must not run here yet
        operations = taint_removal(self._api.get(self._node_name))
        if operations:
            self._api.json_patch(self._node_name, operations)
            log.info("Lustre client ready: removed taint %s from node %s",
                     AGENT_NOT_READY_TAINT, self._node_name)
