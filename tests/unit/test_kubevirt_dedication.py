"""The KubeVirt provider deletes a LustreFileSystem only for the volume it is dedicated to.

An in-memory object store stands in for the API server: these checks are about which calls
the provider makes, not about the server (tests/provisioner runs the real one).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from csi.errors import AlreadyExists, FailedPrecondition, InProgress, InvalidArgument
from csi.server_sets import ServerSetTemplate
from provisioner.kubevirt.kube import ConflictError, Object, Resource
from provisioner.kubevirt.provider import KubeVirtServerSets

TEMPLATE = replace(ServerSetTemplate(), ip_pool="10.9.0.0/24")
MINE = "v1:dedicated:dmine:vol"


class MemoryKube:
    """Just enough of `Kube` for the provider: objects by (kind, name), deletes recorded."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], Object] = {}
        self.deleted: list[str] = []

    def get(self, resource: Resource, name: str, namespace: str | None = None) -> Object | None:
        found = self.objects.get((resource.kind, name))
        return copy.deepcopy(found) if found is not None else None

    def list(self, resource: Resource, namespace: str | None = None,
             label_selector: str | None = None) -> tuple[list[Object], str]:
        items = [copy.deepcopy(o) for (kind, _), o in self.objects.items() if kind == resource.kind]
        return items, "1"

    def create(self, resource: Resource, body: Object, namespace: str | None = None) -> Object:
        key = (resource.kind, body["metadata"]["name"])
        if key in self.objects:
            raise ConflictError(409, "AlreadyExists", "exists")
        stored = copy.deepcopy(body)
        stored["metadata"].setdefault("resourceVersion", "1")
        self.objects[key] = stored
        return copy.deepcopy(stored)

    def patch(self, resource: Resource, name: str, patch: Object, namespace: str | None = None,
              subresource: str | None = None) -> Object:
        return copy.deepcopy(self.objects[(resource.kind, name)])

    def replace(self, resource: Resource, name: str, body: Object,
                namespace: str | None = None) -> Object:
        raise NotImplementedError

    def delete(self, resource: Resource, name: str, namespace: str | None = None,
               grace_period_seconds: int | None = None) -> bool:
        if resource.kind == "LustreFileSystem":
            self.deleted.append(name)
        return self.objects.pop((resource.kind, name), None) is not None

    def watch(self, resource: Resource, namespace: str | None, label_selector: str | None,
              resource_version: str, timeout_seconds: int) -> Iterator[tuple[str, Object]]:
        return iter(())


@pytest.fixture
def kube() -> MemoryKube:
    return MemoryKube()


def _create(provider: KubeVirtServerSets, fsname: str, dedicated_to: str = "") -> dict[str, Any]:
    template = replace(TEMPLATE, extra={"dedicatedTo": dedicated_to} if dedicated_to else {})
    with pytest.raises(InProgress):  # created, not Ready yet
        provider.ensure_file_system(fsname, template)
    lfs = provider.find(fsname)
    assert lfs is not None
    return lfs


def test_a_shared_file_system_is_never_deleted_for_a_volume_id(kube: MemoryKube) -> None:
    provider = KubeVirtServerSets(kube)
    _create(provider, "shared")
    with pytest.raises(FailedPrecondition, match="shared file system"):
        provider.delete_file_system("shared", dedicated_to="v1:dedicated:shared:anything")
    with pytest.raises(InvalidArgument):
        provider.delete_file_system("shared", dedicated_to="")
    assert kube.deleted == []


def test_a_dedicated_file_system_is_deleted_only_for_its_own_volume(kube: MemoryKube) -> None:
    provider = KubeVirtServerSets(kube)
    lfs = _create(provider, "dmine", MINE)
    assert lfs["spec"]["dedicatedTo"] == MINE
    with pytest.raises(FailedPrecondition, match=f"dedicated to volume {MINE}"):
        provider.delete_file_system("dmine", dedicated_to="v1:dedicated:dmine:other")
    assert kube.deleted == []
    provider.delete_file_system("dmine", dedicated_to=MINE)
    assert kube.deleted == ["dmine"]


def test_an_existing_file_system_is_not_adopted_by_another_dedication(kube: MemoryKube) -> None:
    provider = KubeVirtServerSets(kube)
    _create(provider, "dmine", MINE)
    _create(provider, "shared")
    other = replace(TEMPLATE, extra={"dedicatedTo": "v1:dedicated:dmine:other"})
    with pytest.raises(AlreadyExists, match=f"dedicated to volume {MINE}"):
        provider.ensure_file_system("dmine", other)
    with pytest.raises(AlreadyExists, match="dedicated to volume"):
        provider.ensure_file_system("dmine", TEMPLATE)  # a shared volume in it
    with pytest.raises(AlreadyExists, match="shared file system"):
        provider.ensure_file_system("shared", other)
