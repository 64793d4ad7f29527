"""Our image as a user meets it: run on the node with nothing but its own defaults, it runs as
its non-root user and its CLI answers."""

from __future__ import annotations

from tests.node.stack import Stack, wait_for

IMAGE = "localhost/lustre-csi/lustre-csi:0.1.0"


def run_pod(stack: Stack, name: str, args: list[str], command: list[str] | None = None) -> str:
    container: dict[str, object] = {
        "name": "cli",
        "image": IMAGE,
        "imagePullPolicy": "Never",
        "args": args,
    }
    if command is not None:
        container["command"] = command
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"restartPolicy": "Never", "containers": [container]},
    }
    stack.cluster.apply(pod)
    try:
        finished = wait_for(
            f"pod {name} to finish",
            lambda: (lambda p: p if p.status.phase in ("Succeeded", "Failed") else None)(
                stack.core.read_namespaced_pod(name, "default")
            ),
            180,
            explain=stack.explain,
        )
        output = stack.logs(name, "cli", namespace="default")
        assert finished.status.phase == "Succeeded", output
        return output
    finally:
        stack.core.delete_namespaced_pod(name, "default", grace_period_seconds=0)


def test_image_runs_as_its_non_root_user(stack: Stack) -> None:
    output = run_pod(stack, "image-user", ["-c", "id -u; id -g"], command=["sh"])
    assert output.split() == ["65532", "65532"]


def test_image_serve_help_lists_the_flags_deploy_uses(stack: Stack) -> None:
    output = run_pod(stack, "image-serve-help", ["serve", "--help"])
    for flag in (
        "--mode",
        "--endpoint",
        "--node-id",
        "--state-dir",
        "--kubelet-dir",
        "--lustre-tools",
        "--server-sets",
        "--metrics-address",
        "--report-node-condition",
    ):
        assert flag in output, f"{flag} missing from serve --help:\n{output}"


def test_image_reports_its_version(stack: Stack) -> None:
    output = run_pod(stack, "image-version", ["--version"])
    assert output.split()[-1] == "0.1.0", output
