"""The boot script's safety rules: its text, and runs of it against stand-in Lustre commands.

`BootScriptHost` runs the generated script with bash, its absolute paths (/proc/mounts, the
env file, /etc/modprobe.d, /sys/module, /dev/disk/by-id, /lustre) moved into a temp dir and
stand-ins for the commands it calls first on PATH. The stand-ins keep their state in files and
behave as the real ones do where the script depends on it (observed on Lustre 2.17.0): LNet
comes up on the storage interface only when the lnet module option names it, else on the
first interface (the management NIC); `mkfs.lustre --mkfsoptions="-O mmp"` gives MMP; mounts
appear in /proc/mounts as `lustre_tgt`; a fresh MGS fails `llog_print params` with
"llog type is not specified!". The real thing runs in the Lustre tier (tests/lustre).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from provisioner.kubevirt import cloudinit

STORAGE_IP = "10.44.0.10"
MANAGEMENT_IP = "10.0.2.2"

# Each stand-in appends "<name> <args>" to calls.log; state lives in $STATE.
_STANDINS = {
    "logger": 'shift 2; echo "log $*" >> "$STATE/calls.log"',
    "modprobe": r'''
echo "modprobe $* option=$(cat "$STATE/modprobe.d/lustre-csi-lnet.conf" 2>/dev/null)" \
    >> "$STATE/calls.log"
mkdir -p "$STATE/sys/module/lustre"
if grep -q "networks=tcp(eth1)" "$STATE/modprobe.d/lustre-csi-lnet.conf" 2>/dev/null; then
    printf '%s@tcp\n' "$STORAGE_IP" > "$STATE/nids"
else
    printf '%s@tcp\n' "$MANAGEMENT_IP" > "$STATE/nids"   # the first interface: eth0
fi''',
    "lnetctl": r'''
echo "lnetctl $*" >> "$STATE/calls.log"
if [ "$1 $2" = "net add" ]; then printf '%s@tcp\n' "$STORAGE_IP" >> "$STATE/nids"; fi''',
    "lctl": r'''
echo "lctl $*" >> "$STATE/calls.log"
case "$*" in
    list_nids) cat "$STATE/nids" 2>/dev/null || { echo "no LNet" >&2; exit 1; } ;;
    "--device MGS llog_print params")
        if [ -s "$STATE/llog" ]; then cat "$STATE/llog"; else
            cat "$STATE/llog_error" 2>/dev/null >&2 \
                || echo "error: llog_print: llog type is not specified!" >&2
            exit 22
        fi ;;
    "set_param -P "*)
        n=$(($(wc -l < "$STATE/llog" 2>/dev/null || echo 0) + 2))
        record="event: set_param, device: scratch, parameter: ${3%%=*}, value: ${3#*=}"
        echo "- { index: $n, $record }" >> "$STATE/llog" ;;
    "pool_list scratch")
        echo "Pools from scratch:"
        [ -f "$STATE/pool_list_blind" ] || cat "$STATE/pools" 2>/dev/null ;;
    "pool_list scratch."*) echo "Pool: $2"; cat "$STATE/pool.${2#scratch.}" 2>/dev/null ;;
    "pool_new "*)
        if grep -qxF "$2" "$STATE/pools" 2>/dev/null; then
            echo "pool_new: File exists" >&2; exit 17       # EEXIST, as lctl
        fi
        echo "$2" >> "$STATE/pools" ;;
    "pool_add "*)
        if grep -qxF "$3_UUID" "$STATE/pool.${2#scratch.}" 2>/dev/null; then
            echo "pool_add: File exists" >&2; exit 17
        fi
        if [ -f "$STATE/pool_add_error" ]; then cat "$STATE/pool_add_error" >&2; exit 5; fi
        echo "$3_UUID" >> "$STATE/pool.${2#scratch.}" ;;
    # As Lustre 2.17: a parameter lists each device that has it; a device name alone, nothing.
    "get_param -N osp.scratch-OST*-osc-MDT0000.active")
        sed 's/$/.active/' "$STATE/osps" 2>/dev/null ;;
    "get_param -N osp.scratch-OST*-osc-MDT0000") ;;
esac''',
    "blkid": 'cat "$STATE/disk/${6: -7}.type" 2>/dev/null || exit 2',
    "mkfs.lustre": r'''
echo "mkfs.lustre $*" >> "$STATE/calls.log"
dev="${*: -1}"; serial="${dev: -7}"
for arg in "$@"; do case "$arg" in --fsname=*) fs="${arg#--fsname=}" ;; esac; done
echo ext4 > "$STATE/disk/$serial.type"
echo "$fs-$serial" > "$STATE/disk/$serial.target"
case "$*" in *"--mkfsoptions=-O mmp"*) echo " mmp" > "$STATE/disk/$serial.features" ;; esac''',
    "tunefs.lustre": r'''
serial="${2: -7}"
[ -f "$STATE/disk/$serial.target" ] || exit 19
echo "   Read previous values:"
echo "Target:     $(cat "$STATE/disk/$serial.target")"''',
    "dumpe2fs": r'''
serial="${2: -7}"
features="$(cat "$STATE/disk/$serial.features" 2>/dev/null || true)"
echo "Filesystem features:      has_journal ext_attr dir_index${features} extent"''',
    "tune2fs": r'''
echo "tune2fs $*" >> "$STATE/calls.log"
serial="${3: -7}"
[ "$2" = mmp ] && echo " mmp" > "$STATE/disk/$serial.features"''',
    "mount": r'''
echo "mount-start $*" >> "$STATE/calls.log"
sleep 0.3
echo "${3} ${4} ${2} rw 0 0" >> "$STATE/mounts"
echo "mount-end ${3: -7}" >> "$STATE/calls.log"''',
}


class BootScriptHost:
    """A server VM's view, as files: its disks, /proc/mounts, LNet, the MGS params log."""

    def __init__(self, root: Path, role: str = "mds", fsname: str = "scratch",
                 pools: tuple[tuple[str, int, int], ...] = ()) -> None:
        self.root = root
        self.state = root / "state"
        for sub in ("bin", "disk", "by-id", "modprobe.d", "sys/module", "lustre"):
            (self.state / sub).mkdir(parents=True, exist_ok=True)
        (self.state / "mounts").touch()
        (self.state / "llog").touch()
        for name, body in _STANDINS.items():
            path = self.state / "bin" / name
            path.write_text(f"#!/bin/bash\n{body}\n")
            path.chmod(0o755)
        self.env = self.state / "server.env"
        self.env.write_text(cloudinit.server_environment(
            fsname=fsname, role=role, mgs_nid=f"{STORAGE_IP}@tcp", storage_ip=STORAGE_IP,
            storage_interface="eth1", lnet_network="tcp", pools=pools))
        self.script = self._relocated(cloudinit.TARGET_SCRIPT)
        self.health = self._relocated(cloudinit.HEALTH_SCRIPT)

    def _relocated(self, script: str) -> str:
        s = str(self.state)
        for old, new in (("/proc/mounts", f"{s}/mounts"),
                         ("/etc/lustre-csi/server.env", str(self.env)),
                         ("/etc/modprobe.d/", f"{s}/modprobe.d/"),
                         ("/sys/module/", f"{s}/sys/module/"),
                         ("/dev/disk/by-id/", f"{s}/by-id/"),
                         ('"/lustre/', f'"{s}/lustre/')):
            script = script.replace(old, new)
        return script

    def disk(self, serial: str, *, holds: str = "", target: str = "", mmp: bool = False) -> None:
        (self.state / "by-id" / f"virtio-{serial}").touch()
        if holds:
            (self.state / "disk" / f"{serial}.type").write_text(holds + "\n")
        if target:
            (self.state / "disk" / f"{serial}.target").write_text(target + "\n")
        if mmp:
            (self.state / "disk" / f"{serial}.features").write_text(" mmp\n")

    def run(self, script: str = "") -> subprocess.CompletedProcess[str]:
        (self.state / "calls.log").write_text("")
        env = {"PATH": f"{self.state / 'bin'}:/usr/bin:/bin", "STATE": str(self.state),
               "STORAGE_IP": STORAGE_IP, "MANAGEMENT_IP": MANAGEMENT_IP}
        return subprocess.run(["bash", "-c", script or self.script], env=env, text=True,
                              capture_output=True, timeout=60, check=False)

    @property
    def calls(self) -> list[str]:
        return (self.state / "calls.log").read_text().splitlines()

    def mounted(self) -> list[str]:
        return (self.state / "mounts").read_text().splitlines()


