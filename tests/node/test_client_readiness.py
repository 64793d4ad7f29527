"""The node condition for Lustre client readiness, as the README's troubleshooting table
documents it: on a node whose plugin cannot use a Lustre client, the Node carries
LustreClientReady=False with a reason that says what to fix, and True again once it can."""

from __future__ import annotations

import json
from typing import Any

from tests.node.node import NODE_NAME
from tests.node.stack import NAMESPACE, Stack, wait_for

TOOLS_ARG = 6  # args[6] of the node plugin in deploy/overlays/local/node-local.yaml


def set_lustre_tools(stack: Stack, current: str, wanted: str) -> None:
    path = f"/spec/template/spec/containers/0/args/{TOOLS_ARG}"
    patch = [
        {"op": "test", "path": path, "value": f"--lustre-tools={current}"},
        {"op": "replace", "path": path, "value": f"--lustre-tools={wanted}"},
    ]
    stack.kubectl(
        "patch",
        "daemonset",
        "lustre-csi-node",
        "-n",
        NAMESPACE,
        "--type=json",
        "-p",
        json.dumps(patch),
    )


def condition(stack: Stack) -> Any:
    node = stack.core.read_node(NODE_NAME)
    found = [c for c in node.status.conditions or [] if c.type == "LustreClientReady"]
    return found[0] if found else None


def test_condition_says_what_is_missing_when_the_client_tools_are_absent(stack: Stack) -> None:
    # The image carries no Lustre client (it comes from the host), and this host has none:
    # with the real tools the plugin must say so on the Node.
    set_lustre_tools(stack, "local", "kernel")
    try:
        missing = wait_for(
            "LustreClientReady=False",
            lambda: (lambda c: c if c is not None and c.status == "False" else None)(
                condition(stack)
            ),
            180,
            explain=stack.explain,
        )
        assert missing.reason in ("ToolsMissing", "ModulesNotLoaded"), missing
        assert "lustre" in missing.message.lower(), missing.message
    finally:
        set_lustre_tools(stack, "kernel", "local")
        stack.wait_ready()
    ready = wait_for(
        "LustreClientReady=True again",
        lambda: (lambda c: c if c is not None and c.status == "True" else None)(condition(stack)),
        180,
        explain=stack.explain,
    )
    assert ready.reason == "ClientReady"
