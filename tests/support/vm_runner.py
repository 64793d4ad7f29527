"""QEMU server VMs from the provisioner's own objects: the Lustre tier's virt-launcher.

Given a VirtualMachine, its target PVCs and its cloud-init Secret exactly as the provisioner
made them (read back from the API server), `ServerVm` boots what KubeVirt would:

- the root disk: the server image (hack/lustre/image.sh) as a fresh qcow2 overlay at every
  start, as a containerDisk is; QEMU boots its kernel directly (`-kernel/-initrd/-append`,
  no bootloader on this path);
- the NoCloud seed: an iso9660 volume labelled `cidata` with the Secret's `userdata` and
  `networkdata` (and meta-data naming the instance `<vm>.<namespace>`, as KubeVirt does), on
  the virtio bus as the manifest's `cloudinit` disk says;
- one disk per target PVC, with the serial the manifest names (`virtio-blk-pci ...,serial=`
  for the virtio bus; `scsi-hd` on a virtio-scsi controller for hotplugged ones); sparse files
  stand in for the PVCs and are kept across restarts;
- the manifest's interfaces in order, with their fixed MACs, the management NIC first: each a
  tap device on a bridge of a private network namespace (`PrivateNetwork`). The management
  bridge has a DHCP server (KubeVirt's masquerade binding gives the guest a DHCP lease too);
  the storage bridge carries only the guests' static pool addresses, never the host's.

The serial console goes to `console.log` in the VM's directory (appended across restarts).
Readiness is what the manifest's readinessProbe says: its exec command run in the guest
through the QEMU guest agent (as KubeVirt runs exec probes), exit code 0.

Accelerator: KVM when a probe shows it boots this kernel (it reaches the kernel's panic for a
missing root within seconds), else TCG; the answer is kept in the cache dir per host and guest
kernel, and `LUSTRE_CSI_QEMU_ACCEL=tcg|kvm` overrides it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from csi.quantity import parse_quantity

CACHE = Path(os.environ.get("LUSTRE_CSI_CACHE", "/var/cache/lustre-csi"))
QEMU = "qemu-system-x86_64"
HOST_TOOLS = {QEMU: "qemu-system-x86", "qemu-img": "qemu-utils", "genisoimage": "genisoimage",
              "dnsmasq": "dnsmasq-base", "ip": "iproute2", "socat": "socat"}


class VmError(RuntimeError):
    """A VM could not be started, reached or stopped as asked."""


def missing_host_tools() -> list[str]:
    """Debian packages to install for the tools the runner needs and cannot find."""
    return sorted({package for tool, package in HOST_TOOLS.items() if shutil.which(tool) is None})


@dataclass(frozen=True)
class ServerImage:
    """One build of hack/lustre/image.sh: the disk and its kernel, initrd and command line."""

    directory: Path

    @property
    def disk(self) -> Path:
        return self.directory / "disk.qcow2"

    @property
    def kernel(self) -> Path:
        return self.directory / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.directory / "initrd.img"

    @property
    def cmdline(self) -> str:
        return (self.directory / "cmdline").read_text().strip()

    def missing(self) -> list[str]:
        return [p.name for p in (self.disk, self.kernel, self.initrd, self.directory / "cmdline")
                if not p.is_file()]


def _run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=True, text=True, capture_output=True, **kwargs)


# -- the accelerator ----------------------------------------------------------------------------

_accelerator: str | None = None


def accelerator(image: ServerImage) -> str:
    """`kvm` when KVM boots this kernel here, else `tcg` (probed once per process)."""
    global _accelerator
    forced = os.environ.get("LUSTRE_CSI_QEMU_ACCEL", "")
    if forced in ("kvm", "tcg"):
        return forced
    if _accelerator is None:
        # The probe costs its timeout where KVM hangs: remember its answer per host kernel
        # and guest kernel.
        stamp = CACHE / "vm" / f"accel-{os.uname().release}-{image.kernel.stat().st_size}"
        with contextlib.suppress(OSError):
            _accelerator = stamp.read_text().strip()
        if _accelerator not in ("kvm", "tcg"):
            _accelerator = "kvm" if _kvm_boots(image) else "tcg"
            with contextlib.suppress(OSError):
                stamp.parent.mkdir(parents=True, exist_ok=True)
                stamp.write_text(_accelerator)
    return _accelerator


def _kvm_boots(image: ServerImage, timeout: float = 20.0) -> bool:
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    # No initrd and no disk: a kernel that runs panics at once for want of a root file system,
    # and panic=-1 with -no-reboot ends QEMU. Where KVM is broken the kernel hangs instead.
    argv = [QEMU, "-accel", "kvm", "-cpu", "host", "-m", "256", "-nodefaults", "-no-user-config",
            "-display", "none", "-serial", "stdio", "-no-reboot", "-kernel", str(image.kernel),
            "-append", "console=ttyS0 panic=-1"]
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                                check=False, errors="replace")
    except subprocess.TimeoutExpired:
        return False
    return "Kernel panic" in result.stdout


# -- the network --------------------------------------------------------------------------------

class PrivateNetwork:
    """A network namespace with a management and a storage bridge, and taps on them."""

    MANAGEMENT_ADDRESS = "10.0.2.1/24"  # KubeVirt's masquerade gateway

    def __init__(self, work_dir: Path, name: str = "") -> None:
        self.name = name or f"lcsi-{secrets.token_hex(3)}"
        self.work_dir = work_dir
        self.bridges = {"management": "br-mgmt", "storage": "br-storage"}
        self._dnsmasq: subprocess.Popen[bytes] | None = None
        self._forwarders: list[subprocess.Popen[bytes]] = []
        self._taps = 0

    def create(self) -> PrivateNetwork:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        _run(["ip", "netns", "add", self.name])
        self._ip("link", "set", "lo", "up")
        for bridge in self.bridges.values():
            self._ip("link", "add", bridge, "type", "bridge")
            self._ip("link", "set", bridge, "up")
        self._ip("addr", "add", self.MANAGEMENT_ADDRESS, "dev", self.bridges["management"])
        self._dnsmasq = subprocess.Popen(
            ["ip", "netns", "exec", self.name, "dnsmasq", "--keep-in-foreground",
             "--no-resolv", "--no-hosts", "--port=0", "--bind-interfaces",
             f"--interface={self.bridges['management']}",
             "--dhcp-range=10.0.2.10,10.0.2.250,255.255.255.0,1h",
             f"--dhcp-leasefile={self.work_dir / 'dnsmasq.leases'}",
             f"--log-facility={self.work_dir / 'dnsmasq.log'}", "--log-dhcp"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return self

    def tap(self, network: str) -> str:
        """A new tap device on the bridge of `network` ("management" or "storage")."""
        self._taps += 1
        name = f"tap{self._taps}"
        self._ip("tuntap", "add", "dev", name, "mode", "tap")
        self._ip("link", "set", name, "master", self.bridges[network])
        self._ip("link", "set", name, "up")
        return name

    def expose_host_port(self, port: int) -> str:
        """Make the host's 127.0.0.1:`port` reachable from the guests at `<gateway>:port`.

        As a node reaches the API server: through its management network. A loopback port is
        not reachable from another network namespace, but a unix socket path is, so one socat
        in the namespace listens on the gateway address and relays into a socket file that a
        second socat, on the host, relays to the port.
        """
        gateway = self.MANAGEMENT_ADDRESS.split("/")[0]
        relay = self.work_dir / f"host-{port}.sock"
        relay.unlink(missing_ok=True)
        self._forwarders.append(subprocess.Popen(
            ["socat", f"UNIX-LISTEN:{relay},fork", f"TCP:127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        self._forwarders.append(subprocess.Popen(
            ["ip", "netns", "exec", self.name, "socat",
             f"TCP-LISTEN:{port},bind={gateway},fork,reuseaddr", f"UNIX-CONNECT:{relay}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        return f"{gateway}:{port}"

    def remove_tap(self, name: str) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._ip("link", "del", name)

    def destroy(self) -> None:
        for forwarder in self._forwarders:
            forwarder.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                forwarder.wait(5)
        self._forwarders = []
        if self._dnsmasq is not None:
            self._dnsmasq.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._dnsmasq.wait(5)
            self._dnsmasq = None
        with contextlib.suppress(subprocess.CalledProcessError):
            _run(["ip", "netns", "del", self.name])

    def _ip(self, *args: str) -> None:
        _run(["ip", "-n", self.name, *args])


# -- the guest agent ----------------------------------------------------------------------------

@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


class GuestAgent:
    """The QEMU guest agent's JSON protocol on a unix socket: guest-exec and its status."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def call(self, command: str, arguments: dict[str, Any] | None = None,
             timeout: float = 10.0) -> Any:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(self.path))
            stream = sock.makefile("rwb")
            # A reply to an earlier, abandoned request may still be queued: sync on a fresh id.
            sync_id = secrets.randbelow(1 << 31)
            self._send(stream, "guest-sync", {"id": sync_id})
            while self._receive(stream).get("return") != sync_id:
                pass
            self._send(stream, command, arguments)
            reply = self._receive(stream)
        if "error" in reply:
            raise VmError(f"guest agent {command}: {reply['error'].get('desc', reply['error'])}")
        return reply.get("return")

    def ping(self) -> bool:
        try:
            self.call("guest-ping", timeout=3.0)
        except (OSError, VmError, ValueError):
            return False
        return True

    def exec(self, argv: list[str], timeout: float = 120.0, stdin: str = "") -> ExecResult:
        arguments: dict[str, Any] = {"path": argv[0], "arg": argv[1:], "capture-output": True}
        if stdin:
            arguments["input-data"] = base64.b64encode(stdin.encode()).decode()
        pid = self.call("guest-exec", arguments)["pid"]
        deadline = time.monotonic() + timeout
        while True:
            status = self.call("guest-exec-status", {"pid": pid})
            if status.get("exited"):
                break
            if time.monotonic() > deadline:
                raise VmError(f"{argv} still running in the guest after {timeout:.0f} s")
            time.sleep(0.2)
        decode = lambda key: base64.b64decode(status.get(key, "")).decode(errors="replace")  # noqa: E731
        code = status.get("exitcode", 128 + int(status.get("signal", 0)))
        return ExecResult(int(code), decode("out-data"), decode("err-data"))

    @staticmethod
    def _send(stream: Any, command: str, arguments: dict[str, Any] | None) -> None:
        message: dict[str, Any] = {"execute": command}
        if arguments is not None:
            message["arguments"] = arguments
        stream.write(json.dumps(message).encode() + b"\n")
        stream.flush()

    @staticmethod
    def _receive(stream: Any) -> dict[str, Any]:
        line = stream.readline()
        if not line:
            raise VmError("guest agent closed the connection")
        reply: dict[str, Any] = json.loads(line.lstrip(b"\xff"))
        return reply