@pytest.fixture
def host(tmp_path: Path) -> BootScriptHost:
    if shutil.which("bash") is None:
        pytest.fail("bash is needed to run the boot script")
    return BootScriptHost(tmp_path)


def test_scripts_are_valid_bash():
    for script in (cloudinit.TARGET_SCRIPT, cloudinit.HEALTH_SCRIPT):
        subprocess.run(["bash", "-n"], input=script, text=True, check=True)


def test_format_only_a_blank_device_and_never_one_holding_other_data():
    script = cloudinit.TARGET_SCRIPT
    blank_check = script.index('blkid -p -o value -s TYPE "$dev"')
    assert blank_check < script.index("mkfs.lustre")
    # A device with a file system that is not this target is refused, not formatted.
    assert "tunefs.lustre --dryrun" in script and "refusing" in script
    # Mount only when not mounted already.
    assert script.index("/proc/mounts") < script.index("mount -t lustre_tgt")


def test_lnet_is_configured_on_the_storage_interface_before_lustre_loads(host):
    host.disk("MDT0000")
    result = host.run()
    assert result.returncode == 0, result.stdout + result.stderr
    modprobe = next(c for c in host.calls if c.startswith("modprobe"))
    assert modprobe == "modprobe lustre option=options lnet networks=tcp(eth1)"
    assert (host.state / "nids").read_text() == f"{STORAGE_IP}@tcp\n"


