"""Which Lustre tools and server sets the driver runs on: one small builder per backend.

Part of the composition root (with `csi.server`): the only place in `csi/` that picks the
`provisioner/` implementations of the core's ports.

- `local`: the embedded default; the local server sets and the Lustre tool stand-in that
  serves them, on this machine.
- `kernel`: the real `mount.lustre`, `lfs` and `lctl`.
- `kubevirt` (server sets): LustreFileSystem resources run as VMs by the embedded
  provisioner, whose background loops start and stop with the driver.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from csi.errors import InvalidArgument
from csi.host.command import CommandRunner, SubprocessRunner
from csi.lustre.client import LustreClient
from csi.lustre.recognizers import (
    KernelLustreRecognizer,
    LocalTreeRecognizer,
    LustreMountRecognizer,
)
from csi.metrics import RpcMetrics
from csi.server_sets import FileSystemEndpoint, ServerSetProvider
from provisioner.local import LOCAL_NID, LocalServerSets
from provisioner.local_lustre import LocalLustreCommands

if TYPE_CHECKING:
    from csi.server import DriverConfig


class BackgroundLoops(Protocol):
    """Work a backend runs beside the gRPC server (the KubeVirt provisioner's loops)."""

    def attach_controller(self, metrics: RpcMetrics, lustre: LustreClient,
                          mountpoint: Callable[[FileSystemEndpoint], Path]) -> None:
        """The controller's Lustre client and its mounts (to measure use) and its metrics."""
        ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


@dataclass
class LustreTools:
    """How Lustre is reached: the runner of its commands and how its mounts look."""

    runner: CommandRunner
    recognizer: LustreMountRecognizer
    # The server sets these tools serve themselves (the local stand-in), if any.
    provider: ServerSetProvider | None = None
    # Node readiness also needs LNet up (only real Lustre has a network).
    require_network: bool = False


@dataclass
class Backend:
    tools: LustreTools
    provider: ServerSetProvider | None
    loops: BackgroundLoops | None = None


def local_tools(config: DriverConfig, *, any_server: bool = False) -> LustreTools:
    """The embedded default: the local server sets and the stand-in for their tools.

    `any_server`: the stand-in also mounts file systems whose servers run elsewhere (the
    KubeVirt stand-in of the tests), keeping their data under the same directory.
    """
    data_dir = Path(config.standin_dir) if config.standin_dir else config.state_dir
    local_sets = LocalServerSets(data_dir)
    runner = LocalLustreCommands(local_sets, SubprocessRunner(), any_server=any_server)
    recognizer = LocalTreeRecognizer(data_dir / "filesystems", LOCAL_NID)
    return LustreTools(runner, recognizer, provider=local_sets)


def kernel_tools(config: DriverConfig) -> LustreTools:
    """The real Lustre client: mount.lustre, lfs and lctl on this machine."""
    return LustreTools(SubprocessRunner(), KernelLustreRecognizer(), require_network=True)


# --lustre-tools: name -> builder. A test launcher adds its own (tests/support/serve_standin.py).
LUSTRE_TOOLS: dict[str, Callable[[DriverConfig], LustreTools]] = {
    "local": local_tools,
    "kernel": kernel_tools,
}


def kubevirt_server_sets(config: DriverConfig) -> tuple[ServerSetProvider, BackgroundLoops]:
    """The KubeVirt provider for CSI calls, and the provisioner loops (leader only)."""
    from csi.host.kubernetes_access import api_client
    from provisioner.kubevirt.kube import RestKube
    from provisioner.kubevirt.provider import KubeVirtServerSets
    from provisioner.kubevirt.runner import ProvisionerRunner, RunnerConfig

    kube = RestKube(api_client(config.kubeconfig))
    loops = ProvisionerRunner(
        kube, RunnerConfig(namespace=config.namespace, server_namespace=config.server_namespace)
    )
    return KubeVirtServerSets(kube, identity=loops.identity), loops


def build_backend(config: DriverConfig, provider: ServerSetProvider | None = None) -> Backend:
    """The backend `config` names; `provider`, when given, replaces its server sets (tests)."""
    if config.server_sets not in ("local", "kubevirt"):
        raise InvalidArgument("--server-sets must be 'local' or 'kubevirt'")
    build_tools = LUSTRE_TOOLS.get(config.lustre_tools)
    if build_tools is None:
        raise InvalidArgument(f"--lustre-tools must be one of {', '.join(LUSTRE_TOOLS)}")
    loops: BackgroundLoops | None = None
    if provider is None and config.server_sets == "kubevirt":
        provider, loops = kubevirt_server_sets(config)
    tools = build_tools(config)
    return Backend(tools, provider or tools.provider, loops)
