"""The kubernetes-csi sidecars built by hack/install-sidecars.sh are real, runnable binaries of
the pinned versions, and take the flags the end-to-end tests run them with."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.support.kube import DEFAULT_BIN_DIR, REPO_ROOT

SCRIPT = REPO_ROOT / "hack" / "install-sidecars.sh"
HINT = "run hack/setup.sh (or hack/install-sidecars.sh) to build it"

# Flags the out-of-cluster e2e setup passes (spelled with --; csi-resizer uses Go's flag
# package, whose usage lists them with a single dash, and accepts both).
COMMON_FLAGS = ["kubeconfig", "csi-address", "leader-election", "timeout", "feature-gates"]
EXPECTED_FLAGS = {
    "csi-provisioner": [*COMMON_FLAGS, "extra-create-metadata", "volume-name-prefix"],
    "csi-resizer": [*COMMON_FLAGS, "workers", "handle-volume-inuse-error"],
    "hostpathplugin": ["endpoint", "nodeid", "statedir", "drivername"],
}


def pinned_tools() -> dict[str, tuple[str, str]]:
    """tool -> (version, required|node), from the TOOLS table of hack/install-sidecars.sh
    ("node" tools are built only for the node tier, by hack/node/build.sh)."""
    row = re.compile(r'^\s*"([\w-]+)\|[^|"]+\|(v[^|"]+)\|[^|"]+\|(required|node)"\s*$')
    tools = {}
    for line in SCRIPT.read_text().splitlines():
        if m := row.match(line):
            tools[m[1]] = (m[2], m[3])
    return tools


PINNED = pinned_tools()


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def binary(tool: str) -> Path:
    path = DEFAULT_BIN_DIR / tool
    assert path.is_file(), f"{path} is missing: {HINT}"
    return path


def test_script_pins_the_sidecars() -> None:
    assert {"csi-provisioner", "csi-resizer", "hostpathplugin"} <= PINNED.keys(), PINNED
    # hostpathplugin (the benchmarks' reference driver) is built by default, from its source
    # archive in ../shared/third_party: the module proxy serves no version of it.
    assert {PINNED[t][1] for t in ("csi-provisioner", "csi-resizer", "hostpathplugin")} == {
        "required"
    }
    assert PINNED["node-driver-registrar"] == ("v2.17.0", "node")
    assert PINNED["livenessprobe"] == ("v2.19.0", "node")


@pytest.mark.parametrize("tool", ["csi-provisioner", "csi-resizer"])
def test_sidecar_reports_its_pinned_version(tool: str) -> None:
    path = binary(tool)
    result = run([str(path), "--version"])
    assert result.returncode == 0, result.stderr
    # "<argv0> v6.4.0", set with -X main.version by the script.
    assert result.stdout.split() == [str(path), PINNED[tool][0]], result.stdout


@pytest.mark.parametrize("tool", sorted(EXPECTED_FLAGS))
def test_binary_prints_usage_with_the_flags_we_use(tool: str) -> None:
    path = binary(tool)
    result = run([str(path), "--help"])
    usage = result.stdout + result.stderr
    assert result.returncode in (0, 2), usage  # Go's flag package exits 0 on -help (2 before)
    assert "Usage of" in usage, usage[:2000]
    for flag in EXPECTED_FLAGS[tool]:
        assert re.search(rf"^\s+--?{re.escape(flag)}\b", usage, re.MULTILINE), (
            f"{tool} --help does not list --{flag}"
        )


# The image each built sidecar ships as (upstream's names).
IMAGE_OF_TOOL = {
    "csi-provisioner": "csi-provisioner",
    "csi-resizer": "csi-resizer",
    "node-driver-registrar": "csi-node-driver-registrar",
    "livenessprobe": "livenessprobe",
}


def test_deploy_runs_exactly_the_sidecar_versions_the_tests_build() -> None:
    """deploy/ may pin only what hack/install-sidecars.sh builds and the e2e/node tiers run."""
    tool_of_image = {image: tool for tool, image in IMAGE_OF_TOOL.items()}
    images = re.findall(
        r"image: registry\.k8s\.io/sig-storage/([\w-]+):(v[\w.]+)",
        "".join(p.read_text() for p in (REPO_ROOT / "deploy").glob("*.yaml")),
    )
    assert {image for image, _ in images} == set(tool_of_image), images
    for image, tag in images:
        built = PINNED[tool_of_image[image]][0]
        assert tag == built, f"deploy/ runs {image} {tag}, the tests build {built}"