def test_targets_are_not_mounted_while_lnet_has_a_nid_off_the_storage_interface(host):
    host.disk("MDT0000")
    # LNet already up on the management NIC (loaded before this script, by hand or an old one).
    (host.state / "sys/module/lustre").mkdir()
    (host.state / "nids").write_text(f"{MANAGEMENT_IP}@tcp\n")
    result = host.run()
    assert result.returncode == 1
    assert f"NIDs off the storage interface: {MANAGEMENT_IP}@tcp" in result.stdout
    assert not any(c.startswith(("mkfs.lustre", "mount-start")) for c in host.calls)


def test_mmp_is_enabled_by_the_format_itself(host):
    host.disk("MDT0000")
    assert host.run().returncode == 0
    mkfs = next(c for c in host.calls if c.startswith("mkfs.lustre"))
    assert "--mkfsoptions=-O mmp" in mkfs and "--mgs --mdt --index=0" in mkfs
    assert not any(c.startswith("tune2fs") for c in host.calls)  # nothing left to a 2nd step


def test_a_target_without_mmp_gets_it_before_it_is_mounted(host):
    host.disk("MDT0000", holds="ext4", target="scratch-MDT0000", mmp=False)
    result = host.run()
    assert result.returncode == 0, result.stderr
    assert "enabling multiple-mount protection on scratch-MDT0000" in result.stdout
    calls = host.calls
    tune = calls.index(f"tune2fs -O mmp {host.state}/by-id/virtio-MDT0000")
    assert tune < next(i for i, c in enumerate(calls) if c.startswith("mount-start"))
    assert not any(c.startswith("mkfs.lustre") for c in calls)  # never reformatted


def test_targets_mount_as_lustre_tgt_and_in_parallel(host):
    host = BootScriptHost(host.root, role="oss")
    for serial in ("OST0000", "OST0001", "OST0002"):
        host.disk(serial, holds="ext4", target=f"scratch-{serial}", mmp=True)
    assert host.run().returncode == 0
    events = [c.split()[0] for c in host.calls if c.startswith("mount-")]
    # Every mount started before the first one finished (an MMP wait each, not one by one).
    assert events[:3] == ["mount-start"] * 3, host.calls
    assert all(" -t lustre_tgt " in c for c in host.calls if c.startswith("mount-start"))
    assert len(host.mounted()) == 3


def test_second_run_is_a_no_op_and_says_so(host):
    host.disk("MDT0000")
    assert host.run().returncode == 0
    second = host.run()
    assert second.returncode == 0
    assert "nothing to do: LNet 10.44.0.10@tcp up, every target mounted" in second.stdout
    assert not any(c.startswith(("mkfs.lustre", "mount-start", "lctl set_param", "tune2fs",
                                 "modprobe")) for c in host.calls)


def test_project_quota_and_root_prj_enable_are_set_once_on_a_fresh_mgs(host):
    host.disk("MDT0000")
    assert host.run().returncode == 0
    settings = [c.removeprefix("lctl set_param -P ") for c in host.calls
                if c.startswith("lctl set_param -P")]
    assert settings == ["osd-*.scratch-OST*.quota_slave.enabled=p",
                        "osd-*.scratch-MDT*.quota_slave.enabled=p",
                        "osd-*.scratch-OST*.quota_slave.root_prj_enable=1",
                        "osd-*.scratch-MDT*.quota_slave.root_prj_enable=1"]
    assert host.run().returncode == 0
    assert not any(c.startswith("lctl set_param") for c in host.calls)