# -- one VM -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TargetDisk:
    serial: str
    bus: str  # "virtio" | "scsi"
    claim: str
    size_bytes: int


def _decoded(secret: dict[str, Any], key: str) -> str:
    if key in (secret.get("stringData") or {}):
        value: str = secret["stringData"][key]
        return value
    return base64.b64decode(secret["data"][key]).decode()


@dataclass(frozen=True)
class VmShape:
    """What QEMU is given for one VM, wherever it was read from."""

    name: str
    namespace: str
    cores: int
    memory_mib: int
    probe: list[str]  # the readiness probe, run through the guest agent
    targets: list[TargetDisk]
    user_data: str
    network_data: str
    # (network kind, MAC) in order: the guest's eth0 is the first.
    interfaces: list[tuple[str, str]]
    extra_isos: tuple[Path, ...] = ()  # read-only CD-ROMs (a node's payload)


def server_shape(vm: dict[str, Any], pvcs: list[dict[str, Any]],
                 secret: dict[str, Any]) -> VmShape:
    """The VirtualMachine, its target PVCs and its cloud-init Secret as KubeVirt reads them."""
    name: str = vm["metadata"]["name"]
    spec = vm["spec"]["template"]["spec"]
    domain = spec["domain"]
    claims = {p["metadata"]["name"]: p for p in pvcs}
    volumes = {v["name"]: v for v in spec["volumes"]}
    targets: list[TargetDisk] = []
    user_data = network_data = ""
    for disk in domain["devices"]["disks"]:
        volume = volumes[disk["name"]]
        if "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]["claimName"]
            if claim not in claims:
                raise VmError(f"{name}: disk {disk['name']} needs PVC {claim}, not given")
            size = parse_quantity(
                "storage", claims[claim]["spec"]["resources"]["requests"]["storage"])
            targets.append(TargetDisk(disk["serial"], disk["disk"]["bus"], claim, size))
        elif "cloudInitNoCloud" in volume:
            source = volume["cloudInitNoCloud"]
            names = {source["secretRef"]["name"], source["networkDataSecretRef"]["name"]}
            if names != {secret["metadata"]["name"]}:
                raise VmError(f"{name}: cloud-init from {names}, given "
                              f"{secret['metadata']['name']}")
            user_data = _decoded(secret, "userdata")
            network_data = _decoded(secret, "networkdata")
    networks = {n["name"]: n for n in spec["networks"]}
    return VmShape(
        name=name, namespace=vm["metadata"].get("namespace", "default"),
        cores=int((domain.get("cpu") or {}).get("cores", 1)),
        memory_mib=parse_quantity("memory", domain["memory"]["guest"]) >> 20,
        probe=spec["readinessProbe"]["exec"]["command"], targets=targets,
        user_data=user_data, network_data=network_data,
        interfaces=[("management" if "pod" in networks[i["name"]] else "storage",
                     i["macAddress"]) for i in domain["devices"]["interfaces"]],
    )


