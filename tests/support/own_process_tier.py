"""Tiers that run in a pytest process of their own (hack/test.sh runs each after the rest).

The node tier (a kubelet and containerd) and the Lustre tier (QEMU server VMs) enter
namespaces for their whole run and take minutes. A plain `pytest` of the whole suite
deselects them, visibly ("N deselected" in the summary); they run when asked for by path
(`pytest tests/node`), by marker (`-m node`) or by their environment variable.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def asked_for(config: pytest.Config, here: Path, marker: str, variable: str) -> bool:
    if os.environ.get(variable) == "1":
        return True
    if marker in (config.option.markexpr or ""):
        return True
    for arg in config.args:
        path = Path(arg.split("::", 1)[0]).resolve()
        if path == here or here in path.parents:
            return True
    return False


def keep_to_its_own_process(
    config: pytest.Config,
    items: list[pytest.Item],
    here: Path,
    markers: tuple[str, ...],
    variable: str,
) -> None:
    """Mark the items under `here`, and deselect them unless this run asked for them."""
    ours = [item for item in items if here in Path(str(item.fspath)).parents]
    for item in ours:
        for marker in markers:
            item.add_marker(getattr(pytest.mark, marker))
    if ours and not asked_for(config, here, markers[0], variable):
        config.hook.pytest_deselected(items=ours)
        items[:] = [item for item in items if item not in ours]
