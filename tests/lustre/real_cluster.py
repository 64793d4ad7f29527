"""The real-Lustre tier's cluster: the provisioner's own server VMs and a client node VM.

`boot_file_system` has the provisioner (as its ServiceAccount, on the real API server) create
a LustreFileSystem's VirtualMachines, PVCs and cloud-init Secrets, and boots exactly those
objects with tests/support/vm_runner.py. The KubeVirt stand-in reports a VM ready when its real
guest passes the manifest's readiness probe (a prober thread asks the guests), as KubeVirt
follows a VM's readinessProbe. `RealFileSystem.boot_new_servers` boots servers the
provisioner adds later (growth).

`ClientNode` is a Lustre client VM from the same image, playing a Kubernetes node: LNet on its
storage NIC, lustre-csi installed from the project's wheel (tests/support/node_payload.py), the
API server reachable through its management network, the driver run by systemd.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from csi.errors import InProgress
from csi.node.paths import kubelet_staging_path, kubelet_target_path
from provisioner.kubevirt.addresses import management_mac, storage_mac
from provisioner.kubevirt.cloudinit import network_data
from provisioner.kubevirt.kube import PVCS, SECRETS, VIRTUAL_MACHINES
from provisioner.kubevirt.manifests import LABEL_SERVER, fs_selector, secret_name, vm_name
from tests.provisioner.conftest import FAST, NAMESPACE, SERVER_NAMESPACE, KubeEnv, wait_for
from tests.support.kube_credentials import write_kubeconfig
from tests.support.node_payload import MOUNT, VENV, build_payload
from tests.support.vm_runner import (
    ExecResult,
    PrivateNetwork,
    QemuVm,
    ServerImage,
    ServerVm,
    VmShape,
    accelerator,
)

FS = "real"
POOL = "10.47.0.0/24"
MDS_IP, OSS_IP = "10.47.0.1", "10.47.0.2"
MGS_NID = f"{MDS_IP}@tcp"
# The file system's OST pool: one OST of its own, on an OSS of its own (oss1, the next
# address), with the index that starts the first pool's block (csi.server_sets.POOL_INDEX_BLOCK).
FLASH, FLASH_OSS, FLASH_OSS_IP, FLASH_OST = "flash", "oss1", "10.47.0.3", "OST0400"
CLIENT_IP = "10.47.0.250"  # the node's storage NIC: outside what two file systems take
# TCG on a shared 2-core machine: minutes per boot.
BOOT_TIMEOUT = float(os.environ.get("LUSTRE_CSI_BOOT_TIMEOUT", "1500"))
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "lustre-2.17"
CSI_SOCKET = "/run/lustre-csi/csi.sock"
KUBELET = "/var/lib/kubelet"
TIMINGS_FILE = "timings.json"


def run_in(vm: QemuVm, script: str, timeout: float = 300.0, check: bool = True) -> ExecResult:
    """`script` in the guest's bash; AssertionError with its output when it fails (`check`)."""
    result = vm.shell(script, timeout)
    if check and result.exit_code != 0:
        raise AssertionError(f"{vm.name}: {script!r} exited {result.exit_code}: {result.output}")
    return result


