"""Growth of a KubeVirt file system with OST pools, on the real API server: the whole file
system grows by the default OSTs it needs (a pool's OSTs are room, not default OSTs), and a
pool short of room grows by OSTs of its own block while the default OSTs stay as they are."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from csi.errors import InProgress, NotFound
from csi.server_sets import PoolCapacity
from provisioner.kubevirt.kube import LUSTRE_FILE_SYSTEMS, PVCS
from provisioner.kubevirt.manifests import fs_selector
from tests.provisioner.conftest import SERVER_NAMESPACE, KubeEnv, template, wait_for

pytestmark = pytest.mark.kube
GIB = 1 << 30


@pytest.fixture
def pooled(env: KubeEnv) -> Iterator[KubeEnv]:
    """A runner for the test; every file system the test made is deleted after it (later
    tests expect the shared address pool free again)."""
    env.runner()
    before = {i["metadata"]["name"] for i in env.admin.list(LUSTRE_FILE_SYSTEMS)[0]}
    yield env
    if not env.runners:  # the test stopped its runner: deletion needs one
        env.runner()
    made = {i["metadata"]["name"] for i in env.admin.list(LUSTRE_FILE_SYSTEMS)[0]} - before
    for name in made:
        env.admin.delete(LUSTRE_FILE_SYSTEMS, name)
    wait_for(lambda: all(env.lfs(name) is None for name in made), 30, f"{made} gone")


def _ready(env: KubeEnv, fsname: str, ost_pools: str, **changes: Any) -> None:
    provider = env.provider()
    wait_for(lambda: provider.ensure_file_system(
        fsname, template(min_osts=1, ost_pools=ost_pools, **changes)), 20, f"{fsname} serving")
    wait_for(lambda: env.lfs(fsname)["status"].get("phase") == "Ready", 20, "phase Ready")


def _osts(env: KubeEnv, fsname: str) -> set[tuple[str, str]]:
    return {(o["label"], o.get("pool", "")) for o in env.lfs(fsname)["status"]["osts"]}


def test_growing_a_file_system_with_pools_adds_only_the_default_osts_it_needs(pooled) -> None:
    env = pooled
    provider = env.provider()
    _ready(env, "pwhole", "flash:2", max_osts=4)
    # 1 default + 2 flash OSTs of 1Gi: 3Gi of room, 2.4Gi at the 80% threshold. 2.5Gi of
    # volumes need 3.2Gi: one default OST more (not three, as if flash's were default ones).
    with pytest.raises(InProgress, match=(
            r"^waiting for LustreFileSystem pwhole: growing to hold 2560Mi of volumes "
            r"\(OSTs 3/4 serving, 3Gi of 4Gi\)$")):
        provider.ensure_capacity("pwhole", int(2.5 * GIB))
    assert env.lfs("pwhole")["spec"]["ostCount"] == 2
    capacity = wait_for(lambda: provider.ensure_capacity("pwhole", int(2.5 * GIB)), 20, "room")
    assert (capacity.ost_count, capacity.total_bytes) == (4, 4 * GIB)
    assert _osts(env, "pwhole") == {("OST0000", ""), ("OST0001", ""),
                                    ("OST0400", "flash"), ("OST0401", "flash")}
    assert [m for m in env.events("pwhole", "GrowthRequested") if "spec.ostCount 1 -> 2" in m]
    assert env.lfs("pwhole")["spec"]["ostCount"] == 2


def test_the_growth_ceiling_counts_max_osts_against_the_default_osts_only(pooled) -> None:
    env = pooled
    _ready(env, "pceil", "flash:3", max_osts=4)
    # maxOsts 4 bounds the default OSTs: 3 more may come beside flash's 3 (and the first one).
    assert env.provider().capacity("pceil").max_total_bytes == 7 * GIB


def test_a_pool_short_of_room_grows_in_its_own_block_and_the_default_osts_do_not(
        pooled) -> None:
    env = pooled
    provider = env.provider()
    assert isinstance(provider, PoolCapacity)  # so the controller asks it to grow pools
    _ready(env, "ppool", "flash:2:nvme-block")
    # flash holds 1.6Gi at 80%; 2Gi of volumes on it need a third flash OST.
    with pytest.raises(InProgress, match=(
            r"^waiting for LustreFileSystem ppool: growing OST pool flash to hold 2Gi of "
            r"volumes \(OSTs 2/3 serving, 2Gi of 3Gi\)$")):
        provider.ensure_pool_capacity("ppool", "flash", 2 * GIB)
    spec = env.lfs("ppool")["spec"]
    assert (spec["ostCount"], spec["pools"]) == (
        1, [{"name": "flash", "ostCount": 3, "targetStorageClass": "nvme-block"}])
    assert env.events("ppool", "GrowthRequested") == [
        "2Gi of volumes on OST pool flash need 3Gi at the 80% threshold: "
        "spec.pools[flash].ostCount 2 -> 3"]
    wait_for(lambda: provider.ensure_pool_capacity("ppool", "flash", 2 * GIB) is None, 20,
             "flash grown")
    assert _osts(env, "ppool") == {("OST0000", ""), ("OST0400", "flash"),
                                   ("OST0401", "flash"), ("OST0402", "flash")}
    claims = env.admin.list(PVCS, SERVER_NAMESPACE, fs_selector("ppool"))[0]
    classes = {c["metadata"]["name"]: c["spec"].get("storageClassName") for c in claims}
    assert classes["ppool-ost0402"] == "nvme-block"
    # Asked again, or the whole file system for the same volumes: nothing more is requested.
    provider.ensure_pool_capacity("ppool", "flash", 2 * GIB)
    assert provider.ensure_capacity("ppool", 2 * GIB).ost_count == 4
    assert env.lfs("ppool")["spec"]["ostCount"] == 1
    assert len(env.events("ppool", "GrowthRequested")) == 1
    with pytest.raises(NotFound, match="no OST pool 'nvme'"):
        provider.ensure_pool_capacity("ppool", "nvme", 1)


def test_growing_the_file_system_counts_pool_osts_requested_but_not_yet_planned(
        pooled) -> None:
    env = pooled
    provider = env.provider()
    _ready(env, "ppend", "flash:2")
    for runner in env.runners:  # the leader goes: nothing plans what is requested now
        runner.stop()
    env.runners.clear()
    with pytest.raises(InProgress, match="growing OST pool flash"):
        provider.ensure_pool_capacity("ppend", "flash", 2 * GIB)
    # 2.5Gi of volumes fit in the 4Gi the flash OST on its way makes: no default OST is
    # asked for, the request waits for flash's.
    with pytest.raises(InProgress, match=r"\(OSTs 3/4 serving, 3Gi of 4Gi\)$"):
        provider.ensure_capacity("ppend", int(2.5 * GIB))
    assert env.lfs("ppend")["spec"]["ostCount"] == 1
    env.runner()
    capacity = wait_for(lambda: provider.ensure_capacity("ppend", int(2.5 * GIB)), 20, "room")
    assert (capacity.ost_count, env.lfs("ppend")["spec"]["ostCount"]) == (4, 1)
