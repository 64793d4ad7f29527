"""A LustreFileSystem served by real Lustre 2.17 servers in QEMU VMs (issue 14, part 1).

The provisioner (as its ServiceAccount, on the real API server) creates the file system's
VirtualMachines, PVCs and cloud-init Secrets; tests/support/vm_runner.py boots exactly those
objects; the boot script in the Secret formats, mounts and configures everything. The KubeVirt
stand-in holds the VMs not-ready until the real guests pass their readiness probe.

The tests share one file system and run in order: boot, client I/O, restarts, a foreign disk.
Real command outputs are saved in the run's work dir (`captured/`) and, with
LUSTRE_CSI_CAPTURE_FIXTURES=1, into tests/fixtures/lustre-2.17/ for the parsers' unit tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from csi.errors import InProgress
from provisioner.kubevirt.kube import PVCS, SECRETS, VIRTUAL_MACHINES
from provisioner.kubevirt.manifests import LABEL_SERVER, fs_selector, secret_name, vm_name
from tests.provisioner.conftest import FAST, SERVER_NAMESPACE, KubeEnv, template, wait_for
from tests.support.vm_runner import ExecResult, PrivateNetwork, ServerImage, ServerVm

# Boots under TCG take minutes: past pytest-timeout's 600 s default.
pytestmark = pytest.mark.timeout(3600)
FS = "real"
POOL = "10.47.0.0/24"
MDS_IP, OSS_IP = "10.47.0.1", "10.47.0.2"
MGS_NID = f"{MDS_IP}@tcp"
# TCG on a shared 2-core machine: minutes per boot.
BOOT_TIMEOUT = float(os.environ.get("LUSTRE_CSI_BOOT_TIMEOUT", "1500"))
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "lustre-2.17"
CLIENT_MOUNT = "/mnt/real"


@dataclass
class RealFileSystem:
    env: KubeEnv
    network: PrivateNetwork
    vms: dict[str, ServerVm]
    work_dir: Path
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def mds(self) -> ServerVm:
        return self.vms["mds0"]

    @property
    def oss(self) -> ServerVm:
        return self.vms["oss0"]

    def run(self, vm: ServerVm, script: str, timeout: float = 300.0,
            check: bool = True) -> ExecResult:
        result = vm.shell(script, timeout)
        if check and result.exit_code != 0:
            raise AssertionError(f"{vm.name}: {script!r} exited {result.exit_code}: "
                                 f"{result.output}")
        return result

    def capture(self, name: str, text: str) -> None:
        """Keep a real output for the parsers' fixtures."""
        captured = self.work_dir / "captured"
        captured.mkdir(exist_ok=True)
        (captured / name).write_text(text)
        if os.environ.get("LUSTRE_CSI_CAPTURE_FIXTURES") == "1":
            FIXTURES.mkdir(parents=True, exist_ok=True)
            (FIXTURES / name).write_text(text)

    def boot_log(self, vm: ServerVm) -> str:
        return self.run(vm, "journalctl -b -t lustre-targets --no-pager -o cat").stdout

    def wait_all_ready(self, what: str) -> None:
        started = time.monotonic()
        for vm in self.vms.values():
            vm.wait_ready(BOOT_TIMEOUT - (time.monotonic() - started))
        self.timings[what] = time.monotonic() - started


def _server_objects(env: KubeEnv, server: str) -> tuple[dict, list[dict], dict]:
    vm = env.admin.get(VIRTUAL_MACHINES, vm_name(FS, server), SERVER_NAMESPACE)
    secret = env.admin.get(SECRETS, secret_name(FS, server), SERVER_NAMESPACE)
    pvcs = env.admin.list(PVCS, SERVER_NAMESPACE, f"{fs_selector(FS)},{LABEL_SERVER}={server}")[0]
    assert vm and secret and pvcs, f"objects of {server}: vm={bool(vm)} secret={bool(secret)}"
    return vm, pvcs, secret


@pytest.fixture(scope="module")
def real_fs(kube_env: KubeEnv, server_image: ServerImage,
            vm_work_dir: Path) -> Iterator[RealFileSystem]:
    env = kube_env
    env.standin.hold_ready = True  # ready only once the real guests say so
    runner = env.runner(FAST)
    network = PrivateNetwork(vm_work_dir / "net").create()
    vms: dict[str, ServerVm] = {}
    started = time.monotonic()
    try:
        settings = template(ip_pool=POOL, mdt_size_bytes=1 << 30, ost_size_bytes=2 << 30,
                            memory="1536Mi", cpu="1", min_osts=1, max_osts=1, osts_per_oss=1)
        with pytest.raises(InProgress):
            env.provider().ensure_file_system(FS, settings)

        def objects_made() -> bool:
            return all(env.admin.get(SECRETS, secret_name(FS, s), SERVER_NAMESPACE)
                       and env.admin.get(VIRTUAL_MACHINES, vm_name(FS, s), SERVER_NAMESPACE)
                       for s in ("mds0", "oss0")) and len(
                env.admin.list(PVCS, SERVER_NAMESPACE, fs_selector(FS))[0]) == 2

        wait_for(objects_made, 60, "the servers' objects")
        for server in ("mds0", "oss0"):
            vm, pvcs, secret = _server_objects(env, server)
            vms[server] = ServerVm(vm, pvcs, secret, server_image, network, vm_work_dir)
            vms[server].start()
        fs = RealFileSystem(env, network, vms, vm_work_dir)
        fs.wait_all_ready("first boot to ready")
        env.standin.hold_ready = False
        wait_for(lambda: (env.lfs(FS) or {}).get("status", {}).get("phase") == "Ready", 120,
                 "phase Ready")
        fs.timings["creation to phase Ready"] = time.monotonic() - started
        yield fs
        print(f"\nLustre tier timings (TCG unless KVM was probed working): {fs.timings}")
    finally:
        for server_vm in vms.values():
            server_vm.kill()
        network.destroy()
        runner.stop()
        env.runners.remove(runner)
        env.standin.hold_ready = False