@dataclass
class RealFileSystem:
    env: KubeEnv
    network: PrivateNetwork
    image: ServerImage
    fsname: str
    vms: dict[str, ServerVm]  # server name (mds0, oss0...) -> its VM
    work_dir: Path
    timings: dict[str, float] = field(default_factory=dict)
    readiness: GuestReadiness | None = None

    @property
    def mds(self) -> ServerVm:
        return self.vms["mds0"]

    @property
    def oss(self) -> ServerVm:
        return self.vms["oss0"]

    def run(self, vm: QemuVm, script: str, timeout: float = 300.0,
            check: bool = True) -> ExecResult:
        return run_in(vm, script, timeout, check)

    def capture(self, name: str, text: str) -> None:
        """Keep a real output for the parsers' fixtures.

        Always in the run's `captured/`; with LUSTRE_CSI_CAPTURE_FIXTURES=1 also in
        tests/fixtures/lustre-2.17/ when the fixture is new (the unit tests assert the figures
        of the ones there, which every run changes a little), =overwrite to replace them.
        """
        captured = self.work_dir / "captured"
        captured.mkdir(exist_ok=True)
        (captured / name).write_text(text)
        mode = os.environ.get("LUSTRE_CSI_CAPTURE_FIXTURES", "")
        fixture = FIXTURES / name
        if mode == "overwrite" or (mode == "1" and not fixture.exists()):
            FIXTURES.mkdir(parents=True, exist_ok=True)
            fixture.write_text(text)

    def record_timing(self, what: str, seconds: float) -> None:
        """A measured duration, for bench/real_lustre.py: in the run's work dir, and in
        $LUSTRE_CSI_TIMINGS when the benchmark runs the tier."""
        self.timings[what] = round(seconds, 3)
        text = json.dumps({"accelerator": accelerator(self.image), **self.timings}, indent=2)
        (self.work_dir / TIMINGS_FILE).write_text(text)
        if os.environ.get("LUSTRE_CSI_TIMINGS"):
            Path(os.environ["LUSTRE_CSI_TIMINGS"]).write_text(text)

    def boot_log(self, vm: ServerVm) -> str:
        return self.run(vm, "journalctl -b -t lustre-targets --no-pager -o cat").stdout

    def wait_all_ready(self, what: str) -> None:
        started = time.monotonic()
        for vm in self.vms.values():
            vm.wait_ready(BOOT_TIMEOUT - (time.monotonic() - started))
        self.record_timing(what, time.monotonic() - started)

    def server_objects(self, server: str) -> tuple[dict, list[dict], dict]:
        admin = self.env.admin
        vm = admin.get(VIRTUAL_MACHINES, vm_name(self.fsname, server), SERVER_NAMESPACE)
        secret = admin.get(SECRETS, secret_name(self.fsname, server), SERVER_NAMESPACE)
        pvcs = admin.list(PVCS, SERVER_NAMESPACE,
                          f"{fs_selector(self.fsname)},{LABEL_SERVER}={server}")[0]
        assert vm and secret and pvcs, f"objects of {server}: vm={bool(vm)} secret={bool(secret)}"
        return vm, pvcs, secret

    def server_names(self) -> list[str]:
        vms = self.env.admin.list(VIRTUAL_MACHINES, SERVER_NAMESPACE,
                                  fs_selector(self.fsname))[0]
        return sorted(vm["metadata"]["labels"][LABEL_SERVER] for vm in vms)

    def stop_deleted_servers(self) -> list[str]:
        """Kill the VMs whose VirtualMachine is gone, as virt-launcher goes with its VM."""
        gone = [server for server in self.vms if server not in self.server_names()]
        for server in gone:
            self.vms.pop(server).kill()
        return gone

    def boot_new_servers(self) -> list[ServerVm]:
        """Boot the servers the provisioner has made objects for since the last call."""
        started = []
        for server in self.server_names():
            if server not in self.vms:
                vm, pvcs, secret = self.server_objects(server)
                self.vms[server] = ServerVm(vm, pvcs, secret, self.image, self.network,
                                            self.work_dir)
                self.vms[server].start()
                started.append(self.vms[server])
        return started


class GuestReadiness:
    """The guests' readiness probes, asked in the background; the KubeVirt stand-in reads it."""

    def __init__(self, fs: RealFileSystem, period: float = 3.0) -> None:
        self._file_systems = [fs]
        self._period = period
        self._ready: dict[str, bool] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="guest-readiness", daemon=True)

    def __call__(self, vm_object_name: str) -> bool:
        return self._ready.get(vm_object_name, False)

    def start(self) -> GuestReadiness:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def watch(self, fs: RealFileSystem) -> None:
        """Probe the servers of another file system too (a dedicated volume's)."""
        self._file_systems.append(fs)

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            for vm in [vm for fs in list(self._file_systems) for vm in list(fs.vms.values())]:
                result = vm.ready()
                self._ready[vm.name] = result is not None and result.exit_code == 0


