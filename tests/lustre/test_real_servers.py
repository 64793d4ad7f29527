"""A LustreFileSystem served by real Lustre 2.17 servers in QEMU VMs (issue 14, part 1).

The provisioner (as its ServiceAccount, on the real API server) creates the file system's
VirtualMachines, PVCs and cloud-init Secrets; tests/support/vm_runner.py boots exactly those
objects; the boot script in the Secret formats, mounts and configures everything
(tests/lustre/real_cluster.py). The KubeVirt stand-in reports the VMs ready when the real
guests pass their readiness probe.

The tests share one file system (the session's `real_fs`) and run in order: boot, client I/O,
restarts. Real command outputs are saved in the run's work dir (`captured/`) and, with
LUSTRE_CSI_CAPTURE_FIXTURES=1, into tests/fixtures/lustre-2.17/ for the parsers' unit tests.
"""

from __future__ import annotations

import time

import pytest

from tests.lustre.real_cluster import (
    FLASH,
    FLASH_OSS,
    FLASH_OSS_IP,
    FLASH_OST,
    FS,
    MDS_IP,
    MGS_NID,
    OSS_IP,
    RealFileSystem,
)

# Boots under TCG take minutes: past pytest-timeout's 600 s default.
pytestmark = pytest.mark.timeout(3600)
CLIENT_MOUNT = "/mnt/real"


def test_servers_format_mount_and_report_healthy(real_fs: RealFileSystem):
    fs = real_fs
    for vm, ip, targets in ((fs.mds, MDS_IP, ["MDT0000"]), (fs.oss, OSS_IP, ["OST0000"]),
                            (fs.vms[FLASH_OSS], FLASH_OSS_IP, [FLASH_OST])):
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
    assert {s["name"]: s["nid"] for s in status["servers"]} == {
        "mds0": MGS_NID, "oss0": f"{OSS_IP}@tcp", FLASH_OSS: f"{FLASH_OSS_IP}@tcp"}
    # The OST pool: made on the MGS by the MDS's boot script, its OST (index 1024, the first
    # pool's block) added as it registered, and shown in the status.
    # (The boot script's timer adds an OST that registered after its last run at its next.)
    deadline = time.monotonic() + 300
    while f"{FS}-{FLASH_OST}_UUID" not in (
            members := fs.run(fs.mds, f"lctl pool_list {FS}.{FLASH}", check=False).stdout):
        assert time.monotonic() < deadline, f"{FLASH_OST} never joined the pool: {members}"
        time.sleep(5)
    pools = fs.run(fs.mds, f"lctl pool_list {FS}").stdout
    assert f"{FS}.{FLASH}" in pools.split(), pools
    fs.capture("lctl-pool_list-fs.txt", pools)
    fs.capture("lctl-pool_list-pool.txt", members)
    assert [(p["name"], p["firstOstIndex"], p["osts"]) for p in status["pools"]] == [
        (FLASH, 1024, [FLASH_OST])], status["pools"]
    log = fs.boot_log(fs.mds)
    assert f"creating OST pool {FS}.{FLASH}" in log
    assert f"adding {FS}-{FLASH_OST} to OST pool {FS}.{FLASH}" in log


def test_a_client_mounts_writes_reads_and_sees_targets_and_quota(real_fs: RealFileSystem):
    fs = real_fs
    started = time.monotonic()
    fs.run(fs.mds, f"mkdir -p {CLIENT_MOUNT} && mount -t lustre {MGS_NID}:/{FS} {CLIENT_MOUNT}",
           timeout=600)
    fs.record_timing("client mount (MDS as client)", time.monotonic() - started)
    # The servers registered their storage NIDs with the MGS: the client talks to them.
    # (The client shares the MDS's node, so it reaches the MDT by 0@lo.)
    osc = fs.run(fs.mds, "lctl get_param -n osc.*.ost_conn_uuid").stdout.split()
    mdc = fs.run(fs.mds, "lctl get_param -n mdc.*.mds_conn_uuid").stdout.split()
    assert set(osc) == {f"{OSS_IP}@tcp", f"{FLASH_OSS_IP}@tcp"}, osc
    assert set(mdc) <= {MGS_NID, "0@lo"}, mdc
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
    # What the driver itself runs (csi/lustre/client.py passes -v), and the client's version.
    for name, command in (("lfs-df-v.txt", f"lfs df -v {CLIENT_MOUNT}"),
                          ("lfs-df-v-i.txt", f"lfs df -v -i {CLIENT_MOUNT}"),
                          ("lctl-get_param-n-version.txt", "lctl get_param -n version")):
        fs.capture(name, fs.run(fs.mds, command).stdout)
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
    fs.vms[FLASH_OSS].kill()
    fs.mds.stop()  # ACPI: a clean shutdown
    fs.mds.start()
    fs.oss.start()
    fs.vms[FLASH_OSS].start()
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
