"""A one-node Kubernetes cluster on this machine: the test control plane of tests/support/kube.py
(etcd, kube-apiserver, kube-controller-manager) plus kube-scheduler, containerd 2.x and a real
kubelet registered with the API server, all built by hack/node/build.sh.

Where it runs, and why nothing is left behind:

- a private network namespace (``PrivateNetwork``): the test thread enters it before anything
  starts, so every component, the CNI bridge, the pods' veths and one iptables DNAT rule (the
  ``kubernetes`` Service's ClusterIP to the API server, in place of kube-proxy, which is not
  built) exist only there, and vanish with it;
- the test's private mount namespace (hack/test.sh's ``unshare --mount``): the host paths the
  manifests and kubelet use (/var/lib/kubelet, /var/log/pods, ...) get a fresh tmpfs, shared
  within the namespace so Bidirectional propagation works, and are unmounted (and removed when
  we made them) at the end;
- containerd, its shims and every container run in a PID namespace whose init is killed when
  the test process dies, even by SIGKILL; kubelet dies with its parent too;
- kubelet's cgroups live under a cgroup root of their own, removed at the end.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes.client
import yaml
from kubernetes.client.exceptions import ApiException

from tests.support.kube import (
    REPO_ROOT,
    SERVICE_CLUSTER_IP_RANGE,
    KubeClusterError,
    LocalKubeCluster,
)
from tests.support.processes import Component, free_port, tail

BIN_DIR = REPO_ROOT / ".cache" / "bin"
IMAGE_INDEX = REPO_ROOT / ".cache" / "images" / "index.tsv"
BUILD_HINT = "run hack/node/build.sh to build it"
NODE_BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kubelet",
    "containerd",
    "ctr",
    "containerd-shim-runc-v2",
)
NODE_NAME = "lustre-node-1"
NODE_IP = "10.213.0.1"  # on an interface of its own in the private network namespace
POD_SUBNET = "10.214.0.0/24"
KUBERNETES_SERVICE_IP = "10.96.0.1"  # the first address of SERVICE_CLUSTER_IP_RANGE
PAUSE_IMAGE = "localhost/lustre-csi/pause:3.10-local"
CNI_PLUGIN_DIR = Path("/usr/lib/cni")  # Debian's containernetworking-plugins
RUNC = Path("/usr/sbin/runc")  # Debian's runc
# Host paths the manifests or kubelet use: each gets a private tmpfs for the cluster's life.
PRIVATE_HOST_DIRS = (
    Path("/var/lib/kubelet"),  # fixed: deploy/node.yaml mounts it, CSI paths live in it
    Path("/var/log/pods"),  # kubelet's container logs
    Path("/var/log/containers"),  # kubelet's log symlinks (a fixed path in kubelet)
    Path("/var/lib/cni"),  # CNI's result cache and host-local's leases
    Path("/run/netns"),  # containerd's pinned pod network namespaces
)
# The local server set's data, shared by the controller and node pods (deploy/overlays/local).
LOCAL_SERVER_SET_DIR = Path("/var/lib/lustre-csi-local")

CLONE_NEWNET = 0x40000000
MS_REC = 0x4000
MS_SHARED = 1 << 20
MS_PRIVATE = 1 << 18


class NodeError(KubeClusterError):
    """The node could not be brought up, or did not behave as a node must."""


def missing_prerequisites() -> list[str]:
    """Why the node tier cannot run here (empty when it can)."""
    problems = []
    if os.geteuid() != 0:
        problems.append("the node tier runs kubelet and containerd: it needs root")
    if os.environ.get("LUSTRE_CSI_PRIVATE_MOUNTS") != "1":
        problems.append(
            "the node tier mounts over /var/lib/kubelet: run it in a private mount namespace "
            "(LUSTRE_CSI_PRIVATE_MOUNTS=1 unshare --mount --propagation private -- pytest ...)"
        )
    for name in NODE_BINARIES:
        path = BIN_DIR / name
        if not (path.is_file() and os.access(path, os.X_OK)):
            problems.append(f"missing {path}: {BUILD_HINT}")
    for tool in (RUNC, CNI_PLUGIN_DIR / "bridge", CNI_PLUGIN_DIR / "host-local"):
        if not tool.exists():
            problems.append(f"missing {tool} (runc, containernetworking-plugins): {BUILD_HINT}")
    for tool in ("ip", "iptables", "unshare", "mount", "umount"):
        if shutil.which(tool) is None:
            problems.append(f"missing {tool} on PATH: {BUILD_HINT}")
    if not IMAGE_INDEX.is_file():
        problems.append(f"missing {IMAGE_INDEX}: {BUILD_HINT}")
    else:
        for ref, archive in read_image_index().items():
            if not Path(archive).is_file():
                problems.append(f"image {ref}: missing archive {archive}: {BUILD_HINT}")
    return problems


def read_image_index() -> dict[str, str]:
    """image ref -> OCI archive, as hack/images/build.sh listed them."""
    images = {}
    for line in IMAGE_INDEX.read_text().splitlines():
        if line.strip():
            ref, archive = line.split("\t", 1)
            images[ref] = archive
    return images


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise NodeError(f"{what}: {os.strerror(errno)}")


def _run(argv: list[str], timeout: float = 60) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise NodeError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout


class PrivateNetwork:
    """The calling thread's network namespace, swapped for a new one until ``leave()``.

    Every process the thread starts afterwards is born in it. In it: loopback, an interface
    of the node's own (a bridge without ports) holding NODE_IP (the node's and the API
    server's address, and the default route), and a DNAT of KUBERNETES_SERVICE_IP:443 to the
    API server.
    """

    def __init__(self) -> None:
        self._original: int | None = None

    def enter(self) -> None:
        self._original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        _check(_libc().unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
        _run(["ip", "link", "set", "lo", "up"])
        # A bridge with no ports as the node's "NIC" (this kernel has no dummy driver).
        _run(["ip", "link", "add", "node0", "type", "bridge"])
        _run(["ip", "addr", "add", f"{NODE_IP}/32", "dev", "node0"])
        _run(["ip", "link", "set", "node0", "up"])
        _run(["ip", "route", "add", "default", "dev", "node0"])

    def route_kubernetes_service(self, apiserver_port: int) -> None:
        """What kube-proxy would do for the one Service in-cluster clients need."""
        target = f"{NODE_IP}:{apiserver_port}"
        for chain in ("OUTPUT", "PREROUTING"):
            _run(
                [
                    "iptables",
                    "-t",
                    "nat",
                    "-A",
                    chain,
                    "-d",
                    f"{KUBERNETES_SERVICE_IP}/32",
                    "-p",
                    "tcp",
                    "--dport",
                    "443",
                    "-j",
                    "DNAT",
                    "--to-destination",
                    target,
                ]
            )

    def leave(self) -> None:
        if self._original is None:
            return
        try:
            _check(_libc().setns(self._original, CLONE_NEWNET), "setns(original netns)")
        finally:
            os.close(self._original)
            self._original = None


class PrivateHostDirs:
    """A fresh tmpfs (or a bind of a directory on disk) on fixed host paths, shared within the
    test's mount namespace (so containers' Bidirectional mounts reach kubelet), unmounted and
    removed (when made here) by ``release()``."""

    def __init__(self) -> None:
        self._mounted: list[Path] = []
        self._made: list[Path] = []

    def mount_tmpfs(self, path: Path) -> None:
        self._prepare(path)
        _run(["mount", "-t", "tmpfs", "-o", "mode=0755", "lustre-csi-node", str(path)])
        self._mounted.append(path)
        _run(["mount", "--make-rshared", str(path)])

    def mount_bind(self, source: Path, path: Path) -> None:
        self._prepare(path)
        _run(["mount", "--bind", str(source), str(path)])
        self._mounted.append(path)
        _run(["mount", "--make-rshared", str(path)])

    def _prepare(self, path: Path) -> None:
        missing = []
        probe = path
        while not probe.exists():
            missing.append(probe)
            probe = probe.parent
        path.mkdir(parents=True, exist_ok=True)
        self._made.extend(reversed(missing))

    def release(self) -> list[str]:
        """Unmount everything (innermost first); returns what could not be cleaned."""
        problems = []
        for path in reversed(self._mounted):
            result = subprocess.run(
                ["umount", "-R", str(path)], capture_output=True, text=True, check=False
            )
            if result.returncode != 0:
                subprocess.run(["umount", "-R", "-l", str(path)], check=False)
                problems.append(f"umount -R {path}: {result.stderr.strip()} (detached lazily)")
        self._mounted.clear()
        for path in reversed(self._made):
            try:
                path.rmdir()
            except OSError as exc:
                problems.append(f"rmdir {path}: {exc}")
        self._made.clear()
        return problems


class CgroupRoot:
    """/<name> in every cgroup v1 hierarchy: kubelet's --cgroup-root, removed at the end."""

    def __init__(self, name: str) -> None:
        self.name = name

    def create(self) -> None:
        base = Path("/sys/fs/cgroup")
        for hierarchy in sorted(base.iterdir()):
            if hierarchy.name == "unified" or not hierarchy.is_dir():
                continue
            path = hierarchy / self.name
            path.mkdir(exist_ok=True)
            if hierarchy.name == "cpuset":  # a new cpuset is empty until told otherwise
                for knob in ("cpuset.cpus", "cpuset.mems"):
                    (path / knob).write_text((hierarchy / knob).read_text())

    def remove(self) -> list[str]:
        """rmdir every cgroup below the root, deepest first, in every hierarchy (runc adds
        the root to the unified one as well); returns what is still there."""
        problems = []
        for root in sorted(Path("/sys/fs/cgroup").glob(f"*/{self.name}")):
            for path in sorted(
                (p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)
            ):
                with contextlib.suppress(OSError):
                    path.rmdir()
            try:
                root.rmdir()
            except OSError as exc:
                problems.append(f"rmdir {root}: {exc}")
        return problems


