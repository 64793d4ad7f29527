"""The startup taint goes from the node once its Lustre client is ready, and only then."""

from __future__ import annotations

import threading
from typing import Any

from csi.node.readiness import ClientReadiness, ClientReadinessWatch
from csi.node.taint import AGENT_NOT_READY_TAINT, NodeReadinessReporter, taint_removal

READY = ClientReadiness(True, "ClientReady", "lustre: 2.17.0; NIDs 10.0.0.9@tcp")
NOT_READY = ClientReadiness(False, "ModulesNotLoaded", "modprobe lustre")
STARTUP = {"key": AGENT_NOT_READY_TAINT, "effect": "NoExecute"}
OTHER = {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}


class OneNode:
    """The node plugin's view of its Node: applies JSON patches as the API server would."""

    def __init__(self, taints: list[dict[str, Any]], failures: int = 0) -> None:
        self.node: dict[str, Any] = {"metadata": {"name": "w1"}, "spec": {"taints": taints},
                                     "status": {"conditions": []}}
        self.failures = failures
        self.calls: list[str] = []

    def get(self, name: str) -> dict[str, Any]:
        return self.node

    def patch_status(self, name: str, patch: dict[str, Any]) -> None:
        self.calls.append("status")
        if self.failures:
            self.failures -= 1
            raise ConnectionError("API server away")
        self.node["status"]["conditions"] = patch["status"]["conditions"]

    def json_patch(self, name: str, operations: list[dict[str, Any]]) -> None:
        self.calls.append("taints")
        taints = self.node["spec"]["taints"]
        for operation in operations:
            index = int(operation["path"].rsplit("/", 1)[1])
            if operation["op"] == "test":
                assert taints[index] == operation["value"]
            else:
                del taints[index]


def test_ready_client_writes_the_condition_then_removes_only_the_startup_taint() -> None:
    node = OneNode([OTHER, STARTUP, {**STARTUP, "effect": "NoSchedule"}])
    NodeReadinessReporter(node, "w1")(READY)
    assert node.calls == ["status", "taints"]
    assert node.node["spec"]["taints"] == [OTHER]
    assert node.node["status"]["conditions"][0]["status"] == "True"


def test_a_client_not_ready_keeps_the_taint() -> None:
    node = OneNode([STARTUP])
    NodeReadinessReporter(node, "w1")(NOT_READY)
    assert node.node["spec"]["taints"] == [STARTUP]
    assert node.node["status"]["conditions"][0]["reason"] == "ModulesNotLoaded"


def test_a_node_without_the_taint_is_not_patched() -> None:
    node = OneNode([OTHER])
    NodeReadinessReporter(node, "w1")(READY)
    assert node.calls == ["status"] and taint_removal(node.node) == []


def test_a_failed_report_of_readiness_is_made_again_so_the_taint_does_not_stay() -> None:
    node = OneNode([STARTUP], failures=2)
    ready = threading.Event()
    watch = ClientReadinessWatch(lambda: READY, ready, NodeReadinessReporter(node, "w1"),
                                 interval_seconds=0.01)
    watch.start()
    try:
        assert ready.wait(5)
        watch._thread.join(5)  # the watch ends once the ready state was reported
    finally:
        watch.stop()
    assert node.node["spec"]["taints"] == []
    assert node.calls == ["status", "status", "status", "taints"]
