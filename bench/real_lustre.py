"""Real Lustre's figures: the real-Lustre tier's measured durations, next to the local server set.

    unshare --mount --propagation private -- .venv/bin/python -m bench.real_lustre
    (bash hack/bench.sh --real-lustre [--samples N] [--skip-tier TIMINGS.json])

It runs the real-Lustre tier (`pytest tests/lustre`: the provisioner's server VMs booted in
QEMU, the driver in a client VM), which records what it measured (LustreFileSystem creation to
Ready, boots, each CSI call on real Lustre, each Lustre command the driver spawns, recovery
after a server is killed, growth by one OSS) in a JSON file; then it measures the same CSI
calls on the embedded local server set, one at a time, and writes both side by side to
bench/results/real-lustre-<date>.{json,md}. The accelerator (TCG here: /dev/kvm boots no
standard kernel on these machines) is named next to the figures: under TCG every guest
instruction is emulated, so the real-Lustre figures are an upper bound, not what a node sees.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.drivers import REPO, lustre_csi
from bench.stats import summary
from csi.cli.client import CsiClient
from csi.node.paths import kubelet_staging_path, kubelet_target_path

RESULTS = Path(__file__).resolve().parent / "results"
CALLS = ("CreateVolume", "NodeStageVolume", "NodePublishVolume", "NodeUnpublishVolume",
         "NodeUnstageVolume", "DeleteVolume")


def run_tier(timings: Path, pytest_args: list[str]) -> int:
    env = {**os.environ, "LUSTRE_CSI_TIMINGS": str(timings), "LUSTRE_CSI_PRIVATE_MOUNTS": "1"}
    argv = [sys.executable, "-m", "pytest", "tests/lustre", "-q", "-p", "no:cacheprovider",
            *pytest_args]
    return subprocess.run(argv, cwd=REPO, env=env, check=False).returncode


def local_call_latencies(samples: int) -> dict[str, dict[str, float]]:
    """Each CSI call of a volume's life on the local server set, one at a time."""
    seconds: dict[str, list[float]] = {call: [] for call in CALLS}
    with tempfile.TemporaryDirectory(prefix="lustre-csi-real-bench-") as work:
        driver = lustre_csi(Path(work))
        driver.start()
        try:
            with CsiClient(driver.controller_endpoint) as controller, \
                    CsiClient(driver.node_endpoint) as node:
                for number in range(samples):
                    _one_life(controller, node, str(driver.kubelet_dir), f"life-{number}",
                              driver.create_parameters, seconds)
        finally:
            driver.stop()
    return {call: summary(values, sum(values)) for call, values in seconds.items()}


def _one_life(controller: CsiClient, node: CsiClient, kubelet: str, name: str,
              parameters: dict[str, str], seconds: dict[str, list[float]]) -> None:
    started = time.perf_counter()
    volume = controller.create_volume(name, 32 << 20, parameters)
    seconds["CreateVolume"].append(time.perf_counter() - started)
    staging = kubelet_staging_path(kubelet, volume.volume_id)
    target = kubelet_target_path(kubelet, f"pv-{name}", f"pod-{name}")
    context = volume.volume_context
    steps = (
        ("NodeStageVolume", lambda: node.stage(volume.volume_id, staging, context)),
        ("NodePublishVolume", lambda: node.publish(volume.volume_id, staging, target, context)),
        ("NodeUnpublishVolume", lambda: node.unpublish(volume.volume_id, target)),
        ("NodeUnstageVolume", lambda: node.unstage(volume.volume_id, staging)),
        ("DeleteVolume", lambda: controller.delete_volume(volume.volume_id)),
    )
    for call, step in steps:
        started = time.perf_counter()
        step()
        seconds[call].append(time.perf_counter() - started)


def markdown(document: dict[str, Any]) -> str:
    real = document["real_lustre_seconds"]
    local = document["local_server_set_ms"]
    lines = [
        f"# Real Lustre {document['date']}",
        "",
        f"Accelerator: **{document['accelerator']}** (QEMU; under TCG every guest instruction "
        "is emulated, so real-Lustre figures are upper bounds). Tier exit code: "
        f"{document['tier_exit_code']}. Host: {document['host']}.",
        "",
        "## Measured in the real-Lustre tier (seconds, one sample each)",
        "",
        "| what | seconds |",
        "|---|---|",
        *(f"| {what} | {value} |" for what, value in real.items()),
        "",
        f"## The same CSI calls on the local server set (ms, {document['local_samples']} "
        "sequential samples)",
        "",
        "| call | p50 | p99 | max |",
        "|---|---|---|---|",
        *(f"| {call} | {s['p50_ms']:.1f} | {s['p99_ms']:.1f} | {s['max_ms']:.1f} |"
          for call, s in local.items()),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=20, help="local-server-set samples")
    parser.add_argument("--skip-tier", metavar="TIMINGS_JSON", default="",
                        help="report the timings of an earlier tier run instead of running it")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (e.g. -k life)")
    args = parser.parse_args(argv)
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H%M%SZ")
    if args.skip_tier:
        timings, code = Path(args.skip_tier), 0
    else:
        timings = RESULTS / "tmp" / f"real-lustre-timings-{date}.json"
        timings.parent.mkdir(parents=True, exist_ok=True)
        code = run_tier(timings, args.pytest_args)
    real = json.loads(timings.read_text()) if timings.exists() else {}
    accelerator = real.pop("accelerator", "unknown")
    document = {
        "date": date, "accelerator": accelerator, "tier_exit_code": code,
        "host": f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}",
        "real_lustre_seconds": real, "local_samples": args.samples,
        "local_server_set_ms": local_call_latencies(args.samples),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"real-lustre-{date}.json").write_text(json.dumps(document, indent=1) + "\n")
    text = markdown(document)
    (RESULTS / f"real-lustre-{date}.md").write_text(text)
    print(text)
    if not real:
        print("bench: the tier recorded no timings (see its output above)", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
