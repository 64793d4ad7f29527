"""The Lustre tier (marker `lustre`): the provisioner's own server VMs, booted for real.

It reuses the provisioner tier's real kube-apiserver and KubeVirt stand-in (`kube_env`), and
boots the VirtualMachines the provisioner generates with tests/support/vm_runner.py, from the
server image of hack/lustre/image.sh. It never passes by skipping: without root, the host
tools, or the image (with Lustre), every test fails and says how to get them.

LUSTRE_CSI_SERVER_IMAGE=<dir> uses an image dir other than the one for the current inputs.
It runs in a pytest process of its own (it boots VMs for minutes; its stand-in must be the
only one on the cluster), as hack/test.sh does: `pytest tests/lustre`; a plain `pytest` of the
whole suite deselects it (tests/support/own_process_tier.py).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lustre.real_cluster import (
    FLASH,
    FS,
    POOL,
    ClientNode,
    RealFileSystem,
    boot_client_node,
    boot_file_system,
)
from tests.provisioner.conftest import (
    KubeEnv,
    kube_env,  # noqa: F401  (the session's API server)
)
from tests.support.own_process_tier import keep_to_its_own_process
from tests.support.vm_runner import CACHE, PrivateNetwork, ServerImage, missing_host_tools

REPO = Path(__file__).resolve().parents[2]
BUILD_HINT = ("build it with: bash hack/lustre/build.sh && bash hack/lustre/image.sh "
              "(cold on 2 busy cores: about 15-35 min and 5 min; seconds when cached)")


# The tests share one file system and run in this order of modules: what the servers do on
# their own, the driver on them, then what breaks a server (a foreign disk) last.
MODULE_ORDER = ("test_real_servers", "test_real_driver", "test_refused_disks")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    keep_to_its_own_process(
        config, items, Path(__file__).parent, ("lustre", "kube"), "LUSTRE_CSI_LUSTRE_TIER"
    )
    rank = {name: number for number, name in enumerate(MODULE_ORDER)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))


@pytest.fixture(scope="session")
def server_image() -> ServerImage:
    """The server image built from the current inputs; the test fails without it."""
    if os.geteuid() != 0:
        pytest.fail("the Lustre tier needs root (network namespaces, taps, QEMU)", pytrace=False)
    missing = missing_host_tools()
    if missing:
        pytest.fail(f"host tools missing: apt-get install {' '.join(missing)}", pytrace=False)
    chosen = os.environ.get("LUSTRE_CSI_SERVER_IMAGE", "")  # an image dir built elsewhere
    if not chosen:
        result = subprocess.run(["bash", str(REPO / "hack/lustre/image.sh"), "--print-dir"],
                                capture_output=True, text=True, check=False)
        if result.returncode != 0:
            pytest.fail(f"no Lustre server image: {result.stderr.strip()}; {BUILD_HINT}",
                        pytrace=False)
        chosen = result.stdout.strip()
    image = ServerImage(Path(chosen))
    if image.missing():
        pytest.fail(f"no Lustre server image in {image.directory} (missing "
                    f"{', '.join(image.missing())}); {BUILD_HINT}", pytrace=False)
    return image


@pytest.fixture(scope="session")
def vm_work_dir() -> Iterator[Path]:
    """The run's VM files; afterwards only the consoles, logs and captured outputs stay."""
    path = CACHE / "vm" / f"lustre-tier-{os.getpid()}"
    path.mkdir(parents=True, exist_ok=True)
    yield path
    for disk in (*path.glob("pvcs/*"), *path.glob("*/root.qcow2")):
        disk.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def private_network(vm_work_dir: Path) -> Iterator[PrivateNetwork]:
    network = PrivateNetwork(vm_work_dir / "net").create()
    yield network
    network.destroy()


@pytest.fixture(scope="session")
def real_fs(kube_env: KubeEnv, server_image: ServerImage, vm_work_dir: Path,  # noqa: F811
            private_network: PrivateNetwork) -> Iterator[RealFileSystem]:
    """One MDS, one OSS (room for one more: growth) and the OST pool `flash` on an OSS of its
    own, booted from the provisioner."""
    with boot_file_system(kube_env, server_image, vm_work_dir, private_network, FS, servers=3,
                          ip_pool=POOL, mdt_size_bytes=1 << 30, ost_size_bytes=2 << 30,
                          memory="1536Mi", cpu="1", min_osts=1, max_osts=2,
                          osts_per_oss=1, ost_pools=f"{FLASH}:1:flash-disks") as fs:
        yield fs


@pytest.fixture(scope="session")
def client_node(kube_env: KubeEnv, server_image: ServerImage, vm_work_dir: Path,  # noqa: F811
                private_network: PrivateNetwork, real_fs: RealFileSystem) -> Iterator[ClientNode]:
    """A Lustre client VM with lustre-csi installed from the wheel and serving."""
    with boot_client_node(kube_env, server_image, vm_work_dir, private_network, {
        "sanity-params.yaml": f"fsname: {FS}\n",
        # As tests/sanity/mutable-params.yaml: the file system has two OSTs (one in a pool).
        "sanity-mutable-params.yaml": 'stripeCount: "2"\nstripeSize: 1Mi\ninodeLimit: "100000"\n',
    }) as node:
        real_fs.record_timing("client node boot to ready", node.boot_seconds)
        node.install()
        node.start_driver()
        yield node