class NodeKubeCluster(LocalKubeCluster):
    """The test control plane, reachable from pods, with a kubelet identity and a scheduler.

    kube-apiserver listens on every address of the private network namespace; kubelet
    authenticates as system:node:<name> in group system:nodes, so the Node authorizer and
    RBAC judge it as they would a real node.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            with_controller_manager=True,
            # Every address of the private namespace, so pods reach it (through the Service
            # IP's DNAT); it still advertises 127.0.0.1, so its self-signed certificate covers
            # 127.0.0.1 (the tests, kubelet) and the Service IP (in-cluster clients).
            # It reaches kubelet (logs, exec) by the Node's InternalIP: there is no DNS here.
            extra_apiserver_args=[
                "--bind-address=0.0.0.0",
                "--kubelet-preferred-address-types=InternalIP",
            ],
            **kwargs,
        )
        self.node_token = secrets.token_urlsafe(32)

    def _write_credentials(self) -> None:
        super()._write_credentials()
        tokens = self.work_dir / "tokens.csv"
        with tokens.open("a") as out:
            out.write(f'{self.node_token},system:node:{NODE_NAME},{NODE_NAME},"system:nodes"\n')

    def start_scheduler(self) -> None:
        port = free_port()
        scheduler = self._spawn(
            "kube-scheduler",
            [
                str(self.bin_dir / "kube-scheduler"),
                f"--kubeconfig={self.admin_kubeconfig}",
                f"--authentication-kubeconfig={self.admin_kubeconfig}",
                f"--authorization-kubeconfig={self.admin_kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                "--leader-elect=false",
                f"--v={self.verbosity}",
            ],
        )
        self._wait_http(scheduler, f"https://127.0.0.1:{port}/healthz", None, verify=False)

    def spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Component:
        """Start a node component logging to <work_dir>/<name>.log; stopped by ``stop()``."""
        return self._spawn(name, args, env)

    def forget(self, component: Component) -> None:
        with contextlib.suppress(ValueError):
            self._components.remove(component)


def containerd_config(work: Path) -> str:
    """containerd 2.x (config version 3) for one test node: state under ``work``, cgroupfs,
    Debian's runc, CNI from ``work``/cni, our pause image, nothing on host paths."""
    cni_conf = work / "cni" / "net.d"
    return f"""version = 3
root = '{work}/root'
state = '{work}/state'
disabled_plugins = [
  'io.containerd.snapshotter.v1.btrfs', 'io.containerd.snapshotter.v1.zfs',
  'io.containerd.snapshotter.v1.devmapper', 'io.containerd.snapshotter.v1.blockfile',
  'io.containerd.snapshotter.v1.erofs', 'io.containerd.nri.v1.nri',
  'io.containerd.tracing.processor.v1.otlp', 'io.containerd.internal.v1.tracing',
]

[grpc]
  address = '{work}/containerd.sock'

[ttrpc]
  address = '{work}/containerd.sock.ttrpc'

[plugins.'io.containerd.internal.v1.opt']
  path = '{work}/opt'

[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = '{PAUSE_IMAGE}'

[plugins.'io.containerd.cri.v1.runtime']
  enable_cdi = false
  # Root here lacks CAP_SYS_RESOURCE: a negative oom_score_adj is refused, and without this
  # every pod sandbox fails with runc's "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = 'runc'
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = 'io.containerd.runc.v2'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = '{RUNC}'
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ['{CNI_PLUGIN_DIR}']
    conf_dir = '{cni_conf}'
    max_conf_num = 1

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = '127.0.0.1'
  stream_server_port = '0'
"""