@contextlib.contextmanager
def boot_file_system(env: KubeEnv, image: ServerImage, work_dir: Path, network: PrivateNetwork,
                     fsname: str, servers: int = 2,
                     **settings: Any) -> Iterator[RealFileSystem]:
    """A LustreFileSystem made by the provisioner and served by real VMs, until the end.

    `servers`: how many server VMs (and at least as many PVCs) the provisioner makes for it."""
    from tests.provisioner.conftest import template

    runner = env.runner(FAST)
    fs = RealFileSystem(env, network, image, fsname, {}, work_dir)
    readiness = fs.readiness = GuestReadiness(fs)
    env.standin.guest_ready = readiness
    readiness.start()
    started = time.monotonic()
    try:
        with contextlib.suppress(InProgress):
            env.provider().ensure_file_system(fsname, template(**settings))
        wait_for(lambda: len(fs.server_names()) >= servers and len(
            env.admin.list(PVCS, SERVER_NAMESPACE, fs_selector(fsname))[0]) >= servers,
            60, "the servers' objects")
        fs.boot_new_servers()
        fs.wait_all_ready("first boot to ready")
        wait_for(lambda: (env.lfs(fsname) or {}).get("status", {}).get("phase") == "Ready",
                 120, "phase Ready")
        fs.record_timing("creation to phase Ready", time.monotonic() - started)
        yield fs
        print(f"\nreal-Lustre timings, seconds ({accelerator(image)}): {fs.timings}")
    finally:
        readiness.stop()
        for server_vm in fs.vms.values():
            server_vm.kill()
        env.standin.guest_ready = None
        runner.stop()
        env.runners.remove(runner)


# -- the client node ----------------------------------------------------------------------------

def client_shape(payload: Path) -> VmShape:
    """A node: eth0 on the management network (DHCP), eth1 on the storage network."""
    user_data = "#cloud-config\n" + yaml.safe_dump({
        "write_files": [{
            # As on the servers: LNet on the storage NIC before any Lustre module loads.
            "path": "/etc/modprobe.d/lustre-csi-lnet.conf",
            "content": "options lnet networks=tcp0(eth1)\n",
        }],
        "runcmd": [
            ["mkdir", "-p", MOUNT],
            ["mount", "-o", "ro", "/dev/disk/by-id/virtio-payload0", MOUNT],
            ["modprobe", "lustre"],
            ["lctl", "network", "up"],
        ],
    }, sort_keys=False)
    return VmShape(
        name="client0", namespace="nodes", cores=1, memory_mib=1536,
        probe=["/bin/sh", "-c", f"lctl list_nids | grep -q @tcp && mountpoint -q {MOUNT}"],
        targets=[], user_data=user_data,
        network_data=network_data(storage_ip=CLIENT_IP, prefix_length=24,
                                  storage_interface="eth1"),
        interfaces=[("management", management_mac(CLIENT_IP)),
                    ("storage", storage_mac(CLIENT_IP))],
        extra_isos=(payload,),
    )


