"""Assemble the driver for a mode (controller | node | all), serve it, and stop it gracefully."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import grpc

from csi.controller.mounts import ControllerMounts
from csi.controller.servicer import ControllerServicer
from csi.controller.volumes import VolumeService
from csi.errors import InvalidArgument
from csi.host.command import CommandRunner, SubprocessRunner
from csi.host.mounts import HostMounts, ProcMountTable
from csi.identity import IdentityServicer
from csi.interceptor import ErrorMappingInterceptor
from csi.lustre.client import LustreClient
from csi.lustre.recognizers import (
    KernelLustreRecognizer,
    LocalTreeRecognizer,
    LustreMountRecognizer,
)
from csi.metrics import RpcMetrics, serve_metrics
from csi.node.paths import PathPolicy
from csi.node.readiness import (
    ClientReadiness,
    ClientReadinessWatch,
    check_client,
    node_condition_patch,
)
from csi.node.servicer import NodeServicer
from csi.node.stats import VolumeStatsReader
from csi.rpc import csi_pb2_grpc
from csi.server_sets import ServerSetProvider

if TYPE_CHECKING:
    from provisioner.kubevirt.runner import ProvisionerRunner
from provisioner.local import LOCAL_NID, LocalServerSets
from provisioner.local_lustre import LocalLustreCommands

log = logging.getLogger(__name__)
MODES = ("controller", "node", "all")


@dataclass
class DriverConfig:
    mode: str
    endpoint: str
    node_id: str
    state_dir: Path
    kubelet_dirs: list[str] = field(default_factory=lambda: ["/var/lib/kubelet"])
    default_fsname: str = "lustre"
    # "local": the embedded server set and its Lustre stand-in; "kernel": real Lustre tools;
    # "standin": the Lustre stand-in for servers that run elsewhere (tests on this machine,
    # where KubeVirt's stand-in runs the servers and `standin_dir` holds their data).
    lustre_tools: str = "local"
    standin_dir: str = ""
    metrics_address: str = ""
    workers: int = 16
    # Patch the Node's LustreClientReady condition (node mode, needs in-cluster credentials).
    report_node_condition: bool = False
    kubeconfig: str = ""
    # "local": the embedded server sets; "kubevirt": LustreFileSystem resources run as VMs by
    # the embedded provisioner (needs Kubernetes credentials).
    server_sets: str = "local"
    namespace: str = "lustre-csi"  # the driver's own: the provisioner's Lease, address claims
    # The server VMs, their PVCs, Secrets and launcher pods: a namespace of their own, so the
    # provisioner's right to delete pods there (fencing) cannot touch the driver's pods.
    server_namespace: str = "lustre-servers"
    grace_seconds: float = 10.0


def unix_socket_path(endpoint: str) -> str:
    for prefix in ("unix://", "unix:"):
        if endpoint.startswith(prefix):
            path = endpoint[len(prefix) :]
            if path.startswith("/"):
                return path
    raise InvalidArgument(f"--endpoint {endpoint!r} must look like unix:///path/to/csi.sock")


class Driver:
    """A running gRPC server plus whatever background work its mode needs."""

    def __init__(self, config: DriverConfig, provider: ServerSetProvider | None = None) -> None:
        if config.mode not in MODES:
            raise InvalidArgument(f"--mode must be one of {', '.join(MODES)}")
        self.config = config
        # Probe is ready when the server is serving and, for a node plugin, when this node can
        # actually mount Lustre (modules loaded, LNet up).
        self.serving = threading.Event()
        self.client_ready = threading.Event()
        self.metrics = RpcMetrics()
        self.socket_path = unix_socket_path(config.endpoint)
        config.state_dir.mkdir(parents=True, exist_ok=True)

        host_runner = SubprocessRunner()
        recognizer: LustreMountRecognizer
        runner: CommandRunner
        self._provisioner: ProvisionerRunner | None = None
        if provider is None and config.server_sets == "kubevirt":
            provider = self._kubevirt_provider(config)
        elif config.server_sets not in ("local", "kubevirt"):
            raise InvalidArgument("--server-sets must be 'local' or 'kubevirt'")
        if config.lustre_tools in ("local", "standin"):
            data_dir = Path(config.standin_dir) if config.standin_dir else config.state_dir
            local_sets = LocalServerSets(data_dir)
            runner = LocalLustreCommands(
                local_sets, host_runner, any_server=config.lustre_tools == "standin"
            )
            recognizer = LocalTreeRecognizer(data_dir / "filesystems", LOCAL_NID)
            provider = provider or local_sets
        elif config.lustre_tools == "kernel":
            runner = host_runner
            recognizer = KernelLustreRecognizer()
        else:
            raise InvalidArgument("--lustre-tools must be 'local', 'standin' or 'kernel'")
        lustre = LustreClient(runner)
        host = HostMounts(runner)
        table = ProcMountTable()

        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="rpc"),
            # Two threads stay free for Identity (Probe) whatever volume calls do.
            interceptors=[
                ErrorMappingInterceptor(self.metrics, max_busy=max(1, config.workers - 2))
            ],
        )
        serves_controller = config.mode in ("controller", "all")
        csi_pb2_grpc.add_IdentityServicer_to_server(
            IdentityServicer(controller=serves_controller, ready=self.is_ready), self.server
        )
        self.volumes: VolumeService | None = None
        self._controller_mounts: ControllerMounts | None = None
        if serves_controller:
            if provider is None:
                raise InvalidArgument("the controller needs a server-set provider")
            mounts = ControllerMounts(
                config.state_dir / "controller-mounts", lustre, host, table, recognizer
            )
            self.volumes = VolumeService(provider, mounts, lustre)
            self._controller_mounts = mounts
            csi_pb2_grpc.add_ControllerServicer_to_server(
                ControllerServicer(self.volumes, default_fsname=config.default_fsname),
                self.server,
            )
        self._readiness: ClientReadinessWatch | None = None
        if config.mode == "controller":
            self.client_ready.set()
        else:
            require_network = config.lustre_tools == "kernel"
            self._readiness = ClientReadinessWatch(
                lambda: check_client(runner, require_network=require_network),
                self.client_ready,
                report=self._node_condition_reporter() if config.report_node_condition else None,
            )
            csi_pb2_grpc.add_NodeServicer_to_server(
                NodeServicer(
                    node_id=config.node_id,
                    lustre=lustre,
                    host=host,
                    table=table,
                    recognizer=recognizer,
                    paths=PathPolicy(config.kubelet_dirs),
                    stats=VolumeStatsReader(lustre),
                ),
                self.server,
            )

    def _kubevirt_provider(self, config: DriverConfig) -> ServerSetProvider:
        """The KubeVirt provider for CSI calls, and the provisioner loops (leader only)."""
        from csi.host.kubernetes_access import api_client
        from provisioner.kubevirt.kube import RestKube
        from provisioner.kubevirt.provider import KubeVirtServerSets
        from provisioner.kubevirt.runner import ProvisionerRunner, RunnerConfig

        kube = RestKube(api_client(config.kubeconfig))
        self._provisioner = ProvisionerRunner(kube, RunnerConfig(
            namespace=config.namespace, server_namespace=config.server_namespace))
        return KubeVirtServerSets(kube, identity=self._provisioner.identity)

    def is_ready(self) -> bool:
        return self.serving.is_set() and self.client_ready.is_set()

    def _node_condition_reporter(self) -> Callable[[ClientReadiness], None]:
        from kubernetes import client as k8s

        from csi.host.kubernetes_access import api_client

        core = k8s.CoreV1Api(api_client(self.config.kubeconfig))
        node_name = self.config.node_id

        def report(state: ClientReadiness) -> None:
            core.patch_node_status(node_name, node_condition_patch(state))

        return report

    def start(self) -> None:
        if os.path.exists(self.socket_path):
            os.unlink(self.socket_path)  # left over from a previous run
        Path(self.socket_path).parent.mkdir(parents=True, exist_ok=True)
        self.server.add_insecure_port(f"unix://{self.socket_path}")
        self.server.start()
        if self.config.metrics_address:
            host, _, port = self.config.metrics_address.rpartition(":")
            # No host given: loopback. Metrics are opened to the network only when asked for
            # by address (0.0.0.0:9809).
            self._metrics_server = serve_metrics(self.metrics, host or "127.0.0.1", int(port))
        if self._readiness is not None:
            self._readiness.start()
        if self._provisioner is not None:
            self._provisioner.start()
        self.serving.set()
        log.info(
            "lustre-csi serving %s on %s (node %s, state %s)",
            self.config.mode,
            self.socket_path,
            self.config.node_id,
            self.config.state_dir,
        )

    def stop(self) -> None:
        """Report NOT_SERVING, let running calls finish (bounded), then stop."""
        self.serving.clear()
        if self._readiness is not None:
            self._readiness.stop()
        self.server.stop(self.config.grace_seconds).wait()
        if self.volumes is not None:
            self.volumes.stop()  # pending removals resume at the next start
        if self._controller_mounts is not None:
            self._controller_mounts.release_all()
        if self._provisioner is not None:
            self._provisioner.stop()
        if getattr(self, "_metrics_server", None) is not None:
            self._metrics_server.shutdown()
        log.info("lustre-csi stopped")

    def serve_until_signalled(self) -> None:
        stopping = threading.Event()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            log.info("received %s, stopping", signal.Signals(signum).name)
            stopping.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        self.start()
        # Wake up regularly: the kernel may deliver SIGTERM to one of gRPC's threads, and then
        # a main thread blocked for good in wait() would never run the Python-level handler.
        while not stopping.wait(0.5):
            pass
        self.stop()