def test_servers_format_mount_and_report_healthy(real_fs: RealFileSystem):
    fs = real_fs
    for vm, ip, targets in ((fs.mds, MDS_IP, ["MDT0000"]), (fs.oss, OSS_IP, ["OST0000"])):
        health = fs.run(vm, "lctl get_param -n health_check")
        assert health.stdout == "healthy\n"
        ready = vm.ready()
        assert ready is not None and ready.exit_code == 0, ready
        # LNet only on the storage interface, with the pool's address; the management NIC
        # (eth0, first) got its DHCP address and carries no NID.
        assert fs.run(vm, "lctl list_nids").stdout.split() == [f"{ip}@tcp"]
        addresses = fs.run(vm, "ip -o -4 addr show eth1; ip -o -4 addr show eth0").stdout
        assert f"inet {ip}/24" in addresses and "inet 10.0.2." in addresses
        log = fs.boot_log(vm)
        fs.capture(f"boot-log-first-{vm.name}.txt", log)
        for serial in targets:
            dev = f"/dev/disk/by-id/virtio-{serial}"
            assert f"formatting blank {dev} as {FS}-{serial}" in log
            mounts = fs.run(vm, "cat /proc/mounts").stdout
            assert f" /lustre/{FS}-{serial} lustre_tgt " in mounts
            features = fs.run(vm, f"dumpe2fs -h {dev} 2>/dev/null | grep -i features").stdout
            assert " mmp" in features, features
            fs.capture(f"tunefs.lustre-dryrun-{serial}.txt",
                       fs.run(vm, f"tunefs.lustre --dryrun {dev}").stdout)
        role = vm.name.split("-")[-1]
        fs.capture(f"lctl-get_param-n-health_check-{role}.txt", health.stdout)
        fs.capture(f"lctl-get_param-health_check-{role}.txt",
                   fs.run(vm, "lctl get_param health_check").stdout)
    params = fs.run(fs.mds, "lctl --device MGS llog_print params").stdout
    fs.capture("llog_print-params.txt", params)
    for setting in ("quota_slave.enabled, value: p", "quota_slave.root_prj_enable, value: 1"):
        assert f"parameter: osd-*.{FS}-OST*.{setting}" in params
        assert f"parameter: osd-*.{FS}-MDT*.{setting}" in params
    status = (fs.env.lfs(FS) or {})["status"]
    assert {s["name"]: s["nid"] for s in status["servers"]} == {"mds0": MGS_NID,
                                                                "oss0": f"{OSS_IP}@tcp"}


