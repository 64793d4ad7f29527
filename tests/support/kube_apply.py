"""Server-side apply of manifests (dicts, or YAML files with one or more documents)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError
from kubernetes.dynamic.resource import ResourceInstance

Manifest = Mapping[str, Any] | str | os.PathLike[str]


def load_manifests(manifests: Iterable[Manifest]) -> list[dict[str, Any]]:
    """Every document, in order; a List's items one by one."""
    docs: list[dict[str, Any]] = []
    for item in manifests:
        if isinstance(item, Mapping):
            docs.append(dict(item))
            continue
        path = Path(item)
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is None:
                continue
            if not isinstance(doc, dict):
                raise ValueError(f"{path}: a YAML document is not a mapping")
            if doc.get("kind") == "List":
                docs.extend(doc.get("items") or [])
            else:
                docs.append(doc)
    return docs


def find_resource(dynamic: DynamicClient, api_version: str, kind: str, timeout: float) -> Any:
    """The API resource for a kind, refreshing discovery while a new CRD's API appears."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return dynamic.resources.get(api_version=api_version, kind=kind)
        except ResourceNotFoundError:
            if time.monotonic() > deadline:
                raise
            # A CRD applied a moment ago (maybe by someone else): refresh discovery.
            dynamic.resources.invalidate_cache()
            time.sleep(0.2)


def apply_manifests(
    dynamic: DynamicClient,
    manifests: Iterable[Manifest],
    *,
    namespace: str | None,
    field_manager: str,
    timeout: float,
    wait_for_crd: Callable[[str, float], None],
) -> list[ResourceInstance]:
    """Apply in order; namespaced objects without a namespace go to `namespace` ("default").

    After a CustomResourceDefinition it waits for the CRD to be established, so a later
    document may be one of its objects.
    """
    applied: list[ResourceInstance] = []
    for doc in load_manifests(manifests):
        api_version, kind = doc.get("apiVersion"), doc.get("kind")
        name = (doc.get("metadata") or {}).get("name")
        if not api_version or not kind or not name:
            raise ValueError(f"manifest needs apiVersion, kind and metadata.name: {doc}")
        resource = find_resource(dynamic, str(api_version), str(kind), timeout)
        target_namespace = None
        if resource.namespaced:
            target_namespace = doc["metadata"].get("namespace") or namespace or "default"
            doc = {**doc, "metadata": {**doc["metadata"], "namespace": target_namespace}}
        applied.append(
            dynamic.server_side_apply(
                resource,
                body=doc,
                name=name,
                namespace=target_namespace,
                field_manager=field_manager,
                force_conflicts=True,
            )
        )
        if kind == "CustomResourceDefinition":
            wait_for_crd(str(name), timeout)
            dynamic.resources.invalidate_cache()
    return applied
