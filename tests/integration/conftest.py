"""Integration tests need root and a private mount namespace (hack/test.sh provides both)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.controller_replicas import Replica
from tests.support.driver import DriverProcess, in_private_mount_namespace


@pytest.fixture(autouse=True)
def _private_mounts() -> None:
    if os.geteuid() != 0 or not in_private_mount_namespace():
        pytest.fail("run integration tests as root inside `unshare --mount` (use hack/test.sh)")


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[DriverProcess]:
    with DriverProcess(tmp_path) as running:
        yield running


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[tuple[Replica, Replica]]:
    """Two controller replicas over one state directory."""
    with Replica(tmp_path, "a") as first, Replica(tmp_path, "b") as second:
        yield first, second


@pytest.fixture
def controller(replicas: tuple[Replica, Replica]) -> Replica:
    return replicas[0]