def test_a_client_mounts_writes_reads_and_sees_targets_and_quota(real_fs: RealFileSystem):
    fs = real_fs
    started = time.monotonic()
    fs.run(fs.mds, f"mkdir -p {CLIENT_MOUNT} && mount -t lustre {MGS_NID}:/{FS} {CLIENT_MOUNT}",
           timeout=600)
    fs.timings["client mount"] = time.monotonic() - started
    # The servers registered their storage NIDs with the MGS: the client talks to them.
    # (The client shares the MDS's node, so it reaches the MDT by 0@lo.)
    osc = fs.run(fs.mds, "lctl get_param -n osc.*.ost_conn_uuid").stdout.split()
    mdc = fs.run(fs.mds, "lctl get_param -n mdc.*.mds_conn_uuid").stdout.split()
    assert set(osc) == {f"{OSS_IP}@tcp"} and set(mdc) <= {MGS_NID, "0@lo"}, (osc, mdc)
    written = fs.run(fs.mds, f"head -c 8M /dev/urandom > {CLIENT_MOUNT}/data && sync && "
                             f"sha256sum < {CLIENT_MOUNT}/data").stdout
    (fs.work_dir / "data.sha256").write_text(written)
    read = fs.run(fs.mds, f"echo 3 > /proc/sys/vm/drop_caches; sha256sum < {CLIENT_MOUNT}/data")
    assert read.stdout == written
    df = fs.run(fs.mds, f"lfs df {CLIENT_MOUNT}").stdout
    df_inodes = fs.run(fs.mds, f"lfs df -i {CLIENT_MOUNT}").stdout
    for text in (df, df_inodes):
        assert f"{FS}-MDT0000_UUID" in text and f"{FS}-OST0000_UUID" in text
    fs.capture("lfs-df.txt", df)
    fs.capture("lfs-df-i.txt", df_inodes)
    # A project with a 10 MiB hard limit stops a root writer (root_prj_enable=1).
    fs.run(fs.mds, f"mkdir -p {CLIENT_MOUNT}/vol && lfs project -p 1000 -s {CLIENT_MOUNT}/vol && "
                   f"lfs setquota -p 1000 -B 10M -I 1000 {CLIENT_MOUNT}")
    fs.capture("lfs-project-d.txt", fs.run(fs.mds, f"lfs project -d {CLIENT_MOUNT}/vol").stdout)
    fs.capture("lfs-quota-p-unknown.txt",
               fs.run(fs.mds, f"lfs quota -p 4242 {CLIENT_MOUNT}").stdout)
    deadline = time.monotonic() + 180
    while True:
        attempt = fs.run(fs.mds, f"dd if=/dev/zero of={CLIENT_MOUNT}/vol/fill-$RANDOM bs=1M "
                                 f"count=40 oflag=direct 2>&1", check=False)
        if "Disk quota exceeded" in attempt.output:
            break
        # Quota takes a few seconds to reach the OSTs after set_param -P / setquota.
        fs.run(fs.mds, f"rm -f {CLIENT_MOUNT}/vol/fill-*")
        assert time.monotonic() < deadline, f"root was never stopped by its project quota: " \
                                            f"{attempt.output}"
        time.sleep(10)
    quota = fs.run(fs.mds, f"lfs quota -p 1000 {CLIENT_MOUNT}").stdout
    fs.capture("lfs-quota-p.txt", quota)
    assert "1000" in quota and "10240" in quota
    fs.run(fs.mds, f"rm -f {CLIENT_MOUNT}/vol/fill-*; umount {CLIENT_MOUNT}", timeout=600)


def test_restarts_keep_every_target_and_its_data(real_fs: RealFileSystem):
    fs = real_fs
    fs.oss.kill()  # kill -9: MMP blocks and the journal as a crash leaves them
    fs.mds.stop()  # ACPI: a clean shutdown
    fs.mds.start()
    fs.oss.start()
    fs.wait_all_ready("restart (MDS clean, OSS killed) to ready")
    for vm in fs.vms.values():
        log = fs.boot_log(vm)
        assert "formatting" not in log, log
        assert "mounting" in log
    # The timer's next run finds everything up and says so.
    for vm in fs.vms.values():
        fs.run(vm, "systemctl start lustre-targets.service")
        assert "nothing to do" in fs.run(vm, "journalctl -b -t lustre-targets -n 1 -o cat").stdout
    for vm, serial in ((fs.mds, "MDT0000"), (fs.oss, "OST0000")):
        features = fs.run(vm, f"dumpe2fs -h /dev/disk/by-id/virtio-{serial} 2>/dev/null").stdout
        assert " mmp" in features
    fs.run(fs.mds, f"mkdir -p {CLIENT_MOUNT} && mount -t lustre {MGS_NID}:/{FS} {CLIENT_MOUNT}",
           timeout=600)
    read = fs.run(fs.mds, f"sha256sum < {CLIENT_MOUNT}/data").stdout
    assert read == (fs.work_dir / "data.sha256").read_text()
    fs.run(fs.mds, f"umount {CLIENT_MOUNT}", timeout=600)


def test_a_disk_holding_another_file_system_is_refused(real_fs: RealFileSystem):
    fs = real_fs
    oss = fs.oss
    disk = oss.disk_path(oss.targets[0].claim)
    kept = disk.with_suffix(".lustre")
    oss.stop()
    disk.rename(kept)
    try:
        with disk.open("wb") as blank:
            blank.truncate(256 << 20)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "someone-else", str(disk)], check=True)
        oss.start()
        deadline = time.monotonic() + BOOT_TIMEOUT
        while not (ready := oss.ready()):
            assert time.monotonic() < deadline, f"guest agent never answered: {oss.console_tail()}"
            time.sleep(5)
        log = ""
        while "refusing" not in log:
            assert time.monotonic() < deadline, f"no refusal logged: {log}"
            time.sleep(5)
            log = fs.boot_log(oss)
        dev = "/dev/disk/by-id/virtio-OST0000"
        assert f"refusing {dev}: it holds data that is not {FS}-OST0000 (ext4)" in log
        ready = oss.ready()
        assert ready is not None and ready.exit_code == 1
        assert f"not mounted: /lustre/{FS}-OST0000" in ready.output
        assert "someone-else" in fs.run(oss, f"blkid -o value -s LABEL {dev}").stdout
    finally:
        oss.kill()
        disk.unlink(missing_ok=True)
        kept.rename(disk)
    if shutil.which("e2label"):
        assert subprocess.run(["e2label", str(disk)], capture_output=True, text=True,
                              check=False).stdout.strip() != "someone-else"