class ClientNode:
    """The client VM with lustre-csi installed from the wheel and served by systemd."""

    def __init__(self, vm: QemuVm, boot_seconds: float) -> None:
        self.vm = vm
        self.boot_seconds = boot_seconds

    def run(self, script: str, timeout: float = 300.0, check: bool = True) -> ExecResult:
        return run_in(self.vm, script, timeout, check)

    def install(self) -> str:
        return self.run(f"sh {MOUNT}/install.sh", timeout=900).stdout.strip()

    def start_driver(self, *extra: str) -> None:
        """`lustre-csi serve --mode all --lustre-tools kernel` on the KubeVirt server sets.

        Through serve_for_sanity.py, which adds csi-sanity's two path shapes to kubelet's.
        """
        argv = [f"{VENV}/bin/python3", f"{MOUNT}/serve_for_sanity.py", "serve",
                "--mode", "all", "--lustre-tools", "kernel", "--server-sets", "kubevirt",
                "--kubeconfig", f"{MOUNT}/kubeconfig", "--namespace", NAMESPACE,
                "--server-namespace", SERVER_NAMESPACE, "--endpoint", f"unix://{CSI_SOCKET}",
                "--node-id", self.vm.name, "--state-dir", "/var/lib/lustre-csi", *extra]
        # Kubelet's root, as kubelet makes it before it calls any plugin.
        self.run(f"mkdir -p {KUBELET} {os.path.dirname(CSI_SOCKET)} && "
                 "systemd-run --unit=lustre-csi "
                 f"--property=KillMode=mixed {shlex.join(argv)}")
        deadline = time.monotonic() + 300
        while (probe := self.csi("probe", check=False)).stdout.strip() != "ready":
            assert time.monotonic() < deadline, f"driver never ready: {probe.output}\n" \
                                                f"{self.driver_log()}"
            time.sleep(3)

    def stop_driver(self) -> None:
        self.run("systemctl stop lustre-csi.service; systemctl reset-failed lustre-csi.service",
                 check=False)

    def driver_log(self, lines: int = 80) -> str:
        return self.run(f"journalctl -u lustre-csi -n {lines} --no-pager -o cat",
                        check=False).stdout

    def csi(self, *args: str, timeout: float = 600.0, check: bool = True) -> ExecResult:
        """`lustre-csi client <args>` against the driver; a generous deadline under TCG."""
        argv = [f"{VENV}/bin/lustre-csi", "client", "--endpoint", f"unix://{CSI_SOCKET}",
                "--timeout", str(int(timeout - 10)), *args]
        result = self.run(shlex.join(argv), timeout=timeout, check=False)
        if check and result.exit_code != 0:
            raise AssertionError(f"lustre-csi client {' '.join(args)}: {result.output}\n"
                                 f"{self.driver_log()}")
        return result

    @staticmethod
    def kubelet_paths(volume_id: str, name: str) -> tuple[str, str]:
        """Kubelet's staging path for `volume_id` and pod-<name>'s target path for pv-<name>."""
        return (kubelet_staging_path(KUBELET, volume_id),
                kubelet_target_path(KUBELET, f"pv-{name}", f"pod-{name}"))

    def stage(self, volume: dict[str, Any], staging: str) -> ExecResult:
        """NodeStageVolume of a created `volume` (its id and volume_context) at `staging`."""
        return self.csi("stage", "--staging-path", staging, *_context_args(volume),
                        volume["volume_id"])

    def publish(self, volume: dict[str, Any], staging: str, target: str) -> ExecResult:
        return self.csi("publish", "--staging-path", staging, "--target-path", target,
                        *_context_args(volume), volume["volume_id"])

    def served_seconds(self, method: str) -> float:
        """How long the driver took for its last `method` call, from its own log line
        (`csi.rpc: <method> -> OK in <ms> ms`): the call alone, without the CLI's start."""
        log = self.run(f"journalctl -u lustre-csi --no-pager -o cat | "
                       f"grep -F 'csi.rpc: {method} -> OK in ' | tail -n 1").stdout
        assert log, f"no {method} -> OK in the driver's log"
        return float(log.rsplit(" in ", 1)[1].split()[0]) / 1000

    def csi_json(self, *args: str, timeout: float = 600.0) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.csi(*args, timeout=timeout).stdout)
        return document


def _context_args(volume: dict[str, Any]) -> list[str]:
    return [arg for key, value in volume["volume_context"].items()
            for arg in ("--context", f"{key}={value}")]


def client_kubeconfig(env: KubeEnv, work_dir: Path, api_address: str) -> str:
    """The controller ServiceAccount's kubeconfig, as the node VM reaches the API server.

    Through the relay the address is the gateway's, which the serving certificate does not
    name: it is checked against kubernetes.default.svc, a name the API server's self-signed
    certificate carries (as in-cluster clients see it).
    """
    token = env.cluster.service_account_token(NAMESPACE, "lustre-csi-controller",
                                              expiration_seconds=6 * 3600)
    path = write_kubeconfig(work_dir / "client.kubeconfig", server=f"https://{api_address}",
                            ca_file=env.cluster.ca_file, token=token, embed_ca=True,
                            tls_server_name="kubernetes.default.svc")
    return path.read_text()


@contextlib.contextmanager
def boot_client_node(env: KubeEnv, image: ServerImage, work_dir: Path,
                     network: PrivateNetwork, files: dict[str, str]) -> Iterator[ClientNode]:
    api_address = network.expose_host_port(env.cluster.apiserver_port)
    payload = build_payload(work_dir / "client0",
                            {"kubeconfig": client_kubeconfig(env, work_dir, api_address), **files})
    vm = QemuVm(client_shape(payload), image, network, work_dir)
    vm.start()
    try:
        yield ClientNode(vm, vm.wait_ready(BOOT_TIMEOUT))
    finally:
        vm.kill()
