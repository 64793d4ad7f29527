"""Start `lustre-csi serve` as a real subprocess on a unix socket, for tests and benchmarks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from csi.cli.client import CsiClient
from csi.node.paths import kubelet_staging_path, kubelet_target_path

REPO = Path(__file__).resolve().parents[2]
STANDIN_LAUNCHER = "tests.support.serve_standin"  # --lustre-tools standin (test-only)


class DriverProcess:
    def __init__(
        self,
        workdir: Path,
        *,
        mode: str = "all",
        extra_args: Sequence[str] = (),
        module: str = "csi.cli",
    ) -> None:
        self.workdir = workdir
        self.socket = workdir / "csi.sock"
        self.state_dir = workdir / "state"
        self.kubelet_dir = workdir / "kubelet"
        self.kubelet_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "driver.log"
        self.argv = [
            sys.executable,
            "-m",
            module,
            "--log-level",
            "info",
            "serve",
            "--mode",
            mode,
            "--endpoint",
            f"unix://{self.socket}",
            "--node-id",
            "test-node",
            "--state-dir",
            str(self.state_dir),
            "--kubelet-dir",
            str(self.kubelet_dir),
            *extra_args,
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> DriverProcess:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(self.argv, cwd=REPO, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"driver exited early:\n{self.log()}")
            if self.socket.exists():
                try:
                    with CsiClient(str(self.socket), timeout=1) as client:
                        if client.probe():
                            return self
                except Exception:
                    pass
            time.sleep(0.02)
        raise RuntimeError(f"driver did not become ready in {timeout}s:\n{self.log()}")

    def staging_path(self, volume_id: str) -> str:
        """Where kubelet stages `volume_id` (csi_attacher.go), made as kubelet makes it."""
        return _made(Path(kubelet_staging_path(str(self.kubelet_dir), volume_id)), whole=True)

    def target_path(self, pv_name: str, pod_uid: str = "pod-1") -> str:
        """Where kubelet publishes PV `pv_name` into a pod (csi_mounter.go); kubelet makes the
        parent, the driver the directory itself."""
        target = kubelet_target_path(str(self.kubelet_dir), pv_name, pod_uid)
        return _made(Path(target), whole=False)

    def client(self) -> CsiClient:
        return CsiClient(str(self.socket))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def stop(self, timeout: float = 15.0) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise

    def __enter__(self) -> DriverProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def in_private_mount_namespace() -> bool:
    """True when our mounts cannot reach the host (hack/test.sh runs pytest under unshare).

    The parent's namespace is compared where it can be read; the sandbox may hide pid 1's.
    """
    try:
        return os.readlink("/proc/self/ns/mnt") != os.readlink(f"/proc/{os.getppid()}/ns/mnt")
    except OSError:
        return os.environ.get("LUSTRE_CSI_PRIVATE_MOUNTS") == "1"


def _made(path: Path, *, whole: bool) -> str:
    (path if whole else path.parent).mkdir(parents=True, exist_ok=True)
    return str(path)