def cni_config(work: Path) -> dict[str, Any]:
    """A bridge network for the pods, with leases in ``work`` and masquerading off (nothing
    outside the namespace to reach)."""
    return {
        "cniVersion": "1.0.0",
        "name": "lustre-csi-node",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_SUBNET}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(work / "ipam"),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def kubelet_config(work: Path, cgroup_root: str, runtime_socket: Path) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # These machines run cgroup v1. kubelet 1.35+ refuses to start on it unless told
        # otherwise; we say so here rather than hide it (cgroup v1 is in maintenance upstream).
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",  # no systemd here; containerd is set the same way
        "cgroupRoot": f"/{cgroup_root}",
        "containerRuntimeEndpoint": f"unix://{runtime_socket}",
        "address": NODE_IP,
        "port": free_port(),
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": free_port(),
        # Only the API server (in this namespace) talks to it: logs/exec without client certs.
        "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
        "authorization": {"mode": "AlwaysAllow"},
        "volumePluginDir": str(work / "volume-plugins"),
        "podLogsDir": "/var/log/pods",
        "failSwapOn": False,
        "resolvConf": "",
        "imageGCHighThresholdPercent": 100,
        "evictionHard": {"memory.available": "100Mi"},
        "serializeImagePulls": False,
        "nodeStatusUpdateFrequency": "5s",
        "syncFrequency": "10s",
        "fileCheckFrequency": "5s",
        "shutdownGracePeriod": "0s",
    }


