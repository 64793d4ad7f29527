"""The kubernetes-csi conformance suite, csi-sanity, against `lustre-csi serve --mode all`.

The driver runs on the embedded local server set with real bind mounts. Every spec must pass;
the specs csi-sanity skips must be exactly the documented ones (capabilities we do not claim).
"""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.sanity.serve_for_sanity import SANITY_DIR
from tests.support.driver import REPO, DriverProcess

CSI_SANITY = REPO / ".cache" / "bin" / "csi-sanity"
PARAMS = Path(__file__).with_name("params.yaml")
MUTABLE_PARAMS = Path(__file__).with_name("mutable-params.yaml")  # a VolumeAttributesClass's
EXPECTED_SKIPS = Path(__file__).with_name("expected-skips.txt")


def _documented_skips() -> dict[str, str]:
    """spec name -> reason, from expected-skips.txt ("<spec name> | <reason>" per line)."""
    skips = {}
    for line in EXPECTED_SKIPS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, reason = line.rpartition(" | ")
            skips[name.strip()] = reason.strip()
    return skips


@pytest.mark.sanity
def test_csi_sanity_passes_with_only_documented_skips(tmp_path: Path) -> None:
    assert CSI_SANITY.exists(), "csi-sanity is missing: run hack/setup.sh"
    # Kubelet's own layouts cannot be given to csi-sanity (it fixes the last components):
    # serve_for_sanity adds csi-sanity's two shapes below the kubelet root for this run.
    driver = DriverProcess(tmp_path, module="tests.sanity.serve_for_sanity")
    (driver.kubelet_dir / SANITY_DIR).mkdir()
    mount_dir = driver.kubelet_dir / SANITY_DIR / "mount"  # csi-sanity makes these two
    staging_dir = driver.kubelet_dir / SANITY_DIR / "staging"
    report = tmp_path / "junit.xml"
    with driver:
        result = subprocess.run(
            [
                str(CSI_SANITY),
                f"--csi.endpoint={driver.socket}",
                f"--csi.mountdir={mount_dir}",
                f"--csi.stagingdir={staging_dir}",
                f"--csi.testvolumeparameters={PARAMS}",
                f"--csi.testvolumemutableparameters={MUTABLE_PARAMS}",
                "--csi.testvolumesize=10737418240",
                "--csi.testvolumeexpandsize=21474836480",
                f"--ginkgo.junit-report={report}",
                "--ginkgo.no-color",
                "--ginkgo.timeout=15m",
            ],
            capture_output=True,
            text=True,
            timeout=1200,
            check=False,
        )
    output = result.stdout + result.stderr
    (tmp_path / "csi-sanity.log").write_text(output)
    cases = ET.parse(report).getroot().iter("testcase")
    failed, skipped, passed = [], [], 0
    for case in cases:
        name = case.get("name", "")
        if case.find("failure") is not None or case.find("error") is not None:
            failed.append(name)
        elif case.find("skipped") is not None:
            skipped.append(name.removeprefix("[It] ").strip())
        else:
            passed += 1
    assert not failed, f"csi-sanity failures: {failed}\n{output[-6000:]}\n{driver.log()}"
    assert result.returncode == 0, output[-4000:]
    assert passed >= 45, f"only {passed} specs ran:\n{output[-3000:]}"
    assert sorted(skipped) == sorted(_documented_skips()), (
        "skipped specs differ from tests/sanity/expected-skips.txt: "
        f"{sorted(set(skipped) ^ set(_documented_skips()))}"
    )
    readme = (REPO / "README.md").read_text()
    undocumented = [name for name in skipped if name not in readme]
    assert not undocumented, f"skipped specs missing from the README: {undocumented}"
