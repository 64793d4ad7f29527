"""csi-sanity runs, wherever the driver runs: its arguments and what its JUnit report must say.

Both conformance runs use it: against the embedded local server set (tests/sanity) and on a
real Lustre client VM (tests/lustre). Every spec must pass, and the skipped specs must be
exactly the documented ones (tests/sanity/expected-skips.txt, each also in the README).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CSI_SANITY = REPO / ".cache" / "bin" / "csi-sanity"
EXPECTED_SKIPS = REPO / "tests" / "sanity" / "expected-skips.txt"


def documented_skips() -> dict[str, str]:
    """spec name -> reason, from expected-skips.txt ("<spec name> | <reason>" per line)."""
    skips = {}
    for line in EXPECTED_SKIPS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, reason = line.rpartition(" | ")
            skips[name.strip()] = reason.strip()
    return skips


MUTABLE_PARAMS = REPO / "tests" / "sanity" / "mutable-params.yaml"


def sanity_args(*, endpoint: str, mount_dir: str, staging_dir: str, params: str,
                mutable_params: str, report: str, volume_bytes: int, expand_bytes: int,
                timeout: str = "15m") -> list[str]:
    """csi-sanity's flags (after the binary's path)."""
    return [
        f"--csi.endpoint={endpoint}",
        f"--csi.mountdir={mount_dir}",
        f"--csi.stagingdir={staging_dir}",
        f"--csi.testvolumeparameters={params}",
        f"--csi.testvolumemutableparameters={mutable_params}",
        f"--csi.testvolumesize={volume_bytes}",
        f"--csi.testvolumeexpandsize={expand_bytes}",
        f"--ginkgo.junit-report={report}",
        "--ginkgo.no-color",
        f"--ginkgo.timeout={timeout}",
    ]


@dataclass(frozen=True)
class SanityReport:
    passed: int
    failed: list[str]
    skipped: list[str]

    @classmethod
    def from_junit(cls, junit_xml: str) -> SanityReport:
        failed, skipped, passed = [], [], 0
        for case in ET.fromstring(junit_xml).iter("testcase"):
            name = case.get("name", "")
            if case.find("failure") is not None or case.find("error") is not None:
                failed.append(name)
            elif case.find("skipped") is not None:
                skipped.append(name.removeprefix("[It] ").strip())
            else:
                passed += 1
        return cls(passed, failed, skipped)

    def problems(self, minimum_passed: int = 45) -> list[str]:
        """What is wrong with this run (empty when it is a pass with only documented skips)."""
        problems = []
        if self.failed:
            problems.append(f"csi-sanity failures: {self.failed}")
        if self.passed < minimum_passed:
            problems.append(f"only {self.passed} specs ran")
        expected = documented_skips()
        if sorted(self.skipped) != sorted(expected):
            problems.append("skipped specs differ from tests/sanity/expected-skips.txt: "
                            f"{sorted(set(self.skipped) ^ set(expected))}")
        readme = (REPO / "README.md").read_text()
        undocumented = [name for name in self.skipped if name not in readme]
        if undocumented:
            problems.append(f"skipped specs missing from the README: {undocumented}")
        return problems
