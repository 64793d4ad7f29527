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

import grpc

from csi.backends import Backend, BackgroundLoops, build_backend
from csi.controller.mounts import ControllerMounts
from csi.controller.servicer import ControllerServicer
from csi.controller.volumes import VolumeService
from csi.errors import InvalidArgument
from csi.host.bounded import BoundedCalls
from csi.host.mount_table import ProcMountTable
from csi.host.mounts import HostMounts
from csi.identity import IdentityServicer
from csi.interceptor import ErrorMappingInterceptor, thread_budgets
from csi.lustre.client import LustreClient
from csi.lustre.targets import TargetConnections
from csi.metrics import RpcMetrics, serve_metrics
from csi.node.paths import PathPolicy
from csi.node.readiness import (
    ClientReadiness,
    ClientReadinessWatch,
    check_client,
)
from csi.node.servicer import NodeServicer
from csi.node.stats import VolumeStatsReader
from csi.rpc import csi_pb2_grpc
from csi.server_sets import ServerSetProvider

log = logging.getLogger(__name__)
MODES = ("controller", "node", "all")
# A healthy Lustre mount answers stat(2) in milliseconds; past this its server is taken as away.
FILE_SYSTEM_CALL_TIMEOUT_S = 10.0


@dataclass
class DriverConfig:
    mode: str
    endpoint: str
    node_id: str
    state_dir: Path
    kubelet_dirs: list[str] = field(default_factory=lambda: ["/var/lib/kubelet"])
    default_fsname: str = "lustre"
    # A name in csi.backends.LUSTRE_TOOLS: "local", the embedded server set and its Lustre
    # stand-in; "kernel", the real Lustre tools.
    lustre_tools: str = "local"
    standin_dir: str = ""  # data of the local server sets (default: state_dir)
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

    def __init__(
        self,
        config: DriverConfig,
        provider: ServerSetProvider | None = None,
        *,
        backend: Backend | None = None,
    ) -> None:
        """Assemble the services `config.mode` serves on `backend` (built from `config`).

        `provider`, when given, replaces the backend's server sets (tests).
        """
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
        backend = backend or build_backend(config, provider)
        self._loops: BackgroundLoops | None = backend.loops
        serves_controller = config.mode in ("controller", "all")
        capped = [
            *(["Controller"] if serves_controller else []),
            *(["Node"] if config.mode in ("node", "all") else []),
        ]
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="rpc"),
            # Two threads stay free for Identity (Probe); controller and node calls have
            # budgets of their own, so neither can starve the other.
            interceptors=[
                ErrorMappingInterceptor(
                    self.metrics, budgets=thread_budgets(config.workers, capped)
                )
            ],
        )
        csi_pb2_grpc.add_IdentityServicer_to_server(
            IdentityServicer(controller=serves_controller, ready=self.is_ready), self.server
        )
        lustre = LustreClient(backend.tools.runner)
        host = HostMounts(backend.tools.runner)
        table = ProcMountTable()
        # One budget of hung file-system calls (stat, statvfs) for the node and controller
        # mounts: stuck calls are capped per mount, so a dead server leaves the others served.
        self._bounded = BoundedCalls(
            timeout_s=FILE_SYSTEM_CALL_TIMEOUT_S, max_stuck=4 * config.workers
        )
        self.volumes: VolumeService | None = None
        self._controller_mounts: ControllerMounts | None = None
        if serves_controller:
            self._add_controller(backend, lustre, host, table)
        self._readiness: ClientReadinessWatch | None = None
        if config.mode == "controller":
            self.client_ready.set()
        else:
            self._add_node(backend, lustre, host, table)

    def _add_controller(
        self, backend: Backend, lustre: LustreClient, host: HostMounts, table: ProcMountTable
    ) -> None:
        if backend.provider is None:
            raise InvalidArgument("the controller needs a server-set provider")
        mounts = ControllerMounts(
            self.config.state_dir / "controller-mounts",
            lustre,
            host,
            table,
            backend.tools.recognizer,
            bounded=self._bounded,
        )
        self.volumes = VolumeService(backend.provider, mounts, lustre)
        self._controller_mounts = mounts
        if self._loops is not None:
            # The provisioner measures use through these mounts and serves its metrics here.
            self._loops.attach_controller(self.metrics, lustre, mounts.mountpoint)
        csi_pb2_grpc.add_ControllerServicer_to_server(
            ControllerServicer(self.volumes, default_fsname=self.config.default_fsname),
            self.server,
        )

    def _add_node(
        self, backend: Backend, lustre: LustreClient, host: HostMounts, table: ProcMountTable
    ) -> None:
        runner, require_network = backend.tools.runner, backend.tools.require_network
        self._readiness = ClientReadinessWatch(
            lambda: check_client(runner, require_network=require_network),
            self.client_ready,
            report=self._node_condition_reporter() if self.config.report_node_condition else None,
        )
        csi_pb2_grpc.add_NodeServicer_to_server(
            NodeServicer(
                node_id=self.config.node_id,
                lustre=lustre,
                host=host,
                table=table,
                recognizer=backend.tools.recognizer,
                paths=PathPolicy(self.config.kubelet_dirs),
                stats=VolumeStatsReader(
                    lustre,
                    bounded=self._bounded,
                    targets=(
                        TargetConnections(backend.tools.runner)
                        if backend.tools.require_network
                        else None
                    ),
                ),
                bounded=self._bounded,
            ),
            self.server,
        )

    def is_ready(self) -> bool:
        return self.serving.is_set() and self.client_ready.is_set()

    def _node_condition_reporter(self) -> Callable[[ClientReadiness], None]:
        from kubernetes import client as k8s

        from csi.host.kubernetes_access import api_client
        from csi.node.taint import CoreNodeApi, NodeReadinessReporter

        core = k8s.CoreV1Api(api_client(self.config.kubeconfig))
        # The LustreClientReady condition, then (once ready) the startup taint goes.
        return NodeReadinessReporter(CoreNodeApi(core), self.config.node_id)

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
        if self._loops is not None:
            self._loops.start()
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
        if self._loops is not None:
            self._loops.stop()
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
