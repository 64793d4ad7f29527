"""End-to-end scenarios of the embedded provisioner against a real kube-apiserver.

The provisioner runs as the lustre-csi-controller ServiceAccount with deploy/rbac/
provisioner.yaml; the KubeVirt stand-in plays virt-controller and the kubelets.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from csi.controller.parameters import dedicated_fsname
from csi.errors import (
    CapacityExhausted,
    FailedPrecondition,
    InProgress,
    InvalidArgument,
    TeardownStarted,
)
from provisioner.kubevirt.addresses import CLAIMS_NAME
from provisioner.kubevirt.events import EventRecorder
from provisioner.kubevirt.kube import (
    CONFIG_MAPS,
    LUSTRE_FILE_SYSTEMS,
    PODS,
    PVCS,
    PVS,
    SECRETS,
    VIRTUAL_MACHINE_INSTANCES,
    VIRTUAL_MACHINES,
    KubeError,
)
from provisioner.kubevirt.manifests import fs_selector
from provisioner.kubevirt.reconciler import Reconciler, ReconcilerConfig
from tests.provisioner.conftest import FAST, NAMESPACE, SERVER_NAMESPACE, template, wait_for

pytestmark = pytest.mark.kube
GIB = 1 << 30


def children(env, fs: str) -> dict[str, list[str]]:
    """Objects of the file system that are not being deleted.

    (A deleted PVC lingers here until the pvc-protection controller, which this test cluster
    does not run, releases it.)
    """
    result = {}
    for resource in (VIRTUAL_MACHINES, PVCS, SECRETS):
        items = env.admin.list(resource, SERVER_NAMESPACE, fs_selector(fs))[0]
        result[resource.kind] = sorted(i["metadata"]["name"] for i in items
                                       if not i["metadata"].get("deletionTimestamp"))
    return result


def storage_ips(env, fs: str) -> dict[str, str]:
    vmis = env.admin.list(VIRTUAL_MACHINE_INSTANCES, SERVER_NAMESPACE, fs_selector(fs))[0]
    return {v["metadata"]["name"]: next(i["ipAddress"] for i in v["status"]["interfaces"]
                                        if i["name"] == "storage") for v in vmis}


def delete_pv(env, name: str) -> None:
    """Delete a PV as the cluster would: pv-protection lets an unbound PV go."""
    env.admin.delete(PVS, name)
    with contextlib.suppress(KubeError):
        env.admin.patch(PVS, name, {"metadata": {"finalizers": None}})


def ready(env, fs: str):
    return env.provider().file_system(fs)


def test_a_new_file_system_becomes_ready_with_its_servers_and_nids(env):
    env.runner()
    provider = env.provider()
    # The words a waiting PVC's Event shows (the external-provisioner records them).
    with pytest.raises(InProgress, match=r"^waiting for LustreFileSystem alpha: requested"):
        provider.ensure_file_system("alpha", template(min_osts=3))
    expected = {
        "VirtualMachine": ["alpha-mds0", "alpha-oss0", "alpha-oss1"],
        "PersistentVolumeClaim": ["alpha-mdt0000", "alpha-ost0000", "alpha-ost0001",
                                  "alpha-ost0002"],
        "Secret": ["alpha-mds0-cloudinit", "alpha-oss0-cloudinit", "alpha-oss1-cloudinit"],
    }
    wait_for(lambda: children(env, "alpha") == expected, 5, "all objects of the file system")
    endpoint = wait_for(lambda: ready(env, "alpha"), 15, "alpha serving")
    # Serving (the Ready condition) comes as soon as the MGS and one OST are up; the phase
    # turns Ready once every planned OST serves.
    wait_for(lambda: env.lfs("alpha")["status"]["phase"] == "Ready", 15, "alpha phase Ready")
    lfs = env.lfs("alpha")
    status = lfs["status"]
    assert endpoint.mgs_nids == ("10.44.0.1@tcp",)
    assert status["phase"] == "Ready"
    assert [(o["index"], o["oss"], o["state"]) for o in status["osts"]] == [
        (0, "oss0", "Active"), (1, "oss0", "Active"), (2, "oss1", "Active")]
    assert {s["name"]: s["nid"] for s in status["servers"]} == {
        "mds0": "10.44.0.1@tcp", "oss0": "10.44.0.2@tcp", "oss1": "10.44.0.3@tcp"}
    assert status["capacity"]["total"] == "3Gi"
    assert env.condition("alpha", "Ready")["observedGeneration"] == lfs["metadata"]["generation"]
    # The guests came up with the recorded static addresses and MACs.
    assert storage_ips(env, "alpha") == {"alpha-mds0": "10.44.0.1", "alpha-oss0": "10.44.0.2",
                                         "alpha-oss1": "10.44.0.3"}
    vm = env.admin.get(VIRTUAL_MACHINES, "alpha-oss0", SERVER_NAMESPACE)
    assert vm["spec"]["runStrategy"] == "Always"
    assert vm["metadata"]["ownerReferences"][0]["uid"] == lfs["metadata"]["uid"]
    storage_nic = vm["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"][1]
    assert storage_nic["macAddress"] == status["servers"][1]["mac"] == "02:4c:0a:2c:00:02"
    assert {"Requested", "Planned", "Created", "PhaseReady"} <= set(env.event_reasons("alpha"))
    # A later volume reuses the file system, with no new objects.
    assert provider.ensure_file_system("alpha", template(min_osts=1)) == endpoint
    assert children(env, "alpha") == expected


def test_create_volume_past_free_capacity_grows_then_succeeds(env):
    runner = env.runner()
    provider = env.provider()
    wait_for(lambda: provider.ensure_file_system("grow", template(max_osts=4)), 15, "Ready")
    assert provider.ensure_capacity("grow", int(0.5 * GIB)).ost_count == 1
    # 2.5 GiB of volumes at an 80% threshold need 4 OSTs: three are added.
    with pytest.raises(InProgress, match=(
            r"^waiting for LustreFileSystem grow: growing to hold 2560Mi of volumes "
            r"\(OSTs 1/4 serving, 1Gi of 4Gi\)$")):
        provider.ensure_capacity("grow", int(2.5 * GIB))
    wait_for(lambda: len(children(env, "grow")["PersistentVolumeClaim"]) == 5, 5, "new PVCs")
    wait_for(lambda: len(children(env, "grow")["VirtualMachine"]) == 3, 5, "new OSS")
    # The retry of the same request does not grow again; it succeeds once the OSTs serve.
    capacity = wait_for(lambda: provider.ensure_capacity("grow", int(2.5 * GIB)), 15, "room")
    assert (capacity.ost_count, capacity.total_bytes) == (4, 4 * GIB)
    lfs = env.lfs("grow")
    assert lfs["spec"]["ostCount"] == 4
    # One growth step, timed from its start to Ready again (lustre_csi_growth_total and the
    # grow bucket of lustre_csi_provisioning_duration_seconds).
    assert runner.metrics.growth.value("grow") == 1
    wait_for(lambda: runner.metrics.provisioning_seconds.count("grow") == 1, 15, "grow timed")
    osts = [(o["index"], o["oss"], o["attachment"]) for o in lfs["status"]["osts"]]
    # ostsPerOss 2: OST1 is hotplugged onto oss0, OST2 and OST3 boot with the new oss1.
    assert osts == [(0, "oss0", "boot"), (1, "oss0", "hotplug"), (2, "oss1", "boot"),
                    (3, "oss1", "boot")]
    oss0 = env.admin.get(VIRTUAL_MACHINES, "grow-oss0", SERVER_NAMESPACE)
    volumes = oss0["spec"]["template"]["spec"]["volumes"]
    assert {"name": "ost0001", "persistentVolumeClaim": {
        "claimName": "grow-ost0001", "hotpluggable": True}} in volumes
    assert "GrowthRequested" in env.event_reasons("grow")
    assert provider.ensure_capacity("grow", int(2.5 * GIB)).ost_count == 4
    # Past maxOsts: a clear, final error; nothing is requested.
    with pytest.raises(CapacityExhausted, match="maxOsts is 4"):
        provider.ensure_capacity("grow", 10 * GIB)
    assert env.lfs("grow")["spec"]["ostCount"] == 4


class Killed(BaseException):
    """The provisioner process dies: nothing after this point runs."""


class DyingKube:
    """The real client, killed at its Nth write (before or after the write reaches the server)."""

    def __init__(self, kube: Any, die_at: int, after: bool) -> None:
        self._kube = kube
        self._die_at = die_at
        self._after = after
        self.writes = 0

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._kube, name)
        if name not in ("create", "patch", "replace", "delete"):
            return method

        def write(*args: Any, **kwargs: Any) -> Any:
            if args and args[0].kind == "Event":
                return method(*args, **kwargs)
            self.writes += 1
            if self.writes == self._die_at and not self._after:
                raise Killed
            result = method(*args, **kwargs)
            if self.writes == self._die_at:
                raise Killed
            return result

        return write


def converge(env, reconciler: Reconciler, name: str, until, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(KubeError):
            reconciler.reconcile(name)
        if until():
            return
        time.sleep(0.05)
    raise AssertionError(f"{name} did not converge: {env.lfs(name)['status']}")


def test_killed_at_every_step_of_creation_and_growth_converges_without_leaks(env):
    provider = env.provider()
    config = ReconcilerConfig(namespace=SERVER_NAMESPACE,
                              fence_after_seconds=FAST.fence_after_seconds)

    def fresh() -> Reconciler:
        return Reconciler(env.sa, config, EventRecorder(env.sa))

    def is_ready(name: str) -> bool:
        status = (env.lfs(name) or {}).get("status") or {}
        return status.get("phase") == "Ready"

    def check(name: str, osts: int) -> None:
        status = env.lfs(name)["status"]
        assert [o["index"] for o in status["osts"]] == list(range(osts))
        assert status["nextOstIndex"] == osts
        addresses = [s["address"] for s in status["servers"]]
        assert len(set(addresses)) == len(addresses)
        servers = sorted(s["name"] for s in status["servers"])
        assert children(env, name) == {
            "VirtualMachine": [f"{name}-{s}" for s in servers],
            "PersistentVolumeClaim": sorted([f"{name}-mdt0000"]
                                            + [f"{name}-ost{i:04x}" for i in range(osts)]),
            "Secret": [f"{name}-{s}-cloudinit" for s in servers],
        }
        assert set(storage_ips(env, name).values()) == set(addresses)
        # Clean up, so later tests' runners do not wade through dozens of file systems.
        env.admin.delete(LUSTRE_FILE_SYSTEMS, name)
        converge(env, fresh(), name, lambda: env.lfs(name) is None)
        claims = (env.admin.get(CONFIG_MAPS, CLAIMS_NAME, NAMESPACE) or {}).get("data") or {}
        assert not [a for a, owner in claims.items() if owner.startswith(f"{name}/")], claims

    def kill_at(step: int, after: bool, name: str, done: Callable[[], bool]) -> int:
        """Reconcile with a client killed at its `step`th write: 1 if it was killed, 0 if the
        run converged on fewer writes first."""
        dying_kube = DyingKube(env.sa, step, after)
        dying = Reconciler(dying_kube, config, EventRecorder(env.sa))
        for _ in range(50):
            try:
                dying.reconcile(name)
            except Killed:
                return 1
            if done():
                assert dying_kube.writes < step
                return 0
        raise AssertionError(f"step {step}: neither killed nor converged")

    def request(name: str, **changes: Any) -> None:
        with contextlib.suppress(InProgress):
            provider.ensure_file_system(name, template(**changes))

    # How many writes a clean creation and growth take.
    request("kcount", min_osts=2)
    counter = DyingKube(env.sa, die_at=10**6, after=False)
    converge(env, Reconciler(counter, config, EventRecorder(env.sa)), "kcount",
             lambda: is_ready("kcount"))
    create_writes = counter.writes
    assert create_writes >= 8

    kills = 0
    for after in (False, True):
        for step in range(1, create_writes + 1):
            name = f"k{int(after)}c{step}"
            request(name, min_osts=2)
            kills += kill_at(step, after, name, lambda n=name: is_ready(n))
            converge(env, fresh(), name, lambda n=name: is_ready(n))
            check(name, 2)
    # A run may need a write less than the counted one (the stand-in's VMs can become ready
    # between passes), so its last step may find nothing to kill; every other step must.
    assert kills >= 2 * (create_writes - 1), (kills, create_writes)

    # Growth: 2 -> 4 OSTs (one hotplug on oss0, one new OSS), killed at each write.
    grow_base = "kgrow"
    request(grow_base, min_osts=2, osts_per_oss=3)
    converge(env, fresh(), grow_base, lambda: is_ready(grow_base))
    with pytest.raises(InProgress):
        provider.ensure_capacity(grow_base, int(3.2 * GIB))
    counter = DyingKube(env.sa, die_at=10**6, after=False)
    converge(env, Reconciler(counter, config, EventRecorder(env.sa)), grow_base,
             lambda: is_ready(grow_base) and env.lfs(grow_base)["status"]["readyOsts"] == 4)
    grow_writes = counter.writes
    kills = 0
    for after in (False, True):
        for step in range(1, grow_writes + 1):
            name = f"k{int(after)}g{step}"
            request(name, min_osts=2, osts_per_oss=3)
            converge(env, fresh(), name, lambda n=name: is_ready(n))
            with pytest.raises(InProgress):
                provider.ensure_capacity(name, int(3.2 * GIB))
            kills += kill_at(step, after, name, lambda n=name: is_ready(n)
                             and env.lfs(n)["status"]["readyOsts"] == 4)
            converge(env, fresh(), name, lambda n=name: is_ready(n)
                     and env.lfs(n)["status"]["readyOsts"] == 4)
            assert provider.ensure_capacity(name, int(3.2 * GIB)).ost_count == 4
            check(name, 4)
    assert kills >= 2 * (grow_writes - 1), (kills, grow_writes)


def test_node_loss_fences_the_server_and_it_returns_with_the_same_address(env):
    env.runner()
    # Generous waits: on a machine busy with VMs a reconcile pass can take seconds.
    wait_for(lambda: env.provider().ensure_file_system("fence", template()), 60, "Ready")
    vmi = env.admin.get(VIRTUAL_MACHINE_INSTANCES, "fence-oss0", SERVER_NAMESPACE)
    node, ips_before = vmi["status"]["nodeName"], storage_ips(env, "fence")
    pod_before = env.admin.list(PODS, SERVER_NAMESPACE, "vm.kubevirt.io/name=fence-oss0")[0]
    env.standin.kill_node(node)

    wait_for(lambda: env.condition("fence", "Degraded").get("status") == "True", 60, "Degraded")
    assert "oss0" in env.condition("fence", "Degraded")["message"]
    assert env.lfs("fence")["status"]["phase"] == "Degraded"
    with pytest.raises(InProgress, match=r"^waiting for LustreFileSystem fence: servers not "
                                         r"ready \(.*\): .*oss0 \(fence-oss0\) is not ready"):
        ready(env, "fence")
    # After the 2 s timeout the launcher pod is force-deleted and the VM starts elsewhere.
    fenced_pod = pod_before[0]["metadata"]["name"]
    wait_for(lambda: any(fenced_pod in m for m in env.events("fence", "Fenced")), 60,
             "Fenced event naming the launcher pod")
    wait_for(lambda: ready(env, "fence"), 60, "Ready again")
    vmi = env.admin.get(VIRTUAL_MACHINE_INSTANCES, "fence-oss0", SERVER_NAMESPACE)
    assert vmi["status"]["nodeName"] != node
    assert storage_ips(env, "fence") == ips_before
    claims = [v["persistentVolumeClaim"]["claimName"] for v in vmi["spec"]["volumes"]
              if "persistentVolumeClaim" in v]
    assert claims == ["fence-ost0000"]
    assert env.condition("fence", "Degraded")["status"] == "False"
    reasons = env.event_reasons("fence")
    assert {"ServerNotReady", "Fenced", "ServerRecovered", "PhaseDegraded"} <= set(reasons)


class Partitioned:
    """A replica cut off from the API server: every call fails once `cut` is set."""

    def __init__(self, kube: Any) -> None:
        self._kube = kube
        self.cut = False

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._kube, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.cut:
                raise KubeError(0, "Unreachable", "connection refused")
            return method(*args, **kwargs)

        return call


def test_leader_handover_when_the_leader_stops_renewing(env):
    link = Partitioned(env.sa)
    first = env.runner(replace(FAST, identity="replica-1"), kube=link)
    assert first.wait_until_leader(5)
    second = env.runner(replace(FAST, identity="replica-2"))
    time.sleep(1.0)
    assert not second.is_leader  # the first one renews
    wait_for(lambda: env.provider().ensure_file_system("lead1", template()), 15,
             "lead1 Ready under replica-1")

    link.cut = True  # replica-1 can no longer renew
    wait_for(lambda: not first.is_leader, 5, "replica-1 steps down")
    assert second.wait_until_leader(10)
    wait_for(lambda: env.provider().ensure_file_system("lead2", template()), 15,
             "lead2 Ready under replica-2")

    # A graceful stop hands over at once (the lease is released, not left to expire).
    link.cut = False
    second.stop()
    assert first.wait_until_leader(3)


def test_deleting_a_file_system_in_use_is_refused_until_its_volumes_are_gone(env):
    env.runner()
    provider = env.provider()
    with pytest.raises(InProgress):
        provider.ensure_file_system("inuse", template())
    wait_for(lambda: ready(env, "inuse"), 15, "Ready")
    env.admin.create(PVS, {
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv-inuse-1"},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"],
                 "csi": {"driver": "lustre.csi.io", "volumeHandle": "v1:shared:inuse:vol-1"}},
    })
    env.admin.delete(LUSTRE_FILE_SYSTEMS, "inuse")
    wait_for(lambda: env.condition("inuse", "DeletionBlocked").get("status") == "True", 5)
    message = env.condition("inuse", "DeletionBlocked")["message"]
    assert "pv-inuse-1" in message and "spec.forceDelete" in message
    assert env.events("inuse", "DeletionBlocked")
    with pytest.raises(FailedPrecondition, match="shared file system"):
        provider.delete_file_system("inuse", dedicated_to="vol-1")
    time.sleep(1.0)
    assert len(children(env, "inuse")["VirtualMachine"]) == 2  # nothing was torn down

    delete_pv(env, "pv-inuse-1")
    wait_for(lambda: env.lfs("inuse") is None, 10, "deleted once unused")
    assert children(env, "inuse") == {"VirtualMachine": [], "PersistentVolumeClaim": [],
                                      "Secret": []}


def test_force_delete_removes_a_file_system_in_use(env):
    env.runner()
    provider = env.provider()
    wait_for(lambda: provider.ensure_file_system("forced", template()), 15, "Ready")
    env.admin.create(PVS, {
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv-static-forced"},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"],
                 "csi": {"driver": "lustre.csi.io", "volumeHandle": "admin-made",
                         "volumeAttributes": {"fsname": "forced"}}},
    })
    env.admin.patch(LUSTRE_FILE_SYSTEMS, "forced", {"spec": {"forceDelete": True}})
    env.admin.delete(LUSTRE_FILE_SYSTEMS, "forced")
    wait_for(lambda: env.lfs("forced") is None, 10, "forced deletion")
    assert children(env, "forced")["VirtualMachine"] == []
    assert any("forced" in m for m in env.events("forced", "Deleting"))
    delete_pv(env, "pv-static-forced")


def test_dedicated_volume_gets_its_own_file_system_and_tears_it_down(env):
    env.runner()
    provider = env.provider()
    volume = "pvc-0b7c9e4a-dedicated"
    fsname = dedicated_fsname(volume)
    dedicated = template(extra={"dedicatedTo": volume})
    endpoint = wait_for(lambda: provider.ensure_file_system(fsname, dedicated), 15, "Ready")
    assert endpoint.fsname == fsname
    assert env.lfs(fsname)["spec"]["dedicatedTo"] == volume
    env.admin.create(PVS, {
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": volume},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"],
                 "persistentVolumeReclaimPolicy": "Delete",
                 "csi": {"driver": "lustre.csi.io",
                         "volumeHandle": f"v1:dedicated:{fsname}:{volume}"}},
    })
    # While its PV is bound (not released), even the owner cannot delete it by accident.
    # Its first answer says the (confirmed) teardown started, or that it is blocked.
    with pytest.raises((TeardownStarted, FailedPrecondition)):
        provider.delete_file_system(fsname, dedicated_to=volume)
    wait_for(lambda: env.condition(fsname, "DeletionBlocked").get("status") == "True", 5)
    # The claim is deleted: the PV is Released and DeleteVolume tears the set down.
    env.admin.patch(PVS, volume, {"status": {"phase": "Released"}}, subresource="status")
    wait_for(lambda: provider.delete_file_system(fsname, dedicated_to=volume) is None, 10,
             "teardown")
    assert provider.find(fsname) is None
    assert children(env, fsname)["VirtualMachine"] == []
    delete_pv(env, volume)


@pytest.mark.parametrize(("spec_change", "field"), [
    ({"fsname": "toolongname"}, "spec.fsname"),
    ({"fsname": "bad.name"}, "spec.fsname"),
    ({"ostSize": "0"}, "spec.ostSize"),
    ({"mdtSize": "512Mi"}, "spec.mdtSize"),
])
def test_bad_specs_are_rejected_at_admission_naming_the_field(env, spec_change, field):
    body = {"apiVersion": "lustre.csi.io/v1alpha1", "kind": "LustreFileSystem",
            "metadata": {"name": "badspec"},
            "spec": {"fsname": "bad", "mdtSize": "1Gi", "ostSize": "1Gi",
                     "server": {"image": "x"},
                     "network": {"attachment": "n", "ipPool": "10.9.0.0/24"}, **spec_change}}
    with pytest.raises(KubeError) as error:
        env.sa.create(LUSTRE_FILE_SYSTEMS, body)
    assert error.value.status == 422
    assert field in error.value.message


def test_too_small_ip_pool_is_reported_naming_the_field(env):
    env.runner()
    # The schema cannot count addresses; the provisioner reports it in status.
    env.sa.create(LUSTRE_FILE_SYSTEMS, {
        "apiVersion": "lustre.csi.io/v1alpha1", "kind": "LustreFileSystem",
        "metadata": {"name": "smallpool"},
        "spec": {"fsname": "smallpl", "mdtSize": "1Gi", "ostSize": "1Gi", "maxOsts": 8,
                 "server": {"image": "x"},
                 "network": {"attachment": "n", "ipPool": "10.9.0.10-10.9.0.12/24"}}})
    wait_for(lambda: (env.lfs("smallpool").get("status") or {}).get("phase") == "Failed", 5)
    message = env.condition("smallpool", "Ready")["message"]
    assert "spec.network.ipPool" in message and "holds 3 address(es)" in message
    assert env.events("smallpool", "InvalidSpec")
    assert children(env, "smallpool")["VirtualMachine"] == []
    with pytest.raises(FailedPrecondition, match=r"spec\.network\.ipPool"):
        env.provider().file_system("smallpl")
    # Through a StorageClass the same problem names the parameter, and nothing is created.
    with pytest.raises(InvalidArgument, match=r"parameter ipPool \(spec.network.ipPool\)"):
        env.provider().ensure_file_system("tiny", template(ip_pool="10.9.1.0/30"))
    assert env.provider().find("tiny") is None
    env.admin.delete(LUSTRE_FILE_SYSTEMS, "smallpool")
