"""Events on LustreFileSystem objects (core v1 Events, so `kubectl describe lfs` shows them).

The file system is cluster-scoped, and the API server accepts Events about cluster-scoped
objects only in the `default` namespace (as with Node events), so that is where they go;
`kubectl describe lfs NAME` finds them there. Recording is best effort: a failed Event is
logged and never fails the step it describes.
"""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime
from typing import Any

from provisioner.kubevirt.kube import EVENTS, Kube, KubeError

log = logging.getLogger(__name__)
COMPONENT = "lustre-csi-provisioner"
CLUSTER_SCOPED_EVENTS_NAMESPACE = "default"


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class EventRecorder:
    def __init__(self, kube: Kube, instance: str = "") -> None:
        self._kube = kube
        self._instance = instance

    def record(self, obj: dict[str, Any], event_type: str, reason: str, message: str) -> None:
        meta = obj["metadata"]
        level = logging.WARNING if event_type == "Warning" else logging.INFO
        log.log(level, "%s %s: %s: %s", obj.get("kind", "object"), meta["name"], reason, message)
        stamp = now_rfc3339()
        namespace = meta.get("namespace") or CLUSTER_SCOPED_EVENTS_NAMESPACE
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{secrets.token_hex(8)}",
                         "namespace": namespace},
            "involvedObject": {
                "apiVersion": obj.get("apiVersion", ""),
                "kind": obj.get("kind", ""),
                "name": meta["name"],
                "uid": meta.get("uid", ""),
            },
            "type": event_type,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": self._instance or COMPONENT,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            self._kube.create(EVENTS, body, namespace)
        except KubeError as error:
            log.warning("could not record event %s for %s: %s", reason, meta["name"], error)
