"""The drivers under test, started as real processes on unix sockets, and their footprint.

- `lustre_csi()`: our driver as it is deployed, a controller process (`--mode controller`) and a
  node plugin process (`--mode node`) sharing one state directory (the embedded local server
  set), so each one's memory is measured on its own.
- `hostpath()`: kubernetes-csi's reference driver `hostpathplugin`, one process serving
  controller and node.

Both are started the same way and timed the same way: from the process's start to the first
Probe that answers ready.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import psutil

from csi.rpc import csi_pb2, csi_pb2_grpc

REPO = Path(__file__).resolve().parents[1]
DEFAULT_HOSTPATH = REPO / ".cache" / "bin" / "hostpathplugin"
NODE_ID = "bench-node"


def probe_ready(endpoint: str, timeout: float = 0.5) -> bool:
    with grpc.insecure_channel(endpoint) as channel:
        try:
            response = csi_pb2_grpc.IdentityStub(channel).Probe(
                csi_pb2.ProbeRequest(), timeout=timeout)
        except grpc.RpcError:
            return False
    return not response.HasField("ready") or response.ready.value


@dataclass
class Role:
    """One driver process: what it serves and how it was started."""

    name: str  # "controller", "node" or "all"
    argv: list[str]
    socket: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    startup_seconds: float = 0.0
    cwd: Path = REPO

    @property
    def endpoint(self) -> str:
        return f"unix://{self.socket}"

    def start(self, timeout: float = 30.0) -> float:
        """Start the process; seconds from spawn to the first ready Probe."""
        self.socket.unlink(missing_ok=True)
        with self.log_path.open("ab") as log:
            started = time.monotonic()
            self.process = subprocess.Popen(self.argv, cwd=self.cwd, stdout=log, stderr=log)
        deadline = started + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited early ({self.process.returncode}); "
                                   f"see {self.log_path}")
            if self.socket.exists() and probe_ready(self.endpoint):
                self.startup_seconds = time.monotonic() - started
                return self.startup_seconds
            time.sleep(0.002)
        raise RuntimeError(f"{self.name} was not ready within {timeout}s; see {self.log_path}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def rss_bytes(self) -> int:
        if self.process is None:
            return 0
        return int(psutil.Process(self.process.pid).memory_info().rss)


@dataclass
class DriverUnderTest:
    """A driver's processes, and what the load generator needs to talk to it."""

    name: str
    workdir: Path
    roles: list[Role]
    create_parameters: dict[str, str] = field(default_factory=dict)

    @property
    def kubelet_dir(self) -> Path:
        return self.workdir / "kubelet"

    def role(self, name: str) -> Role:
        for role in self.roles:
            if role.name in (name, "all"):
                return role
        raise KeyError(name)

    @property
    def controller_endpoint(self) -> str:
        return self.role("controller").endpoint

    @property
    def node_endpoint(self) -> str:
        return self.role("node").endpoint

    def start(self) -> dict[str, float]:
        self.kubelet_dir.mkdir(parents=True, exist_ok=True)
        return {role.name: role.start() for role in self.roles}

    def stop(self) -> None:
        for role in reversed(self.roles):
            role.stop()

    def rss(self) -> dict[str, int]:
        return {role.name: role.rss_bytes() for role in self.roles}

    def fresh(self) -> DriverUnderTest:
        """Wipe the work directory (state, sockets, logs) for a new start."""
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir.mkdir(parents=True)
        return self


def lustre_csi(workdir: Path, log_level: str = "info", source: Path = REPO) -> DriverUnderTest:
    """Our driver: controller and node plugin as separate processes over one local server set.

    `source`: the tree whose `csi` package runs (`python -m` from there), so a candidate change
    can be measured from a scratch copy against the same suite.
    """
    state = workdir / "state"

    def role(mode: str) -> Role:
        socket = workdir / f"{mode}.sock"
        return Role(mode, [
            sys.executable, "-m", "csi.cli", "--log-level", log_level, "serve",
            "--mode", mode, "--endpoint", f"unix://{socket}", "--node-id", NODE_ID,
            "--state-dir", str(state), "--kubelet-dir", str(workdir / "kubelet"),
        ], socket, workdir / f"{mode}.log", cwd=source)

    return DriverUnderTest("lustre-csi", workdir, [role("controller"), role("node")],
                           {"fsname": "bench"})


def hostpath(workdir: Path, binary: Path = DEFAULT_HOSTPATH) -> DriverUnderTest:
    """kubernetes-csi's reference driver, one process for controller and node."""
    socket = workdir / "hostpath.sock"
    argv = [str(binary), "--endpoint", f"unix://{socket}", "--nodeid", NODE_ID,
            "--statedir", str(workdir / "state"), "--drivername", "hostpath.csi.k8s.io",
            "--v", "2"]
    return DriverUnderTest("hostpath", workdir, [Role("all", argv, socket,
                                                      workdir / "hostpath.log")])


class RssSampler:
    """Peak resident memory of a driver's processes while a block runs (sampled every 50 ms)."""

    def __init__(self, driver: DriverUnderTest, interval: float = 0.05) -> None:
        self._driver = driver
        self._interval = interval
        self.peak: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            for name, value in self._driver.rss().items():
                self.peak[name] = max(self.peak.get(name, 0), value)
            if self._stop.wait(self._interval):
                return

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