def test_pools_are_made_on_the_mgs_and_fill_as_their_osts_register(tmp_path):
    host = BootScriptHost(tmp_path, pools=(("flash", 1024, 2047), ("disk", 2048, 3071)))
    host.disk("MDT0000")
    osps = host.state / "osps"
    osps.write_text("".join(f"osp.scratch-{ost}-osc-MDT0000\n"
                            for ost in ("OST0000", "OST0400", "OST0401", "OST0800")))
    assert host.run().returncode == 0
    pool_calls = [c for c in host.calls if c.startswith(("lctl pool_new", "lctl pool_add"))]
    assert pool_calls == [
        "lctl pool_new scratch.flash",
        "lctl pool_add scratch.flash scratch-OST0400",
        "lctl pool_add scratch.flash scratch-OST0401",
        "lctl pool_new scratch.disk",
        "lctl pool_add scratch.disk scratch-OST0800",
    ]  # OST0000 is in no pool's block: it stays in none
    assert host.run().returncode == 0  # a second run repeats nothing (lctl would refuse it)
    assert not [c for c in host.calls if c.startswith(("lctl pool_new", "lctl pool_add"))]
    with osps.open("a") as more:
        more.write("osp.scratch-OST0402-osc-MDT0000\n")  # growth: a new flash OST registers
    assert host.run().returncode == 0
    assert [c for c in host.calls if c.startswith("lctl pool_")] == [
        "lctl pool_list scratch", "lctl pool_list scratch.flash",
        "lctl pool_add scratch.flash scratch-OST0402", "lctl pool_list scratch.disk",
    ]


def test_a_pool_that_exists_already_is_no_failure_but_a_failed_add_is(tmp_path):
    host = BootScriptHost(tmp_path, pools=(("flash", 1024, 2047),))
    host.disk("MDT0000")
    (host.state / "osps").write_text("osp.scratch-OST0400-osc-MDT0000\n")
    assert host.run().returncode == 0
    (host.state / "pool_list_blind").touch()  # a listing that misses the pool
    assert host.run().returncode == 0  # pool_new says "File exists": nothing failed
    (host.state / "osps").write_text("osp.scratch-OST0400-osc-MDT0000\n"
                                     "osp.scratch-OST0401-osc-MDT0000\n")
    (host.state / "pool_add_error").write_text("pool_add: Input/output error\n")
    result = host.run()
    assert result.returncode == 1  # the timer tries again
    assert "lctl pool_add scratch.flash scratch-OST0401 failed" in result.stdout


def test_a_server_without_pools_makes_none(host):
    host.disk("MDT0000")
    assert host.run().returncode == 0
    assert not [c for c in host.calls if c.startswith("lctl pool")]


def test_an_unreadable_params_log_is_retried_not_taken_as_empty(host):
    host.disk("MDT0000")
    (host.state / "llog_error").write_text("error: llog_print: Input/output error\n")
    result = host.run()
    assert result.returncode == 1
    assert "cannot read the MGS params log" in result.stdout
    assert not any(c.startswith("lctl set_param") for c in host.calls)


def test_a_disk_holding_another_file_system_is_refused_and_health_fails(host):
    host.disk("MDT0000", holds="xfs")
    result = host.run()
    assert "refusing" in result.stdout and "holds data that is not scratch-MDT0000 (xfs)" \
        in result.stdout
    assert not any(c.startswith(("mkfs.lustre", "mount-start", "tune2fs")) for c in host.calls)
    health = host.run(host.health.replace("lctl get_param -n health_check", "echo healthy"))
    assert health.returncode == 1
    assert "not mounted:" in health.stdout


def test_health_wants_the_storage_nid(host):
    host.disk("MDT0000")
    assert host.run().returncode == 0
    healthy = host.health.replace("lctl get_param -n health_check", "echo healthy")
    assert host.run(healthy).returncode == 0
    (host.state / "nids").write_text(f"{MANAGEMENT_IP}@tcp\n")
    result = host.run(healthy)
    assert result.returncode == 1 and "LNet: no NID 10.44.0.10@tcp" in result.stdout
