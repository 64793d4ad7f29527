"""Parsing /proc/self/mountinfo, which is how the node knows what is mounted where."""

from __future__ import annotations

import os
from pathlib import Path

from csi.host.mount_table import ProcMountTable, mounts_at, parse_mountinfo
from csi.lustre.recognizers import KernelLustreRecognizer

KUBELET = "/var/lib/kubelet"
LUSTRE = "lustre 10.0.0.5@tcp:10.0.0.6@tcp:/scratch/pvc-1"
SAMPLE = "\n".join(
    [
        "22 1 253:0 / / rw,relatime shared:1 - ext4 /dev/vda rw",
        f"812 22 0:52 / {KUBELET}/plugins/kubernetes.io/csi/lustre.csi.io/abc/globalmount"
        f" rw,relatime shared:400 - {LUSTRE} rw,flock,lazystatfs",
        f"813 22 0:52 / {KUBELET}/pods/p1/volumes/kubernetes.io~csi/pvc-1/mount"
        f" ro,relatime shared:400 - {LUSTRE} rw,flock",
        "900 22 253:0 /srv/with\\040space//deleted /mnt/odd\\011tab rw - ext4 /dev/vda rw",
    ]
)


def test_fields_are_split_and_unescaped() -> None:
    entries = parse_mountinfo(SAMPLE)
    assert [e.mount_id for e in entries] == [22, 812, 813, 900]
    staged, published, odd = entries[1], entries[2], entries[3]
    assert staged.fstype == "lustre" and staged.device == "0:52"
    assert staged.source == "10.0.0.5@tcp:10.0.0.6@tcp:/scratch/pvc-1"
    assert published.readonly and not staged.readonly
    assert odd.mount_point == "/mnt/odd\ttab"
    assert odd.root == "/srv/with space//deleted" and odd.source_deleted


def test_kernel_recognizer_knows_lustre_entries_only() -> None:
    entries = parse_mountinfo(SAMPLE)
    recognizer = KernelLustreRecognizer()
    assert recognizer.lustre_source(entries[0]) is None
    assert recognizer.lustre_source(entries[1]) == "10.0.0.5@tcp:10.0.0.6@tcp:/scratch/pvc-1"


def test_a_mount_point_whose_name_is_not_utf8_does_not_break_reading_the_table(
    tmp_path: Path,
) -> None:
    # Anyone on the node can make a directory named with arbitrary bytes and mount on it.
    odd = b"/mnt/caf\xe9 \\x"  # Latin-1 e-acute, an escaped space and backslash
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_bytes(
        SAMPLE.encode() + b"\n901 22 0:60 / /mnt/caf\xe9\\040\\134x rw,nosuid - tmpfs tmpfs rw\n"
    )
    entries = ProcMountTable(mountinfo).entries()
    assert [e.mount_id for e in entries] == [22, 812, 813, 900, 901]
    assert os.fsencode(entries[-1].mount_point) == odd
    assert entries[1].mount_point.endswith("/globalmount")  # the others read as before


def test_the_table_answers_one_mount_point_and_the_ids_like_a_full_parse(tmp_path: Path) -> None:
    # A thousand pods' mounts: publish asks for one mount point and the ids without parsing
    # every line, and must answer exactly what a full parse says.
    lines = [
        "22 1 8:1 / / rw - ext4 /dev/vda1 rw",
        # A mount whose root field (not its mount point) is the path asked for.
        "30 22 8:1 /var/lib/k\\040x /elsewhere rw - ext4 /dev/vda1 rw",
        "31 22 0:50 /csi-volumes/v /var/lib/k\\040x rw,nosuid - lustre 0@lo:/fs/v rw",
        "32 31 0:50 /csi-volumes/v /var/lib/k\\040x rw,nosuid - lustre 0@lo:/fs/v rw",
        "33 22 0:51 / /var/lib/k\\040x/deeper rw - tmpfs tmpfs rw",
        *(f"{100 + i} 22 0:50 /csi-volumes/p{i} /pods/{i}/mount rw - lustre 0@lo:/fs rw"
          for i in range(1000)),
    ]
    path = tmp_path / "mountinfo"
    path.write_text("\n".join(lines) + "\n")
    table = ProcMountTable(path)
    full = table.entries()
    for point in ("/var/lib/k x", "/var/lib/k x/deeper", "/elsewhere", "/pods/999/mount", "/nope"):
        assert mounts_at(table, point) == [e for e in full if e.mount_point == point]
    assert [e.mount_id for e in mounts_at(table, "/var/lib/k x/")] == [31, 32]
    ids = table.mount_ids()
    assert ids == {e.mount_id for e in full} and len(ids) == 1005
