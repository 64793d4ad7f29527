"""A volume's life on real Lustre, for a newcomer: `bash hack/demo-real-lustre.sh`.

The same walk as `lustre-csi demo`, on real servers: a kube-apiserver + etcd (built by
hack/setup.sh) with the KubeVirt stand-in; the embedded provisioner makes a LustreFileSystem's
VirtualMachines, disks and cloud-init; QEMU boots exactly those (tests/support/vm_runner.py,
KVM where it works, else TCG: minutes per boot); a client VM installs lustre-csi from the
project's wheel and serves it; every volume step is a CSI call to that driver. Everything is
torn down at the end (VMs killed, disks deleted, the API server stopped).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from csi.cli.demo import Progress
from tests.lustre.real_cluster import FS, POOL, ClientNode, boot_client_node, boot_file_system
from tests.provisioner.conftest import kube_environment
from tests.support.kube import LocalKubeCluster, missing_binaries
from tests.support.vm_runner import CACHE, PrivateNetwork, ServerImage, accelerator

REPO = Path(__file__).resolve().parents[2]
STEPS = 15


def _image() -> ServerImage:
    result = subprocess.run(["bash", str(REPO / "hack/lustre/image.sh"), "--print-dir"],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"no Lustre server image: {result.stderr.strip()} "
                         "(bash hack/lustre/setup.sh builds it)")
    return ServerImage(Path(result.stdout.strip()))


def main() -> int:
    if os.geteuid() != 0:
        raise SystemExit("the real-Lustre demo boots VMs on a private network: run it as root")
    if missing_binaries():
        raise SystemExit("kube-apiserver/etcd missing: run bash hack/setup.sh")
    image = _image()
    step = Progress(STEPS, seconds=True)
    work = Path(tempfile.mkdtemp(prefix="demo-", dir=CACHE / "vm"))
    print(f"lustre-csi on real Lustre 2.17 ({accelerator(image).upper()}; VM files in {work})")
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, work, ignore_errors=True)
        cluster = step("start kube-apiserver + etcd", lambda: LocalKubeCluster().start())
        stack.callback(cluster.stop)
        network = PrivateNetwork(work / "net").create()
        stack.callback(network.destroy)
        env = stack.enter_context(kube_environment(cluster))
        step(f"LustreFileSystem {FS!r}: the provisioner's VMs (MDS, OSS) booted to Ready",
             lambda: stack.enter_context(boot_file_system(
                 env, image, work, network, FS, ip_pool=POOL, mdt_size_bytes=1 << 30,
                 ost_size_bytes=2 << 30, memory="1536Mi", cpu="1", min_osts=1, max_osts=1,
                 osts_per_oss=1)))
        node = step("client node VM booted (LNet on its storage NIC)",
                    lambda: stack.enter_context(boot_client_node(env, image, work, network, {})))
        version = step("install lustre-csi from the wheel", node.install)
        step(f"serve {version}: --lustre-tools kernel --server-sets kubevirt", node.start_driver)
        _walk(node, step)
        step("tear down: VMs killed, disks deleted, API server stopped", stack.close)
    return 0


def _walk(node: ClientNode, step: Progress) -> None:
    volume = step("CreateVolume demo (64 MiB: a directory, project id, project quota)",
                  lambda: node.csi_json("create", "--size", "64Mi", "--param", f"fsname={FS}",
                                        "demo"))
    volume_id, context = volume["volume_id"], volume["volume_context"]
    print(f"        volume {volume_id} at {context['mgsNids']}:/{FS}/{context['subdir']}")
    staging, target = node.kubelet_paths(volume_id, "demo")
    step("NodeStageVolume (mount.lustre)", lambda: node.stage(volume, staging))
    step("NodePublishVolume (bind into the pod)", lambda: node.publish(volume, staging, target))
    step("write 16 MiB as root in the volume", lambda: node.run(
        f"dd if=/dev/urandom of={target}/data bs=1M count=16 oflag=direct 2>&1"))
    stats = step("NodeGetVolumeStats (lfs quota -p)",
                 lambda: node.csi_json("stats", "--path", target, volume_id))
    for entry in stats["usage"]:
        print(f"        {entry.get('unit', 'BYTES').lower()}: {entry.get('used', 0)} used of "
              f"{entry.get('total', 0)} ({entry.get('available', 0)} available)")
    step("ControllerExpandVolume to 128 MiB (lfs setquota)",
         lambda: node.csi("expand", "--size", "128Mi", volume_id))
    step("NodeUnpublishVolume", lambda: node.csi("unpublish", "--target-path", target,
                                                 volume_id))
    step("NodeUnstageVolume (umount)", lambda: node.csi("unstage", "--staging-path", staging,
                                                       volume_id))
    step("DeleteVolume (directory and quota removed)", lambda: node.csi("delete", volume_id))


if __name__ == "__main__":
    sys.exit(main())