class QemuVm:
    """One VM booted by QEMU from its shape; `start`, `stop` (ACPI), `kill` (-9), `restart`."""

    def __init__(self, shape: VmShape, image: ServerImage, network: PrivateNetwork,
                 work_dir: Path) -> None:
        self.shape = shape
        self.image = image
        self.network = network
        self.dir = work_dir / shape.name
        self.process: subprocess.Popen[bytes] | None = None
        self._taps: list[str] = []

    @property
    def name(self) -> str:
        return self.shape.name

    @property
    def targets(self) -> list[TargetDisk]:
        return self.shape.targets

    # -- paths --
    @property
    def console_path(self) -> Path:
        return self.dir / "console.log"

    @property
    def agent(self) -> GuestAgent:
        return GuestAgent(self.dir / "qga.sock")

    def disk_path(self, claim: str) -> Path:
        return self.dir.parent / "pvcs" / f"{claim}.img"

    # -- lifecycle --
    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        if self.running:
            raise VmError(f"{self.name} is running already")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.disk_path("x").parent.mkdir(exist_ok=True)
        root = self.dir / "root.qcow2"
        root.unlink(missing_ok=True)  # a containerDisk is fresh at every start
        _run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
              str(self.image.disk), str(root)])
        for target in self.targets:
            path = self.disk_path(target.claim)
            if not path.exists():
                with path.open("wb") as blank:
                    blank.truncate(target.size_bytes)
        seed = self._seed()
        for sock in ("qga.sock", "qmp.sock"):
            (self.dir / sock).unlink(missing_ok=True)
        self._taps = [self.network.tap(kind) for kind, _ in self.shape.interfaces]
        accel = accelerator(self.image)
        argv = ["ip", "netns", "exec", self.network.name, QEMU, "-name", self.name,
                "-machine", f"q35,accel={accel}", "-cpu", "host" if accel == "kvm" else "max",
                "-smp", str(self.shape.cores), "-m", str(self.shape.memory_mib),
                "-nodefaults", "-no-user-config", "-display", "none",
                "-kernel", str(self.image.kernel), "-initrd", str(self.image.initrd),
                "-append", self.image.cmdline,
                "-chardev", f"file,id=console,path={self.console_path},append=on",
                "-serial", "chardev:console",
                "-chardev", f"socket,id=qmp,path={self.dir / 'qmp.sock'},server=on,wait=off",
                "-mon", "chardev=qmp,mode=control",
                "-device", "virtio-serial-pci,id=serial0",
                "-chardev", f"socket,id=qga,path={self.dir / 'qga.sock'},server=on,wait=off",
                "-device", "virtserialport,chardev=qga,name=org.qemu.guest_agent.0",
                "-drive", f"file={root},if=none,id=root,format=qcow2,cache=unsafe",
                "-device", "virtio-blk-pci,drive=root,bootindex=1",
                "-drive", f"file={seed},if=none,id=cloudinit,format=raw,readonly=on",
                "-device", "virtio-blk-pci,drive=cloudinit"]
        if any(t.bus == "scsi" for t in self.targets):
            argv += ["-device", "virtio-scsi-pci,id=scsi0"]
        for number, target in enumerate(self.targets):
            drive = f"target{number}"
            argv += ["-drive", f"file={self.disk_path(target.claim)},if=none,id={drive},"
                               "format=raw,cache=none,aio=threads"]
            if target.bus == "scsi":
                argv += ["-device", f"scsi-hd,bus=scsi0.0,drive={drive},serial={target.serial}"]
            else:
                argv += ["-device", f"virtio-blk-pci,drive={drive},serial={target.serial}"]
        for number, iso in enumerate(self.shape.extra_isos):
            argv += ["-drive", f"file={iso},if=none,id=extra{number},format=raw,readonly=on",
                     "-device", f"virtio-blk-pci,drive=extra{number},serial=payload{number}"]
        interfaces = zip(self.shape.interfaces, self._taps, strict=True)
        for number, ((_, mac), tap) in enumerate(interfaces):
            argv += ["-netdev", f"tap,id=net{number},ifname={tap},script=no,downscript=no",
                     "-device", f"virtio-net-pci,netdev=net{number},mac={mac}"]
        with self.console_path.open("ab") as console:
            console.write(f"\n==== vm_runner: start {self.name} ({accel}) ====\n".encode())
        self.process = subprocess.Popen(argv, stdout=(self.dir / "qemu.log").open("ab"),
                                        stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self, timeout: float = 120.0) -> None:
        """ACPI power button, as KubeVirt does on a graceful stop; -9 after `timeout`."""
        if not self.running:
            return self._cleanup()
        with contextlib.suppress(OSError, VmError):
            self._qmp("system_powerdown")
        try:
            assert self.process is not None
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self._cleanup()

    def kill(self) -> None:
        """SIGKILL to QEMU: the server dies with its disks' caches and MMP blocks as they are."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self._cleanup()

    def restart(self) -> None:
        self.stop()
        self.start()

    # -- the guest --
    def exec(self, argv: list[str], timeout: float = 120.0) -> ExecResult:
        return self.agent.exec(argv, timeout)

    def shell(self, script: str, timeout: float = 120.0) -> ExecResult:
        return self.agent.exec(["/bin/bash", "-c", script], timeout)

    def ready(self) -> ExecResult | None:
        """The readiness probe's result, or None while the guest agent does not answer."""
        if not self.running or not self.agent.ping():
            return None
        try:
            return self.exec(self.shape.probe, timeout=60)
        except (OSError, VmError):
            return None

    def wait_ready(self, timeout: float) -> float:
        """Seconds until the readiness probe passed; VmError with the last answer if it did not."""
        started = time.monotonic()
        last: ExecResult | None = None
        while time.monotonic() - started < timeout:
            if not self.running:
                code = self.process.returncode if self.process else None
                raise VmError(f"{self.name}: QEMU exited ({code}); console: "
                              f"{self.console_tail()}")
            result = self.ready()
            if result is not None:
                last = result
                if result.exit_code == 0:
                    return time.monotonic() - started
            time.sleep(3)
        raise VmError(f"{self.name} not ready after {timeout:.0f} s; probe said "
                      f"{last.output.strip() if last else 'nothing (no guest agent)'!r}; "
                      f"console: {self.console_tail()}")

    def console_tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            text = self.console_path.read_text(errors="replace")
            return "\n".join(text.splitlines()[-lines:])
        return ""

    # -- internals --
    def _seed(self) -> Path:
        seed_dir = self.dir / "seed"
        shutil.rmtree(seed_dir, ignore_errors=True)
        seed_dir.mkdir()
        (seed_dir / "user-data").write_text(self.shape.user_data)
        (seed_dir / "network-config").write_text(self.shape.network_data)
        (seed_dir / "meta-data").write_text(
            f"instance-id: {self.name}.{self.shape.namespace}\nlocal-hostname: {self.name}\n")
        iso = self.dir / "cloudinit.iso"
        _run(["genisoimage", "-quiet", "-output", str(iso), "-volid", "cidata", "-joliet",
              "-rock", str(seed_dir / "user-data"), str(seed_dir / "meta-data"),
              str(seed_dir / "network-config")])
        return iso

    def _qmp(self, command: str) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(self.dir / "qmp.sock"))
            stream = sock.makefile("rwb")
            stream.readline()  # greeting
            for message in ({"execute": "qmp_capabilities"}, {"execute": command}):
                stream.write(json.dumps(message).encode() + b"\n")
                stream.flush()
                while "return" not in (reply := json.loads(stream.readline() or b"{}")):
                    if "error" in reply or not reply:
                        raise VmError(f"QMP {message['execute']}: {reply}")

    def _cleanup(self) -> None:
        for tap in self._taps:
            self.network.remove_tap(tap)
        self._taps = []


class ServerVm(QemuVm):
    """A Lustre server: the VirtualMachine exactly as the provisioner generated it."""

    def __init__(self, vm: dict[str, Any], pvcs: list[dict[str, Any]], secret: dict[str, Any],
                 image: ServerImage, network: PrivateNetwork, work_dir: Path) -> None:
        super().__init__(server_shape(vm, pvcs, secret), image, network, work_dir)
