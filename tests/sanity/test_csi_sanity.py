"""The kubernetes-csi conformance suite, csi-sanity, against `lustre-csi serve --mode all`.

The driver runs on the embedded local server set with real bind mounts. Every spec must pass;
the specs csi-sanity skips must be exactly the documented ones (capabilities we do not claim).
The same run on real Lustre is in tests/lustre/test_real_driver.py; both read their report
with tests/support/csi_sanity.py.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.sanity.serve_for_sanity import SANITY_DIR
from tests.support.csi_sanity import CSI_SANITY, MUTABLE_PARAMS, SanityReport, sanity_args
from tests.support.driver import DriverProcess

PARAMS = Path(__file__).with_name("params.yaml")


@pytest.mark.sanity
def test_csi_sanity_passes_with_only_documented_skips(tmp_path: Path) -> None:
    assert CSI_SANITY.exists(), "csi-sanity is missing: run hack/setup.sh"
    # Kubelet's own layouts cannot be given to csi-sanity (it fixes the last components):
    # serve_for_sanity adds csi-sanity's two shapes below the kubelet root for this run.
    driver = DriverProcess(tmp_path, module="tests.sanity.serve_for_sanity")
    (driver.kubelet_dir / SANITY_DIR).mkdir()
    report = tmp_path / "junit.xml"
    args = sanity_args(
        endpoint=str(driver.socket),
        mount_dir=str(driver.kubelet_dir / SANITY_DIR / "mount"),  # csi-sanity makes these two
        staging_dir=str(driver.kubelet_dir / SANITY_DIR / "staging"),
        params=str(PARAMS),
        mutable_params=str(MUTABLE_PARAMS),  # a VolumeAttributesClass's
        report=str(report),
        volume_bytes=10 << 30,
        expand_bytes=20 << 30,
    )
    with driver:
        result = subprocess.run([str(CSI_SANITY), *args], capture_output=True, text=True,
                                timeout=1200, check=False)
    output = result.stdout + result.stderr
    (tmp_path / "csi-sanity.log").write_text(output)
    problems = SanityReport.from_junit(report.read_text()).problems()
    assert not problems, f"{problems}\n{output[-6000:]}\n{driver.log()}"
    assert result.returncode == 0, output[-4000:]