class LocalNode:
    """containerd + kubelet for NodeKubeCluster, in the namespaces described at the top."""

    def __init__(self, cluster: NodeKubeCluster) -> None:
        self.cluster = cluster
        self.work = cluster.work_dir / "node"
        self.containerd_work = self.work / "containerd"
        self.socket = self.containerd_work / "containerd.sock"
        self.cgroups = CgroupRoot(f"lustre-csi-node-{secrets.token_hex(4)}")
        self.kubelet: Component | None = None
        self.containerd: Component | None = None
        self.kubelet_config_path = self.work / "kubelet.yaml"
        self.kubelet_kubeconfig = self.work / "kubelet.kubeconfig"

    def env(self) -> dict[str, str]:
        path = os.pathsep.join(
            [
                str(BIN_DIR),
                "/usr/local/sbin",
                "/usr/sbin",
                "/sbin",
                "/usr/local/bin",
                "/usr/bin",
                "/bin",
            ]
        )
        return {"PATH": path, "HOME": str(self.work), "LANG": "C.UTF-8"}

    def start(self) -> None:
        (self.containerd_work / "cni" / "net.d").mkdir(parents=True)
        self.cgroups.create()
        self.start_containerd()
        self.import_images()
        self.write_kubelet_files()
        self.start_kubelet()
        self.wait_ready()

    # -- containerd -------------------------------------------------------------------------

    def start_containerd(self) -> None:
        config = self.containerd_work / "config.toml"
        config.write_text(containerd_config(self.containerd_work))
        (self.containerd_work / "cni" / "net.d" / "10-bridge.conflist").write_text(
            json.dumps(cni_config(self.containerd_work), indent=2)
        )
        # PID namespace: its init (containerd) is SIGKILLed when unshare dies, and with it
        # every shim and container. Its own /proc (hence its own mount namespace, which keeps
        # the shared /var/lib/kubelet as a peer, so mounts still flow both ways).
        self.containerd = self.cluster.spawn(
            "containerd",
            [
                "unshare",
                "--pid",
                "--fork",
                "--kill-child",
                "--mount",
                "--propagation",
                "unchanged",
                "--mount-proc",
                "--",
                str(BIN_DIR / "containerd"),
                f"--config={config}",
                "--log-level=info",
            ],
            env=self.env(),
        )
        self._wait(lambda: self.socket.is_socket(), self.containerd, "containerd's socket", 60)
        self._wait(
            lambda: self._ctr("version", check=False).returncode == 0,
            self.containerd,
            "containerd to answer",
            60,
        )

    def _ctr(
        self, *args: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(BIN_DIR / "ctr"), f"--address={self.socket}", "--namespace=k8s.io", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=self.env(),
        )
        if check and result.returncode != 0:
            raise NodeError(f"ctr {' '.join(args)}: {result.stderr.strip()}")
        return result

    def import_images(self) -> None:
        for ref, archive in read_image_index().items():
            self._ctr("images", "import", "--platform=linux/amd64", archive)
            names = self._ctr("images", "list", "--quiet").stdout.split()
            if ref not in names:
                raise NodeError(f"importing {archive} did not give image {ref} (have {names})")

    # -- kubelet ----------------------------------------------------------------------------

    def write_kubelet_files(self) -> None:
        config = kubelet_config(self.work, self.cgroups.name, self.socket)
        self.kubelet_config_path.write_text(yaml.safe_dump(config))
        self.cluster.kubeconfig_for(self.cluster.node_token, self.kubelet_kubeconfig)

    def start_kubelet(self) -> None:
        self.kubelet = self.cluster.spawn(
            "kubelet",
            [
                str(BIN_DIR / "kubelet"),
                f"--config={self.kubelet_config_path}",
                f"--kubeconfig={self.kubelet_kubeconfig}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={NODE_IP}",
                "--root-dir=/var/lib/kubelet",
                f"--cert-dir={self.work / 'kubelet-pki'}",
                "--v=2",
            ],
            env=self.env(),
        )

    def stop_kubelet(self) -> None:
        if self.kubelet is not None:
            self.kubelet.stop(timeout=30)
            self.cluster.forget(self.kubelet)
            self.kubelet = None

    def restart_kubelet(self) -> None:
        """Stop kubelet, start a new one; return once it is Ready and has rebuilt its view of
        the mounted volumes from disk (what a restart could get wrong)."""
        log = self.cluster.log_path("kubelet")
        offset = log.stat().st_size
        self.stop_kubelet()
        self.start_kubelet()
        self.wait_ready()

        def reconstructed() -> bool:
            with log.open("rb") as text:
                text.seek(offset)
                return b"Finished populating initial desired state of world" in text.read()

        self._wait(reconstructed, self.kubelet, "kubelet's volume state after restart", 120)

    def wait_ready(self, timeout: float = 180) -> None:
        core = kubernetes.client.CoreV1Api(self.cluster._admin_api())

        def ready() -> bool:
            try:
                node = core.read_node(NODE_NAME)
            except ApiException as exc:
                if exc.status == 404:
                    return False
                raise
            conditions = {c.type: c.status for c in (node.status.conditions or [])}
            return conditions.get("Ready") == "True"

        assert self.kubelet is not None
        self._wait(ready, self.kubelet, f"Node {NODE_NAME} Ready", timeout)

    def _wait(
        self, predicate: Callable[[], bool], component: Component | None, what: str, timeout: float
    ) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            for running in (self.containerd, component):
                if running is not None:
                    running.check_running()
            if time.monotonic() > deadline:
                log = component.log_path if component else self.cluster.work_dir
                raise NodeError(
                    f"no {what} after {timeout:.0f}s; last lines of {log}:\n{tail(Path(log), 60)}"
                )
            time.sleep(0.5)

    def stop(self) -> list[str]:
        """kubelet, then containerd (its PID namespace takes every shim and container)."""
        self.stop_kubelet()
        if self.containerd is not None:
            self.containerd.stop(timeout=30)
            self.cluster.forget(self.containerd)
            self.containerd = None
        # The PID namespace's processes die asynchronously: give the cgroups a moment.
        deadline = time.monotonic() + 30
        problems = self.cgroups.remove()
        while problems and time.monotonic() < deadline:
            time.sleep(0.5)
            problems = self.cgroups.remove()
        return problems


