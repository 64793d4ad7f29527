"""Run the benchmark suite: both drivers, same machine, same load generator; then report.

    unshare --mount --propagation private -- .venv/bin/python -m bench.run   (hack/bench.sh)

Per driver: start-to-Probe time, resident memory (idle, peak under load, at each volume
count, idle after), the load generator's own ceiling (Probe), then at each volume count (0,
1,000, 10,000 present) and each concurrency (1, 8, 64 clients): CreateVolume, NodeStageVolume
+ NodeUnstageVolume of the volumes just created, ListVolumes (one page of 100),
NodePublishVolume + NodeUnpublishVolume, DeleteVolume; then mount density (1,000 volumes
staged and published on the one node plugin, one call after another). Then the provisioner
on a real kube-apiserver. The report computes issue 9's targets as ratios to the reference
driver measured in the same run. Results go to bench/results/<date>.json, .md and .png; any
failed call fails the run (exit 1) after the results are written, so the evidence is kept.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import psutil

from bench import report
from bench.drivers import DEFAULT_HOSTPATH, REPO, DriverUnderTest, RssSampler, hostpath, lustre_csi
from bench.loadgen import Call, PhaseResult, run_phase
from bench.stats import summary
from csi.node.paths import kubelet_staging_path, kubelet_target_path

RESULTS = Path(__file__).resolve().parent / "results"
VOLUME_BYTES = 1 << 20
LIST_PAGE = 100


@dataclass(frozen=True)
class Plan:
    scales: tuple[int, ...] = (0, 1000, 10000)
    clients: tuple[int, ...] = (1, 8, 64)
    creates: int = 320  # per (scale, clients): then the same volumes are deleted
    lists: int = 320
    publish_cycles: int = 320
    probes: int = 3000
    startups: int = 5
    # Below the controller's thread budget (14 of 16 workers): more clients than that are
    # answered UNAVAILABLE (retry) by design, which the generator counts as a failure.
    fill_clients: int = 8
    provisioner_levels: tuple[int, ...] = (1, 10, 100)
    provisioner_samples: int = 5
    density: int = 1000  # volumes staged and published on one node plugin at once

    @classmethod
    def quick(cls) -> Plan:
        return cls(scales=(0, 200), clients=(1, 8), creates=64, lists=64, publish_cycles=64,
                   probes=500, startups=2, provisioner_levels=(1, 3), provisioner_samples=2,
                   density=100)


def log(message: str) -> None:
    print(message, flush=True)


def machine(workdir: Path) -> dict[str, Any]:
    model = ""
    with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    workdir.mkdir(parents=True, exist_ok=True)
    return {
        "cpu": model, "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / (1 << 30), 1),
        "kernel": platform.release(), "python": platform.python_version(),
        "disk": disk_of(workdir),
        "durable_write_ms": durable_write_ms(workdir),
        # Other work on the machine during the run shows here (the machine may be shared).
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def disk_of(path: Path) -> str:
    """The file system both drivers keep their state on, as "ext4 on /dev/vda"."""
    resolved = str(path.resolve())
    best = max((p for p in psutil.disk_partitions(all=True)
                if resolved == p.mountpoint or resolved.startswith(p.mountpoint.rstrip("/") + "/")),
               key=lambda p: len(p.mountpoint), default=None)
    if best is None:
        return "unknown file system"
    return f"{best.fstype} on {best.device}{_journal_of(best.fstype, best.device)}"


def _journal_of(fstype: str, device: str) -> str:
    """Whether an ext4 has a journal: without one, ext4 scans the inodes freed in the last
    minutes on every new inode (fs/ext4/ialloc.c, recently_deleted), which makes a file or
    directory create cost grow with the churn of the run itself."""
    if fstype != "ext4":
        return ""
    try:
        task = (Path("/sys/fs/ext4") / Path(device).name / "journal_task").read_text().strip()
    except OSError:
        return ""
    return " (no journal)" if task == "<none>" else " (journaled)"


@contextlib.contextmanager
def journaled_ext4(workdir: Path, size_gib: int = 32) -> Iterator[None]:
    """A fresh journaled ext4 mounted at `workdir` for the run (a sparse loop image beside
    it, deleted after), for machines whose own disk has an ext4 without a journal: there a
    new inode's cost is mostly ext4 skipping the inodes this run freed (perf: a quarter of
    the controller's CPU), a cost of the machine, not of either driver. Both drivers use it."""
    image = workdir.with_name(workdir.name + ".ext4")
    workdir.mkdir(parents=True, exist_ok=True)
    with open(image, "wb") as sparse:
        sparse.truncate(size_gib << 30)
    try:
        subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
        subprocess.run(["mount", "-o", "loop", str(image), str(workdir)], check=True)
        try:
            yield
        finally:
            # Lazily: a driver process may still hold it for a moment.
            subprocess.run(["umount", "-l", str(workdir)], check=False)
    finally:
        image.unlink(missing_ok=True)


