"""`lustre-csi --version` names the driver and the version the package and GetPluginInfo carry."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from csi.identity import DRIVER_NAME, DRIVER_VERSION

REPO = Path(__file__).resolve().parents[2]


def test_version_flag_prints_the_driver_name_and_the_package_version() -> None:
    package_version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert package_version == DRIVER_VERSION
    output = subprocess.run(
        [sys.executable, "-m", "csi.cli", "--version"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout
    assert output.split() == ["lustre-csi", DRIVER_NAME, DRIVER_VERSION]
