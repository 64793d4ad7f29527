"""The provisioner's one door to the Kubernetes API: a small protocol and its REST implementation.

Everything the provisioner does to the cluster (read, create, patch, delete, watch objects)
goes through `Kube`. `RestKube` speaks plain REST through the official client's connection
handling (auth, TLS, proxies) without its generated models, so custom resources, KubeVirt
objects and core objects are all plain dicts and one code path. Unit tests of reconcile
decisions may substitute a small in-memory implementation; scenario tests use `RestKube`
against a real kube-apiserver.

Optimistic concurrency: a merge patch that carries `metadata.resourceVersion` is refused with
`Conflict` when the object changed since it was read; the reconciler relies on this for every
status write that records an allocation (addresses, OST indices).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

from kubernetes.client import ApiClient
from kubernetes.watch.watch import iter_resp_lines

log = logging.getLogger(__name__)

Object = dict[str, Any]


@dataclass(frozen=True)
class Resource:
    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def typed(self, obj: Object) -> Object:
        """`obj` with its apiVersion and kind, which a list's items and some answers leave
        out and an Event's involvedObject names."""
        obj.setdefault("apiVersion", self.api_version)
        obj.setdefault("kind", self.kind)
        return obj

    def path(self, namespace: str | None = None, name: str | None = None,
             subresource: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{quote(namespace, safe='')}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{quote(name, safe='')}"
        if subresource:
            base += f"/{subresource}"
        return base


GROUP = "lustre.csi.io"
LUSTRE_FILE_SYSTEMS = Resource(GROUP, "v1alpha1", "lustrefilesystems", "LustreFileSystem", False)
VIRTUAL_MACHINES = Resource("kubevirt.io", "v1", "virtualmachines", "VirtualMachine", True)
VIRTUAL_MACHINE_INSTANCES = Resource(
    "kubevirt.io", "v1", "virtualmachineinstances", "VirtualMachineInstance", True
)
PVCS = Resource("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", True)
PVS = Resource("", "v1", "persistentvolumes", "PersistentVolume", False)
SECRETS = Resource("", "v1", "secrets", "Secret", True)
CONFIG_MAPS = Resource("", "v1", "configmaps", "ConfigMap", True)
PODS = Resource("", "v1", "pods", "Pod", True)
NODES = Resource("", "v1", "nodes", "Node", False)
EVENTS = Resource("", "v1", "events", "Event", True)
LEASES = Resource("coordination.k8s.io", "v1", "leases", "Lease", True)


class KubeError(Exception):
    """An API call failed; `status` is the HTTP status (0 when the server was not reached)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class NotFoundError(KubeError):
    """404."""


class ConflictError(KubeError):
    """409: AlreadyExists on create, or a stale resourceVersion on update/patch."""


class GoneError(KubeError):
    """410: a watch's resourceVersion is too old; list again."""


class Kube(Protocol):
    def get(self, resource: Resource, name: str, namespace: str | None = None) -> Object | None:
        """The object, or None when it does not exist."""
        ...

    def list(self, resource: Resource, namespace: str | None = None,
             label_selector: str | None = None) -> tuple[list[Object], str]:
        """Items and the list's resourceVersion (to start a watch from)."""
        ...

    def create(self, resource: Resource, body: Object, namespace: str | None = None) -> Object:
        """Raises ConflictError when the name is taken."""
        ...

    def patch(self, resource: Resource, name: str, patch: Object, namespace: str | None = None,
              subresource: str | None = None) -> Object:
        """JSON merge patch; ConflictError when `patch` carries a stale resourceVersion."""
        ...

    def replace(self, resource: Resource, name: str, body: Object,
                namespace: str | None = None) -> Object:
        """PUT; ConflictError on a stale resourceVersion."""
        ...

    def delete(self, resource: Resource, name: str, namespace: str | None = None,
               grace_period_seconds: int | None = None) -> bool:
        """Delete; False when it was already gone."""
        ...

    def watch(self, resource: Resource, namespace: str | None, label_selector: str | None,
              resource_version: str, timeout_seconds: int) -> Iterator[tuple[str, Object]]:
        """(type, object) events; ends after `timeout_seconds`; GoneError when too old."""
        ...


class RestKube:
    """`Kube` over an authenticated `kubernetes.client.ApiClient`."""

    def __init__(self, api_client: ApiClient, request_timeout: float = 30.0) -> None:
        self._client = api_client
        self._timeout = request_timeout
        # One ApiClient is shared by threads; urllib3's pool is thread-safe, the client's
        # lazily built pieces are not, so they are touched under a lock once.
        self._lock = threading.Lock()

    def _request(self, method: str, path: str, *, query: Mapping[str, str] | None = None,
                 body: Any = None, content_type: str = "application/json",
                 stream: bool = False, timeout: float | None = None) -> Any:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        with self._lock:
            _, url, headers, body, _ = self._client.param_serialize(
                method, path, query_params=list((query or {}).items()),
                header_params=headers, body=body, auth_settings=["BearerToken"],
            )
        response = self._client.call_api(
            method, url, header_params=headers, body=body,
            _request_timeout=timeout or self._timeout,
        )
        if response.status >= 300:
            raw = response.read()
            _raise_for(response.status, raw)
        if stream:
            return response.response
        raw = response.read()
        return json.loads(raw) if raw else {}

    def get(self, resource: Resource, name: str, namespace: str | None = None) -> Object | None:
        try:
            result: Object = self._request("GET", resource.path(namespace, name))
        except NotFoundError:
            return None
        return result

    def list(self, resource: Resource, namespace: str | None = None,
             label_selector: str | None = None) -> tuple[list[Object], str]:
        query = {"labelSelector": label_selector} if label_selector else {}
        result = self._request("GET", resource.path(namespace), query=query)
        items = result.get("items") or []
        for item in items:
            resource.typed(item)
        return items, result.get("metadata", {}).get("resourceVersion", "")

    def create(self, resource: Resource, body: Object, namespace: str | None = None) -> Object:
        result: Object = self._request("POST", resource.path(namespace), body=body)
        return result

    def patch(self, resource: Resource, name: str, patch: Object, namespace: str | None = None,
              subresource: str | None = None) -> Object:
        result: Object = self._request(
            "PATCH", resource.path(namespace, name, subresource), body=patch,
            content_type="application/merge-patch+json",
        )
        return result

    def replace(self, resource: Resource, name: str, body: Object,
                namespace: str | None = None) -> Object:
        result: Object = self._request("PUT", resource.path(namespace, name), body=body)
        return result

    def delete(self, resource: Resource, name: str, namespace: str | None = None,
               grace_period_seconds: int | None = None) -> bool:
        body: Object = {"kind": "DeleteOptions", "apiVersion": "v1",
                        "propagationPolicy": "Background"}
        if grace_period_seconds is not None:
            body["gracePeriodSeconds"] = grace_period_seconds
        try:
            self._request("DELETE", resource.path(namespace, name), body=body)
        except NotFoundError:
            return False
        return True

    def watch(self, resource: Resource, namespace: str | None, label_selector: str | None,
              resource_version: str, timeout_seconds: int) -> Iterator[tuple[str, Object]]:
        query = {"watch": "true", "resourceVersion": resource_version,
                 "timeoutSeconds": str(timeout_seconds), "allowWatchBookmarks": "true"}
        if label_selector:
            query["labelSelector"] = label_selector
        response = self._request("GET", resource.path(namespace), query=query, stream=True,
                                 timeout=timeout_seconds + 10)
        try:
            for line in iter_resp_lines(response):
                if not line:
                    continue
                event = json.loads(line)
                kind, obj = event.get("type", ""), event.get("object") or {}
                if kind == "ERROR":
                    _raise_for(int(obj.get("code") or 500), json.dumps(obj).encode())
                yield kind, obj
        finally:
            response.release_conn()


def _raise_for(status: int, raw: bytes) -> None:
    try:
        document = json.loads(raw)
        reason, message = document.get("reason", ""), document.get("message", "")
    except (ValueError, AttributeError):
        reason, message = "", raw.decode(errors="replace")[:500]
    if status == 404:
        raise NotFoundError(status, reason, message)
    if status == 409:
        raise ConflictError(status, reason, message)
    if status == 410:
        raise GoneError(status, reason, message)
    raise KubeError(status, reason, message)
