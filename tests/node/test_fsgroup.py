"""fsGroup on a Lustre volume: the CSIDriver tells kubelet not to chown (fsGroupPolicy None, as
deploy/csidriver.yaml documents), so a pod with fsGroup on a volume of 100,000 files starts
without walking them, the anchors' most common start-up stall."""

from __future__ import annotations

import os

from tests.node.stack import Stack, busybox_pod, lustre_claim

FILES = 100_000


def test_csidriver_fsgroup_policy_is_none(stack: Stack) -> None:
    driver = stack.storage.read_csi_driver("lustre.csi.io")
    assert driver.spec.fs_group_policy == "None"


def test_pod_with_fsgroup_on_100k_files_starts_without_a_recursive_chown(stack: Stack) -> None:
    try:
        stack.cluster.apply(lustre_claim("many-files"))
        stack.wait_bound("many-files")
        volume_dir = stack.volume_dir(stack.pv_of("many-files"))
        # Files as another client of the file system left them: owned by root, group root.
        batch = volume_dir / "batch"
        batch.mkdir()
        for i in range(FILES):
            os.close(os.open(batch / f"f{i:06d}", os.O_CREAT | os.O_WRONLY, 0o644))

        stack.cluster.apply(
            busybox_pod(
                "fsgroup",
                "many-files",
                security_context={"fsGroup": 4321, "runAsUser": 1000, "runAsGroup": 1000},
            )
        )
        stack.wait_pod_phase("fsgroup", "Running")

        assert stack.exec("fsgroup", "id -G").stdout.split() == ["1000", "4321"]
        groups = {entry.stat().st_gid for entry in os.scandir(batch)}
        assert groups == {0}, f"kubelet changed group ownership inside the volume: {groups}"
        assert batch.stat().st_gid == 0
        assert "Setting volume ownership" not in stack.cluster.log_path("kubelet").read_text(
            errors="replace"
        )
    finally:
        stack.delete_workloads(["fsgroup"], ["many-files"])
