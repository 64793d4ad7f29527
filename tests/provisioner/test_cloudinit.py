"""The boot script's safety rules, checked on its text and by running it through bash -n."""

import shutil
import subprocess

import pytest

from provisioner.kubevirt import cloudinit


def test_scripts_are_valid_bash():
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash")
    for script in (cloudinit.TARGET_SCRIPT, cloudinit.HEALTH_SCRIPT):
        subprocess.run([bash, "-n"], input=script, text=True, check=True)


def test_format_only_a_blank_device_and_never_one_holding_other_data():
    script = cloudinit.TARGET_SCRIPT
    blank_check = script.index('blkid -p -o value -s TYPE "$dev"')
    assert blank_check < script.index("mkfs.lustre")
    # A device with a file system that is not this target is refused, not formatted.
    assert "tunefs.lustre --dryrun" in script and "refusing" in script
    # Mount only when not mounted already.
    assert script.index("/proc/mounts") < script.index("mount -t lustre")


def test_lnet_on_the_storage_interface_and_quota_once_on_the_mgs():
    script = cloudinit.TARGET_SCRIPT
    assert 'lnetctl net add --net "$LNET_NET" --if "$STORAGE_IFACE"' in script
    assert 'lctl set_param -P "osd-*.${pattern}.quota_slave.enabled=p"' in script
    assert "llog_print params" in script  # set only when absent
    assert "lctl get_param -n health_check" in cloudinit.HEALTH_SCRIPT
    assert "tune2fs -O mmp" in script
