"""A server refuses a disk that is not its own target (issue 14, part 1, point 4).

It runs last in the tier (tests/lustre/conftest.py orders the modules): it puts a foreign
file system where the OSS's target was, then puts the target back (the OSS stays down:
nothing runs after it).
"""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from tests.lustre.real_cluster import BOOT_TIMEOUT, FS, RealFileSystem

pytestmark = pytest.mark.timeout(3600)


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
