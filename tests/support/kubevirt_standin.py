"""A test-side stand-in for KubeVirt's virt-controller (and the kubelets it relies on).

It runs against a real kube-apiserver with admin credentials and moves objects the way
KubeVirt does, polling every `interval` seconds:

- a VirtualMachine with `runStrategy: Always` and no VirtualMachineInstance gets one (same
  name, owned by the VM, spec from the VM template) and a launcher pod
  (`virt-launcher-<vm>-<suffix>`, labels `kubevirt.io=virt-launcher` plus the template's
  labels) bound to a Ready node, preferring nodes with fewer launcher pods;
- the VMI reports phase Running, its node, and its interfaces: the storage interface with the
  static IP the guest would configure from the cloud-init network data in the VM's Secret,
  and the MAC from the VM spec; hotpluggable volumes in the VM template are attached to the
  running VMI (volumeStatus phase Ready), as declarative hotplug does;
- the VM's status mirrors it (`printableStatus`, `ready`, a Ready condition);
- a node can be killed (`kill_node`): its Ready condition goes Unknown and the VMs on it stop
  being ready, but their launcher pods stay (no kubelet confirms their deletion); when a
  launcher pod disappears (fenced), the VMI fails and the VM gets a new VMI on another node;
  `revive_node` brings it back (recreated if its Node was deleted, taints removed);
- a deleted VM loses its VMI and pod.

`hold_ready` keeps new VMIs from becoming ready (a VM that is slow to boot); `guest_ready`,
when set, is asked per VM name, as KubeVirt follows a VM's readiness probe (the Lustre tier
answers from the real guests).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import secrets
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import yaml

from provisioner.kubevirt.kube import (
    NODES,
    PODS,
    SECRETS,
    VIRTUAL_MACHINE_INSTANCES,
    VIRTUAL_MACHINES,
    ConflictError,
    Kube,
    KubeError,
    NotFoundError,
    Resource,
)

log = logging.getLogger(__name__)
SERVICE_ACCOUNTS = Resource("", "v1", "serviceaccounts", "ServiceAccount", True)


def _stamp(ago: float = 0.0) -> str:
    return (datetime.now(UTC) - timedelta(seconds=ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


class KubeVirtStandIn:
    def __init__(self, kube: Kube, namespace: str, nodes: tuple[str, ...] = ("node-a", "node-b",
                                                                             "node-c"),
                 interval: float = 0.05) -> None:
        self.kube = kube
        self.namespace = namespace
        self.node_names = nodes
        self.interval = interval
        self.hold_ready = False
        self.guest_ready: Callable[[str], bool] | None = None
        self._dead: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.errors: list[str] = []

    # -- control ------------------------------------------------------------------------------
    def start(self) -> KubeVirtStandIn:
        for name in self.node_names:
            self._ensure_node(name)
        # Pods need their namespace's "default" ServiceAccount, which the controller-manager
        # would make; this cluster runs none.
        with contextlib.suppress(ConflictError):
            self.kube.create(SERVICE_ACCOUNTS, {
                "apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": "default", "namespace": self.namespace}}, self.namespace)
        self._thread = threading.Thread(target=self._run, name="kubevirt-standin", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def kill_node(self, name: str, ago: float = 0.0) -> None:
        """The node stops answering: Ready=Unknown since `ago` seconds before now."""
        with self._lock:
            self._dead.add(name)
        self._set_node_ready(name, False, ago)

    def revive_node(self, name: str) -> None:
        """The node is back: its Node exists again, Ready, without taints."""
        with self._lock:
            self._dead.discard(name)
        self._ensure_node(name)
        node = self.kube.get(NODES, name)
        if node is not None and (node.get("spec") or {}).get("taints"):
            self.kube.patch(NODES, name, {"spec": {"taints": None}})

    def step(self) -> None:
        """One pass of the control loop (the thread calls it every `interval`)."""
        with self._lock:
            dead = set(self._dead)
        vms = {v["metadata"]["name"]: v for v in
               self.kube.list(VIRTUAL_MACHINES, self.namespace)[0]}
        vmis = {v["metadata"]["name"]: v for v in
                self.kube.list(VIRTUAL_MACHINE_INSTANCES, self.namespace)[0]}
        pods = self.kube.list(PODS, self.namespace, "kubevirt.io=virt-launcher")[0]
        pods_of: dict[str, list[dict[str, Any]]] = {}
        for pod in pods:
            pods_of.setdefault(pod["metadata"]["labels"].get("vm.kubevirt.io/name", ""),
                               []).append(pod)
        # Graceful pod deletions finish on live nodes (the kubelet would confirm them).
        for pod in pods:
            if pod["metadata"].get("deletionTimestamp") and pod["spec"].get("nodeName") not in dead:
                self.kube.delete(PODS, pod["metadata"]["name"], self.namespace, 0)
        for name in vmis:
            if name not in vms:  # VM deleted: its VMI and pods go
                self.kube.delete(VIRTUAL_MACHINE_INSTANCES, name, self.namespace)
                for pod in pods_of.get(name, []):
                    self.kube.delete(PODS, pod["metadata"]["name"], self.namespace, 0)
        for name, vm in vms.items():
            if vm["metadata"].get("deletionTimestamp"):
                continue
            vmi = vmis.get(name)
            live_pods = pods_of.get(name, [])
            if vmi is not None and not live_pods:
                # Launcher pod gone (fenced or deleted): the VMI has failed; VM controller
                # replaces it (runStrategy Always).
                self.kube.delete(VIRTUAL_MACHINE_INSTANCES, name, self.namespace)
                vmi = None
            if vmi is None:
                if vm["spec"].get("runStrategy") != "Always":
                    continue
                vmi = self._start_vmi(vm, pods, dead)
                if vmi is None:
                    self._set_vm_status(vm, False, "ErrorUnschedulable")
                    continue
            node = (vmi.get("status") or {}).get("nodeName", "")
            self._sync_hotplug(vm, vmi)
            ready = node not in dead and not self.hold_ready and (
                self.guest_ready is None or self.guest_ready(name))
            self._set_vm_status(vm, ready, "Running")

    # -- internals ----------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.step()
            except (KubeError, KeyError, TypeError) as error:
                # Objects come and go under a poll loop; the next pass sees a settled state.
                self.errors.append(str(error))

    def _ensure_node(self, name: str) -> None:
        with contextlib.suppress(ConflictError):
            self.kube.create(NODES, {"apiVersion": "v1", "kind": "Node",
                                     "metadata": {"name": name,
                                                  "labels": {"kubernetes.io/hostname": name}}})
        self._set_node_ready(name, True, 0.0)

    def _set_node_ready(self, name: str, ready: bool, ago: float) -> None:
        stamp = _stamp(ago)
        self.kube.patch(NODES, name, {"status": {"conditions": [{
            "type": "Ready", "status": "True" if ready else "Unknown",
            "reason": "KubeletReady" if ready else "NodeStatusUnknown",
            "message": "stand-in kubelet" if ready else "Kubelet stopped posting node status.",
            "lastHeartbeatTime": stamp, "lastTransitionTime": stamp,
        }]}}, subresource="status")

    def _start_vmi(self, vm: dict[str, Any], pods: list[dict[str, Any]],
                   dead: set[str]) -> dict[str, Any] | None:
        live_nodes = [n for n in self.node_names if n not in dead]
        if not live_nodes:
            return None
        load = {n: sum(1 for p in pods if p["spec"].get("nodeName") == n) for n in live_nodes}
        node = min(live_nodes, key=lambda n: (load[n], n))
        name = vm["metadata"]["name"]
        template = vm["spec"]["template"]
        template_labels = (template.get("metadata") or {}).get("labels") or {}
        owner = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "name": name,
                 "uid": vm["metadata"]["uid"], "controller": True}
        try:
            vmi = self.kube.create(VIRTUAL_MACHINE_INSTANCES, {
                "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
                "metadata": {"name": name, "namespace": self.namespace,
                             "labels": template_labels, "ownerReferences": [owner]},
                "spec": template["spec"],
            }, self.namespace)
        except ConflictError:
            return None
        pod_name = f"virt-launcher-{name}-{secrets.token_hex(3)}"
        pod = self.kube.create(PODS, {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod_name, "namespace": self.namespace,
                         "labels": {**template_labels, "kubevirt.io": "virt-launcher",
                                    "vm.kubevirt.io/name": name,
                                    "kubevirt.io/created-by": vmi["metadata"]["uid"]}},
            "spec": {"nodeName": node, "containers": [
                {"name": "compute", "image": "quay.io/kubevirt/virt-launcher:v1.9.0"}]},
        }, self.namespace)
        self.kube.patch(PODS, pod["metadata"]["name"], {"status": {"phase": "Running"}},
                        self.namespace, subresource="status")
        interfaces = []
        for interface in template["spec"]["domain"]["devices"].get("interfaces") or []:
            entry = {"name": interface["name"], "mac": interface.get("macAddress", "")}
            if interface["name"] == "storage":
                address = self._guest_address(template["spec"])
                if address:
                    entry.update(ipAddress=address, ipAddresses=[address],
                                 interfaceName="eth1", infoSource="guest-agent")
            interfaces.append(entry)
        return self.kube.patch(VIRTUAL_MACHINE_INSTANCES, name, {"status": {
            "phase": "Running", "nodeName": node, "interfaces": interfaces,
            "conditions": [{"type": "Ready", "status": "True"}],
        }}, self.namespace, subresource="status")

    def _guest_address(self, vmi_spec: dict[str, Any]) -> str:
        """The static IP the guest configures from its cloud-init network data."""
        for volume in vmi_spec.get("volumes") or []:
            ref = (volume.get("cloudInitNoCloud") or {}).get("networkDataSecretRef")
            if not ref:
                continue
            secret = self.kube.get(SECRETS, ref["name"], self.namespace)
            if secret is None:
                return ""
            data = yaml.safe_load(base64.b64decode(secret["data"]["networkdata"]))
            address: str = data["ethernets"]["storage"]["addresses"][0]
            return address.split("/")[0]
        return ""

    def _sync_hotplug(self, vm: dict[str, Any], vmi: dict[str, Any]) -> None:
        volumes = vm["spec"]["template"]["spec"].get("volumes") or []
        hotplug = [v["name"] for v in volumes
                   if (v.get("persistentVolumeClaim") or {}).get("hotpluggable")]
        status = vmi.get("status") or {}
        attached = {s["name"] for s in status.get("volumeStatus") or []}
        if set(hotplug) <= attached and vmi["spec"].get("volumes") == volumes:
            return
        with contextlib.suppress(NotFoundError):
            self.kube.patch(VIRTUAL_MACHINE_INSTANCES, vmi["metadata"]["name"], {
                "spec": {"volumes": volumes,
                         "domain": vm["spec"]["template"]["spec"]["domain"]}},
                self.namespace)
            self.kube.patch(VIRTUAL_MACHINE_INSTANCES, vmi["metadata"]["name"], {"status": {
                "volumeStatus": [{"name": n, "target": "sd" + chr(ord("a") + i),
                                  "phase": "Ready", "reason": "VolumeReady",
                                  "hotplugVolume": {}} for i, n in enumerate(hotplug)],
            }}, self.namespace, subresource="status")

    def _set_vm_status(self, vm: dict[str, Any], ready: bool, printable: str) -> None:
        status = vm.get("status") or {}
        if status.get("ready") == ready and status.get("printableStatus") == printable:
            return
        with contextlib.suppress(NotFoundError):
            self.kube.patch(VIRTUAL_MACHINES, vm["metadata"]["name"], {"status": {
                "printableStatus": printable, "ready": ready, "created": True,
                "runStrategy": vm["spec"].get("runStrategy"),
                "conditions": [{"type": "Ready", "status": "True" if ready else "False",
                                "lastTransitionTime": _stamp()}],
            }}, self.namespace, subresource="status")