def durable_write_ms(directory: Path, samples: int = 200) -> dict[str, float]:
    """What one durable small write costs on the state's file system (median and p90, ms):
    a new file written, fsynced and renamed into place, as a volume record is. The floor
    under any CreateVolume that answers only once its record is durable."""
    timings = []
    for number in range(samples):
        temporary, final = directory / f".probe-{number}.tmp", directory / f".probe-{number}"
        began = time.perf_counter()
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"{}" * 150)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, final)
        timings.append((time.perf_counter() - began) * 1000)
        final.unlink()
    timings.sort()
    return {"p50": round(timings[len(timings) // 2], 3),
            "p90": round(timings[len(timings) * 9 // 10], 3)}


class DriverBench:
    """Every figure for one driver; `rows` are the latency table, the rest is footprint."""

    def __init__(self, driver: DriverUnderTest, plan: Plan) -> None:
        self.driver = driver
        self.plan = plan
        self.rows: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.result: dict[str, Any] = {"name": driver.name}
        self._publish_volumes: list[tuple[str, dict[str, str]]] = []
        self._present = 0
        self._fill_index = 0

    # -- the phases --------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        self.result["startup_seconds"] = self._startups()
        self.driver.fresh()
        self.driver.start()
        try:
            time.sleep(2.0)
            self.result["rss_idle"] = self.driver.rss()
            self.result["generator_ceiling"] = self._calibrate()
            self._prepare_publish()
            peaks: dict[str, int] = {}
            fills = []
            for scale in self.plan.scales:
                fills.append(self._fill(scale))
                # What `scale` volumes hold at rest, before the load phases' bursts (64
                # clients: threads, their malloc arenas, gRPC buffers) raise the high-water.
                time.sleep(1.0)
                self.result.setdefault("rss_after_fill", {})[str(scale)] = self.driver.rss()
                with RssSampler(self.driver) as sampler:
                    for clients in self.plan.clients:
                        self._measure(scale, clients)
                for role, value in sampler.peak.items():
                    peaks[role] = max(peaks.get(role, 0), value)
                # What the driver holds with `scale` volumes present (issue 9: the
                # controller at 10,000 volumes against its idle figure).
                self.result.setdefault("rss_at_scale", {})[str(scale)] = self.driver.rss()
            self.result["fill"] = fills
            self.result["rss_load_peak"] = peaks
            if self.plan.density:
                self.result["density"] = self._density(self.plan.density)
            time.sleep(2.0)
            self.result["rss_idle_after"] = self.driver.rss()
        finally:
            self.driver.stop()
        self.result["rows"] = self.rows
        self.result["errors"] = self.errors
        return self.result

    def _startups(self) -> dict[str, list[float]]:
        times: dict[str, list[float]] = {}
        for _ in range(self.plan.startups):
            self.driver.fresh()
            try:
                for role, seconds in self.driver.start().items():
                    times.setdefault(role, []).append(round(seconds, 4))
            finally:
                self.driver.stop()
        log("  start to first ready Probe: " + ", ".join(
            f"{role} median {sorted(v)[len(v) // 2] * 1e3:.0f} ms (max {max(v) * 1e3:.0f})"
            for role, v in times.items()))
        return times

    def _calibrate(self) -> list[dict[str, Any]]:
        """The generator's ceiling: a trivial Probe through the same code paths."""
        rows = []
        for clients in self.plan.clients:
            result = run_phase(self.driver.controller_endpoint,
                               [Call("Probe")] * self.plan.probes, clients)
            self._check(result, f"Probe x{clients}")
            row = {"clients": clients, **summary(result.latencies.get("Probe", []),
                                                  result.wall_seconds)}
            rows.append(row)
            log(f"  generator ceiling (Probe, {clients:2d} clients): "
                f"{row['throughput_per_s']:8.0f}/s, p50 {row['p50_ms']:.2f} ms")
        return rows

    def _prepare_publish(self) -> None:
        """One staged volume per client; client c publishes only its own (no mode conflicts)."""
        count = max(self.plan.clients)
        names = [f"pub-{i:03d}" for i in range(count)]
        result = run_phase(self.driver.controller_endpoint, [
            Call("CreateVolume", (n, VOLUME_BYTES, tuple(self.driver.create_parameters.items())))
            for n in names], 8)
        self._check(result, "create publish volumes")
        contexts = self._volume_contexts(result)
        for name in names:
            volume_id = result.created[name]
            staging = Path(kubelet_staging_path(str(self.driver.kubelet_dir), volume_id))
            self._stage(volume_id, str(staging), contexts.get(volume_id, {}))
            self._publish_volumes.append((volume_id, {"staging": str(staging),
                                                      **contexts.get(volume_id, {})}))
        self._present = count

    def _volume_contexts(self, result: PhaseResult) -> dict[str, dict[str, str]]:
        from csi.cli.client import CsiClient

        contexts: dict[str, dict[str, str]] = {}
        with CsiClient(self.driver.controller_endpoint) as client:
            token = ""
            while True:
                page = client.list_volumes(LIST_PAGE, token)
                for entry in page.entries:
                    contexts[entry.volume.volume_id] = dict(entry.volume.volume_context)
                token = page.next_token
                if not token:
                    break
        return contexts

    def _stage(self, volume_id: str, staging: str, context: dict[str, str]) -> None:
        from csi.cli.client import CsiClient
        from csi.rpc import csi_pb2

        capability = csi_pb2.VolumeCapability(
            mount=csi_pb2.VolumeCapability.MountVolume(),
            access_mode=csi_pb2.VolumeCapability.AccessMode(mode=1))
        with CsiClient(self.driver.node_endpoint) as client:
            client.stage(volume_id, staging, context, capability)

    def _fill(self, scale: int) -> dict[str, Any]:
        """Create volumes (through the driver) until `scale` fill volumes are present."""
        wanted = scale - self._fill_index
        started = time.monotonic()
        if wanted > 0:
            params = tuple(self.driver.create_parameters.items())
            calls = [Call("CreateVolume", (f"fill-{i:05d}", VOLUME_BYTES, params))
                     for i in range(self._fill_index, scale)]
            result = run_phase(self.driver.controller_endpoint, calls, self.plan.fill_clients)
            self._check(result, f"fill to {scale}")
            self._fill_index = scale
        seconds = time.monotonic() - started
        rate = wanted / seconds if wanted > 0 else 0.0
        if wanted > 0:
            log(f"  filled to {scale} volumes: {wanted} creates in {seconds:.1f}s "
                f"({rate:.0f}/s at {self.plan.fill_clients} clients)")
        return {"to": scale, "created": max(wanted, 0), "seconds": round(seconds, 2),
                "rate_per_s": round(rate, 1)}

    def _measure(self, scale: int, clients: int) -> None:
        endpoint = self.driver.controller_endpoint
        params = tuple(self.driver.create_parameters.items())
        tag = f"s{scale}-c{clients}"
        names = [f"bench-{tag}-{i:04d}" for i in range(self.plan.creates)]
        create = run_phase(endpoint, [Call("CreateVolume", (n, VOLUME_BYTES, params))
                                      for n in names], clients)
        self._record(scale, clients, "CreateVolume", create)
        stage_cycles = []
        for name in names:
            volume_id = create.created.get(name)
            if volume_id is None:
                continue
            staging = kubelet_staging_path(str(self.driver.kubelet_dir), volume_id)
            stage_cycles.append(Call("StageCycle", (volume_id, staging, tuple(
                create.contexts.get(volume_id, {}).items()))))
        stage = run_phase(self.driver.node_endpoint, stage_cycles, clients)
        self._record(scale, clients, "NodeStageVolume", stage,
                     operations=len(stage.latencies.get("NodeStageVolume", [])))
        self._record(scale, clients, "NodeUnstageVolume", stage,
                     operations=len(stage.latencies.get("NodeUnstageVolume", [])))
        present = scale + len(self._publish_volumes) + len(create.created)
        lists = run_phase(endpoint, [Call("ListVolumes", (LIST_PAGE, min(LIST_PAGE, present)))]
                          * self.plan.lists, clients)
        self._record(scale, clients, "ListVolumes", lists)
        cycles = []
        for i in range(self.plan.publish_cycles):
            volume_id, context = self._publish_volumes[i % clients]
            target = _pod_volume_dir(kubelet_target_path(str(self.driver.kubelet_dir),
                                                         "pv-bench", f"{tag}-{i:04d}"))
            extra = tuple((k, v) for k, v in context.items() if k != "staging")
            cycles.append(Call("PublishCycle", (volume_id, context["staging"], str(target),
                                                extra)))
        publish = run_phase(self.driver.node_endpoint, cycles, clients)
        self._record(scale, clients, "NodePublishVolume", publish,
                     operations=len(publish.latencies.get("NodePublishVolume", [])))
        self._record(scale, clients, "NodeUnpublishVolume", publish,
                     operations=len(publish.latencies.get("NodeUnpublishVolume", [])))
        delete = run_phase(endpoint, [Call("DeleteVolume", (create.created[n],))
                                      for n in names if n in create.created], clients)
        self._record(scale, clients, "DeleteVolume", delete)

    def _density(self, count: int) -> dict[str, Any]:
        """`count` volumes staged and published on the one node plugin at once (a thousand
        pods on a node), one call after another so each call's latency is in order; then
        every one taken down again. Every call is checked; the latency of the first and the
        last hundred shows whether a call costs more with more mounts on the node."""
        params = tuple(self.driver.create_parameters.items())
        names = [f"dense-{i:05d}" for i in range(count)]
        create = run_phase(self.driver.controller_endpoint, [
            Call("CreateVolume", (n, VOLUME_BYTES, params)) for n in names],
            self.plan.fill_clients)
        errors = list(create.errors)
        kubelet = str(self.driver.kubelet_dir)
        volumes = []
        for number, name in enumerate(names):
            if name in create.created:
                volume_id = create.created[name]
                context = tuple(create.contexts.get(volume_id, {}).items())
                volumes.append((volume_id, kubelet_staging_path(kubelet, volume_id),
                                _pod_volume_dir(kubelet_target_path(kubelet, f"pv-{name}",
                                                                    f"pod-{number:05d}")),
                                context))
        stage = run_phase(self.driver.node_endpoint, [
            Call("Stage", (v, staging, context)) for v, staging, _, context in volumes], 1)
        publish = run_phase(self.driver.node_endpoint, [
            Call("Publish", (v, staging, target, context))
            for v, staging, target, context in volumes], 1)
        rss = self.driver.rss()
        mounted_errors = stage.errors + publish.errors
        down = run_phase(self.driver.node_endpoint, [
            Call("Unpublish", (v, target)) for v, _, target, _ in volumes], 4)
        down.merge(run_phase(self.driver.node_endpoint, [
            Call("Unstage", (v, staging)) for v, staging, _, _ in volumes], 4))
        down.merge(run_phase(self.driver.controller_endpoint, [
            Call("DeleteVolume", (v,)) for v, _, _, _ in volumes], self.plan.fill_clients))
        errors += mounted_errors + down.errors
        result: dict[str, Any] = {
            "volumes": count, "mounted": len(volumes), "errors": len(errors),
            "first_errors": errors[:5], "rss_with_all_mounted": rss,
        }
        for method, phase in (("NodeStageVolume", stage), ("NodePublishVolume", publish)):
            latencies = phase.latencies.get(method, [])
            window = max(1, min(100, len(latencies) // 10 or 1))
            result[method] = {
                "ok": len(latencies), "calls": len(volumes),  # a failed call has no latency
                "first": summary(latencies[:window], 1.0),
                "last": summary(latencies[-window:], 1.0),
                "window": window,
            }
        first = result["NodePublishVolume"]["first"]["p50_ms"]
        last = result["NodePublishVolume"]["last"]["p50_ms"]
        log(f"  mount density: {len(volumes)} staged and published, {len(errors)} errors; "
            f"publish p50 first {first:.2f} ms, last {last:.2f} ms; node RSS "
            + ", ".join(f"{role} {value / (1 << 20):.1f} MiB" for role, value in rss.items()))
        # The reference's failures are a finding about it (its users report "File exists" at
        # 80 pods), not a failure of the run; ours fail it.
        if self.driver.name == "lustre-csi":
            self.errors.extend(f"{self.driver.name} mount density: {e}" for e in errors[:20])
        return result

    # -- bookkeeping -------------------------------------------------------------------------
    def _record(self, scale: int, clients: int, method: str, result: PhaseResult,
                operations: int | None = None) -> None:
        self._check(result, f"{method} at {scale} volumes x{clients}")
        row = {"driver": self.driver.name, "volumes": scale, "clients": clients,
               "method": method,
               **summary(result.latencies.get(method, []), result.wall_seconds, operations)}
        if method in ("NodeUnpublishVolume", "NodeUnstageVolume"):
            row["throughput_per_s"] = None  # the cycle's throughput is on the first call's row
        row["retried"] = result.retries.get(method, 0)
        self.rows.append(row)
        throughput = row["throughput_per_s"]
        log(f"  {self.driver.name:10s} {scale:6d} vols {clients:3d} clients {method:20s} "
            f"p50 {row['p50_ms']:8.2f} ms  p99 {row['p99_ms']:8.2f} ms  "
            + (f"{throughput:8.1f}/s" if throughput is not None else " " * 10)
            + f"  (n={row['count']}" + (f", {row['retried']} retried" if row["retried"] else "")
            + ")")

    def _check(self, result: PhaseResult, what: str) -> None:
        if result.errors:
            self.errors.extend(f"{self.driver.name} {what}: {e}" for e in result.errors[:20])
            log(f"  !! {len(result.errors)} errors in {what}: {result.errors[0]}")


def _pod_volume_dir(target: str) -> str:
    """`target`, with its parent made as kubelet makes it before NodePublishVolume (the
    driver makes only the target itself; the reference refuses a missing parent)."""
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small plan for a smoke run")
    parser.add_argument("--hostpath", type=Path, default=DEFAULT_HOSTPATH,
                        help="the reference driver binary (built by hack/install-sidecars.sh)")
    parser.add_argument("--require-reference", action="store_true",
                        help="fail at once when the reference driver binary is missing "
                        "(hack/bench.sh passes it unless --allow-missing-reference)")
    parser.add_argument("--lustre-csi-source", type=Path, default=None,
                        help="run our driver from this source tree (a candidate change)")
    parser.add_argument("--scales", default="",
                        help="comma-separated volume counts (default 0,1000,10000)")
    parser.add_argument("--skip-provisioner", action="store_true")
    parser.add_argument("--density", type=int, default=None,
                        help="volumes in the mount-density run (default 1000, quick 100; 0: none)")
    parser.add_argument("--only", choices=("lustre-csi", "hostpath"), default=None)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/lustre-csi-bench"))
    parser.add_argument("--journaled-ext4", action="store_true",
                        help="keep both drivers' state on a journaled ext4 made for the run "
                        "(a loop image beside --workdir), not on the workdir's own disk")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench: needs root (real bind mounts); run hack/bench.sh", file=sys.stderr)
        return 2
    plan = Plan.quick() if args.quick else Plan()
    if args.scales:
        plan = replace(plan, scales=tuple(int(s) for s in args.scales.split(",")))
    if args.density is not None:
        if args.density < 0:
            parser.error("--density must be 0 or more")
        plan = replace(plan, density=args.density)
    with journaled_ext4(args.workdir) if args.journaled_ext4 else contextlib.nullcontext():
        return _run(args, plan)


def _run(args: argparse.Namespace, plan: Plan) -> int:
    started = time.monotonic()
    document: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine(args.workdir), "plan": asdict(plan), "drivers": {}, "notes": [],
    }
    errors: list[str] = []
    drivers: list[Callable[[], DriverUnderTest]] = []
    if args.only in (None, "lustre-csi"):
        source = (args.lustre_csi_source or REPO).resolve()
        if source != REPO:
            document["notes"].append(f"lustre-csi ran from {source}, not this checkout")
        drivers.append(lambda: lustre_csi(args.workdir / "lustre-csi", source=source))
    if args.only in (None, "hostpath"):
        if args.hostpath.is_file():
            drivers.append(lambda: hostpath(args.workdir / "hostpath", args.hostpath))
        else:
            note = (f"reference driver not measured: {args.hostpath} is missing "
                    "(hack/install-sidecars.sh hostpathplugin)")
            document["notes"].append(note)
            log(f"!! {note}")
            if args.require_reference:
                # Before anything runs: the targets are ratios to the reference, so a run
                # without it could not say whether any is met.
                print(f"bench: {note}; hack/bench.sh --allow-missing-reference measures "
                      "lustre-csi alone", file=sys.stderr)
                return 2
    for make in drivers:
        driver = make()
        log(f"== {driver.name}")
        bench = DriverBench(driver, plan)
        document["drivers"][driver.name] = bench.run()
        errors.extend(bench.errors)
    if not args.skip_provisioner:
        from bench.provisioner_bench import ProvisionerBench

        log("== provisioner (kube-apiserver + KubeVirt stand-in)")
        provisioner = ProvisionerBench(log)
        document["provisioner"] = provisioner.run(plan.provisioner_levels,
                                                  plan.provisioner_samples)
        errors.extend(provisioner.errors)
    document["seconds"] = round(time.monotonic() - started, 1)
    document["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    document["errors"] = errors
    document["targets"] = report.targets(document)
    paths = report.write(document, args.out)
    log("")
    log(paths["markdown"].read_text())
    log(f"results: {', '.join(str(p) for p in paths.values())} ({document['seconds']:.0f}s)")
    if errors:
        log(f"\n!! BENCHMARK FAILED: {len(errors)} errors; first: {errors[0]}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
