"""Several pods on the node and our volumes: RWX sharing, read-only mounts, isolation."""

from __future__ import annotations

from tests.node.stack import Stack, busybox_pod, lustre_claim


def test_two_pods_share_a_volume_a_read_only_pod_cannot_write_another_claim_sees_nothing(
    stack: Stack,
) -> None:
    pods = ["share-a", "share-b", "share-ro", "other"]
    claims = ["shared", "unrelated"]
    try:
        stack.cluster.apply(lustre_claim("shared"), lustre_claim("unrelated"))
        stack.cluster.apply(
            busybox_pod("share-a", "shared"),
            busybox_pod("share-b", "shared"),
            busybox_pod("share-ro", "shared", read_only=True),
            busybox_pod("other", "unrelated"),
        )
        for pod in pods:
            stack.wait_pod_phase(pod, "Running")

        stack.exec("share-a", "echo from-a > /data/a")
        assert stack.exec("share-b", "cat /data/a").stdout == "from-a\n"
        stack.exec("share-b", "echo from-b > /data/b")
        assert stack.exec("share-a", "cat /data/b").stdout == "from-b\n"

        # The read-only pod sees the data and cannot change it.
        assert stack.exec("share-ro", "cat /data/a").stdout == "from-a\n"
        denied = stack.exec("share-ro", "echo x > /data/ro-write", check=False)
        assert denied.returncode != 0
        assert "Read-only file system" in denied.stderr, denied.stderr
        assert stack.exec("share-ro", "cat /data/a").stdout == "from-a\n"
        assert not (stack.volume_dir(stack.pv_of("shared")) / "ro-write").exists()

        # The other claim's pod sees its own, empty volume: none of the shared files.
        assert stack.exec("other", "ls -A /data").stdout == ""
        assert stack.exec("other", "cat /data/a", check=False).returncode != 0
    finally:
        stack.delete_workloads(pods, claims)
