"""Kubernetes objects of one server set, built from the spec and the recorded layout.

Pure functions: the same spec and layout always give the same manifests, so the reconciler can
compare what it would build with what exists and change only what differs. Every object is
labelled with the file system's name and owned by the LustreFileSystem (owner reference), so
deleting the file system cleans up even if the provisioner is gone.

Per server: a VirtualMachine (`runStrategy: Always`, containerDisk root, cloud-init from a
Secret, one disk per target PVC with the target's Lustre name as its serial, the pod network
for management plus a Multus secondary network with a fixed MAC for LNet) and a cloud-init
Secret. Per target: a Block PVC. OSTs added to a running OSS are declared `hotpluggable` on
the SCSI bus (KubeVirt's declarative volume hotplug); the boot script's timer mounts them.
"""

from __future__ import annotations

import math
from typing import Any

from csi.quantity import format_quantity
from provisioner.kubevirt import cloudinit
from provisioner.kubevirt.addresses import management_mac
from provisioner.kubevirt.kube import LUSTRE_FILE_SYSTEMS
from provisioner.kubevirt.layout import MDS, Layout, ServerRecord
from provisioner.kubevirt.spec import FileSystemSpec

LABEL_FS = "lustre.csi.io/filesystem"
LABEL_SERVER = "lustre.csi.io/server"
LABEL_ROLE = "lustre.csi.io/role"
MANAGED_BY = {"app.kubernetes.io/managed-by": "lustre-csi"}
MDT_LABEL = "MDT0000"


def vm_name(fs: str, server: str) -> str:
    return f"{fs}-{server}"


def secret_name(fs: str, server: str) -> str:
    return f"{fs}-{server}-cloudinit"


def pvc_name(fs: str, target_label: str) -> str:
    return f"{fs}-{target_label.lower()}"


def fs_selector(fs: str) -> str:
    return f"{LABEL_FS}={fs}"


def labels(fs: str, server: str | None = None, role: str | None = None) -> dict[str, str]:
    result = {**MANAGED_BY, LABEL_FS: fs}
    if server:
        result[LABEL_SERVER] = server
    if role:
        result[LABEL_ROLE] = role
    return result


def owner_reference(lfs: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": LUSTRE_FILE_SYSTEMS.api_version,
        "kind": LUSTRE_FILE_SYSTEMS.kind,
        "name": lfs["metadata"]["name"],
        "uid": lfs["metadata"]["uid"],
        "controller": True,
    }


def _metadata(lfs: dict[str, Any], name: str, namespace: str,
              object_labels: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": object_labels,
            "ownerReferences": [owner_reference(lfs)]}


def target_pvc(lfs: dict[str, Any], spec: FileSystemSpec, namespace: str, server: str,
               target_label: str, size_bytes: int, pool: str = "") -> dict[str, Any]:
    """A target's Block PVC, on the pool's storage class for a pool's OST (when it names
    one), else on the file system's."""
    fs = lfs["metadata"]["name"]
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _metadata(lfs, pvc_name(fs, target_label), namespace,
                              {**labels(fs, server), "lustre.csi.io/target": target_label}),
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "volumeMode": "Block",
            "resources": {"requests": {"storage": format_quantity(size_bytes)}},
        },
    }
    ost_pool = spec.pool(pool) if pool else None
    storage_class = (ost_pool.target_storage_class if ost_pool else "") or spec.target_storage_class
    if storage_class:
        body["spec"]["storageClassName"] = storage_class
    if pool:
        body["metadata"]["labels"]["lustre.csi.io/pool"] = pool
    return body


def server_pvcs(lfs: dict[str, Any], spec: FileSystemSpec, layout: Layout,
                namespace: str) -> list[dict[str, Any]]:
    result = [target_pvc(lfs, spec, namespace, MDS, MDT_LABEL, spec.mdt_size_bytes)]
    result += [target_pvc(lfs, spec, namespace, ost.oss, ost.label, ost.size_bytes, ost.pool)
               for ost in layout.osts]
    return result