@contextlib.contextmanager
def one_node_cluster(work_dir: Path | None = None) -> Iterator[tuple[NodeKubeCluster, LocalNode]]:
    """Everything above, up and Ready; torn down (and checked clean) on exit."""
    problems = missing_prerequisites()
    if problems:
        raise NodeError("the node tier cannot run here:\n  " + "\n  ".join(problems))
    network = PrivateNetwork()
    dirs = PrivateHostDirs()
    cluster = NodeKubeCluster(work_dir=work_dir, startup_timeout=120)
    node: LocalNode | None = None
    try:
        network.enter()  # (left in the finally below even when entering fails half-way)
        for path in PRIVATE_HOST_DIRS:
            dirs.mount_tmpfs(path)
        cluster.start()
        storage = cluster.work_dir / "local-server-set"  # on disk: pods write real data
        storage.mkdir()
        dirs.mount_bind(storage, LOCAL_SERVER_SET_DIR)
        network.route_kubernetes_service(cluster.apiserver_port)
        cluster.start_scheduler()
        node = LocalNode(cluster)
        node.start()
        yield cluster, node
    finally:
        leftovers = []
        if node is not None:
            leftovers += node.stop()
        cluster.stop()
        leftovers += dirs.release()
        network.leave()
        if leftovers:
            raise NodeError("the node left things behind: " + "; ".join(leftovers))


__all__ = [
    "KUBERNETES_SERVICE_IP",
    "LOCAL_SERVER_SET_DIR",
    "NODE_IP",
    "NODE_NAME",
    "SERVICE_CLUSTER_IP_RANGE",
    "LocalNode",
    "NodeError",
    "NodeKubeCluster",
    "missing_prerequisites",
    "one_node_cluster",
]
