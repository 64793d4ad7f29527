"""Recovery of a server whose node is down: force-delete its launcher pod (fencing).

KubeVirt (runStrategy Always) then starts the VM elsewhere with the same PVCs, MAC and
address, so the NID does not change. A pod is fenced only on evidence that its node is down:
the node carries the `node.kubernetes.io/out-of-service` taint (Kubernetes' non-graceful node
shutdown convention: an admin's word that the node is off), or this provisioner has itself
seen the node NotReady/Unknown, or its Node object missing, without a break for
`fence_after_seconds` on its own monotonic clock (`NodeDownClock`). The Node's
`lastTransitionTime` is never trusted (anyone allowed to patch node status can write it), and
the clock is kept in memory only: a restart or a new leader starts it again, which delays a
fence and never hastens one. Force-deleting the pod of a VM that is still running would let a
second copy of its Lustre targets start elsewhere.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from provisioner.kubevirt import manifests
from provisioner.kubevirt.events import EventRecorder
from provisioner.kubevirt.kube import NODES, PODS, Kube
from provisioner.kubevirt.layout import Layout
from provisioner.kubevirt.status import find_condition

OUT_OF_SERVICE_TAINT = "node.kubernetes.io/out-of-service"


class NodeDownClock:
    """How long this process has itself seen each node down (NotReady, Unknown or missing).

    Observations are made on our own monotonic clock whenever a reconcile looks at a node.
    A node seen Ready, or not looked at for longer than `max_gap_seconds` (it might have been
    Ready in between), starts again from zero: "down for N seconds" means N seconds of our own
    observations without a break.
    """

    def __init__(self, max_gap_seconds: float,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._max_gap = max_gap_seconds
        self._monotonic = monotonic
        self._down: dict[str, tuple[float, float]] = {}  # node -> (first seen down, last seen)

    def observe(self, name: str, node: dict[str, Any] | None) -> float | None:
        """Seconds we have seen `node` down without a break; None when it is Ready."""
        now = self._monotonic()
        if is_ready(node):
            self._down.pop(name, None)
            return None
        first, last = self._down.get(name, (now, now))
        if now - last > self._max_gap:
            first = now
        self._down[name] = (first, now)
        return now - first

    def forget(self) -> None:
        """Drop every observation (we were not watching: e.g. leadership was lost)."""
        self._down.clear()


class Fencing:
    """Fences the launcher pods of one file system's servers whose node is known down."""

    def __init__(self, kube: Kube, namespace: str, events: EventRecorder, *,
                 fence_after_seconds: float, confirm: Callable[[str], None],
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._kube = kube
        self._namespace = namespace
        self._events = events
        self._limit = fence_after_seconds
        self._confirm = confirm  # raises unless this process still leads
        # Observations further apart than the whole timeout prove nothing about the time
        # between them; while a fence is pending the reconcile looks again 4 times as often.
        self.node_down = NodeDownClock(fence_after_seconds, monotonic)

    def fence(self, lfs: dict[str, Any], fs: str,
              layout: Layout) -> tuple[list[str], float | None]:
        """Notes for the Degraded condition, and when to look again (None: no fence pending)."""
        pods = self._kube.list(PODS, self._namespace,
                               f"kubevirt.io=virt-launcher,{manifests.fs_selector(fs)}")[0]
        notes: list[str] = []
        requeue: float | None = None
        nodes: dict[str, dict[str, Any] | None] = {}
        down_for: dict[str, float | None] = {}
        limit = self._limit
        for pod in pods:
            node_name = (pod.get("spec") or {}).get("nodeName")
            if not node_name:
                continue
            if node_name not in nodes:
                nodes[node_name] = self._kube.get(NODES, node_name)
                down_for[node_name] = self.node_down.observe(node_name, nodes[node_name])
            server = pod["metadata"].get("labels", {}).get(manifests.LABEL_SERVER, "?")
            pod_name = pod["metadata"]["name"]
            state = "missing" if nodes[node_name] is None else "NotReady"
            if out_of_service(nodes[node_name]):
                evidence = f"node {node_name} carries the {OUT_OF_SERVICE_TAINT} taint"
            else:
                seen = down_for[node_name]
                if seen is None:
                    continue
                if seen < limit:
                    wait = limit - seen
                    notes.append(f"{server} launcher pod {pod_name} is on {state} node "
                                 f"{node_name}; fencing in {wait:.0f}s unless it recovers")
                    again = min(wait, limit / 4)
                    requeue = again if requeue is None else min(requeue, again)
                    continue
                evidence = (f"node {node_name} seen {state} by the provisioner for {seen:.0f}s "
                            f"(limit {limit:.0f}s)")
            self._confirm(f"force-delete launcher pod {pod_name}")
            self._kube.delete(PODS, pod_name, self._namespace, grace_period_seconds=0)
            record = layout.server(server)
            address = f" and address {record.address}" if record else ""
            self._events.record(lfs, "Warning", "Fenced", (
                f"force-deleted launcher pod {pod_name} of {server}: {evidence}; KubeVirt "
                f"restarts the VM on another node with the same disks{address}"))
            notes.append(f"{server} fenced off node {node_name}")
        return notes, requeue


def is_ready(node: dict[str, Any] | None) -> bool:
    ready = find_condition(((node or {}).get("status") or {}).get("conditions"), "Ready")
    return node is not None and ready.get("status") == "True"


def out_of_service(node: dict[str, Any] | None) -> bool:
    taints = ((node or {}).get("spec") or {}).get("taints") or []
    return any(t.get("key") == OUT_OF_SERVICE_TAINT for t in taints)