def cloudinit_secret(lfs: dict[str, Any], spec: FileSystemSpec, layout: Layout,
                     server: ServerRecord, namespace: str) -> dict[str, Any]:
    fs = lfs["metadata"]["name"]
    mds = layout.mds
    assert mds is not None, "the MDS is planned before any other server"
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(lfs, secret_name(fs, server.name), namespace,
                              labels(fs, server.name, server.role)),
        "type": "Opaque",
        "stringData": {
            "userdata": cloudinit.user_data(
                fsname=spec.fsname, role=server.role, mgs_nid=spec.nid(mds.address),
                storage_ip=server.address, storage_interface=spec.storage_interface,
                lnet_network=spec.lnet_network,
                # The MGS creates the pools; each OST joins the one whose block holds it.
                pools=[(p.name, p.first_index, p.last_index) for p in layout.pools]
                if server.role == "mds" else [],
            ),
            "networkdata": cloudinit.network_data(
                storage_ip=server.address,
                prefix_length=spec.ip_pool.prefix_length(server.address),
                storage_interface=spec.storage_interface, gateway=spec.gateway,
            ),
        },
    }


def virtual_machine(lfs: dict[str, Any], spec: FileSystemSpec, layout: Layout,
                    server: ServerRecord, namespace: str) -> dict[str, Any]:
    fs = lfs["metadata"]["name"]
    server_labels = labels(fs, server.name, server.role)
    disks: list[dict[str, Any]] = [
        {"name": "root", "disk": {"bus": "virtio"}, "bootOrder": 1},
        {"name": "cloudinit", "disk": {"bus": "virtio"}},
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "root", "containerDisk": {"image": spec.image}},
        {"name": "cloudinit", "cloudInitNoCloud": {
            "secretRef": {"name": secret_name(fs, server.name)},
            "networkDataSecretRef": {"name": secret_name(fs, server.name)},
        }},
    ]
    targets: list[tuple[str, bool]] = []
    if server.role == "mds":
        targets.append((MDT_LABEL, False))
    targets += [(ost.label, ost.hotplug) for ost in layout.osts_of(server.name)]
    for label, hotplug in targets:
        volume_name = label.lower()
        # Hotplugged disks can only sit on the SCSI bus; the serial is how the guest finds them.
        disks.append({"name": volume_name, "serial": label,
                      "disk": {"bus": "scsi" if hotplug else "virtio"}})
        claim: dict[str, Any] = {"claimName": pvc_name(fs, label)}
        if hotplug:
            claim["hotpluggable"] = True
        volumes.append({"name": volume_name, "persistentVolumeClaim": claim})
    cores = (max(1, math.ceil(int(spec.cpu[:-1]) / 1000)) if spec.cpu.endswith("m")
             else int(spec.cpu))
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": _metadata(lfs, vm_name(fs, server.name), namespace, server_labels),
        "spec": {
            "runStrategy": "Always",
            "template": {
                "metadata": {"labels": server_labels},
                "spec": {
                    "domain": {
                        "cpu": {"cores": cores},
                        "memory": {"guest": spec.memory},
                        "resources": {"requests": {"memory": spec.memory, "cpu": spec.cpu}},
                        "devices": {
                            "disks": disks,
                            "interfaces": [
                                {"name": "management", "masquerade": {},
                                 "macAddress": management_mac(server.address)},
                                {"name": "storage", "bridge": {},
                                 "macAddress": server.mac},
                            ],
                        },
                    },
                    "networks": [
                        {"name": "management", "pod": {}},
                        {"name": "storage",
                         "multus": {"networkName": spec.network_attachment}},
                    ],
                    "readinessProbe": {
                        "exec": {"command": [cloudinit.HEALTH_PATH]},
                        "initialDelaySeconds": 20,
                        "periodSeconds": 10,
                        "failureThreshold": 3,
                    },
                    # Targets on RWO block PVCs cannot live-migrate; on drain the VM stops
                    # and runStrategy Always starts it elsewhere with the same disks and IP.
                    "evictionStrategy": "None",
                    "terminationGracePeriodSeconds": 120,
                    "affinity": {"podAntiAffinity": {
                        "preferredDuringSchedulingIgnoredDuringExecution": [{
                            "weight": 100,
                            "podAffinityTerm": {
                                "topologyKey": "kubernetes.io/hostname",
                                "labelSelector": {"matchLabels": {LABEL_FS: fs}},
                            },
                        }],
                    }},
                    "volumes": volumes,
                },
            },
        },
    }
