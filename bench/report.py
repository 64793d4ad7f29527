"""Targets, and the three outputs of a run: <date>.json, <date>.md and <date>.png."""

from __future__ import annotations

from pathlib import Path
from typing import Any

MIB = 1 << 20
METHODS = ("CreateVolume", "DeleteVolume", "ListVolumes", "NodePublishVolume",
           "NodeUnpublishVolume")
PLOTTED = ("CreateVolume", "DeleteVolume", "ListVolumes", "NodePublishVolume")
TARGET_CLIENTS = 8


def _row(document: dict[str, Any], driver: str, method: str, volumes: int,
         clients: int = TARGET_CLIENTS) -> dict[str, Any] | None:
    rows = (document["drivers"].get(driver) or {}).get("rows") or []
    return next((r for r in rows if (r["method"], r["volumes"], r["clients"]) ==
                 (method, volumes, clients)), None)


def _target(name: str, value: float | None, limit: float | None, unit: str,
            evidence: str = "") -> dict[str, Any]:
    met = None if value is None or limit is None else value <= limit
    return {"target": name, "value": value, "limit": limit, "unit": unit, "met": met,
            "evidence": evidence}


def targets(document: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of the issue with the measured figure; met is None when not measurable."""
    ours, ref = "lustre-csi", "hostpath"
    scales = document["plan"]["scales"]
    low, high = scales[0], scales[-1]
    out = []
    create0 = _row(document, ours, "CreateVolume", low)
    create_high = _row(document, ours, "CreateVolume", high)
    ref_high = _row(document, ref, "CreateVolume", high)
    out.append(_target(f"CreateVolume p50 at {TARGET_CLIENTS} clients, {low} volumes",
                       create0 and create0["p50_ms"], 5.0, "ms"))
    out.append(_target(f"CreateVolume p99 at {TARGET_CLIENTS} clients, {low} volumes",
                       create0 and create0["p99_ms"], 20.0, "ms"))
    if create0 and create_high:
        out.append(_target(f"CreateVolume p50 at {high} volumes / at {low}",
                           round(create_high["p50_ms"] / max(create0["p50_ms"], 1e-9), 2),
                           1.5, "x"))
    if create_high:
        # Throughput must be at least the reference's: compare as reference / ours <= 1.
        value = None if ref_high is None else round(
            ref_high["throughput_per_s"] / max(create_high["throughput_per_s"], 1e-9), 2)
        out.append(_target(f"CreateVolume throughput at {high} volumes: reference / ours",
                           value, 1.0, "x",
                           f"ours {create_high['throughput_per_s']}/s, reference "
                           f"{ref_high['throughput_per_s'] if ref_high else 'not measured'}/s"))
    publish = _row(document, ours, "NodePublishVolume", low)
    ref_publish = _row(document, ref, "NodePublishVolume", low)
    if publish:
        out.append(_target(f"NodePublishVolume p50 at {TARGET_CLIENTS} clients: ours",
                           publish["p50_ms"], ref_publish and ref_publish["p50_ms"], "ms",
                           "limit is the reference driver's p50"))
    driver = document["drivers"].get(ours) or {}
    idle = driver.get("rss_idle") or {}
    if idle:
        out.append(_target("node plugin RSS idle", round(idle["node"] / MIB, 1), 40.0, "MiB"))
        out.append(_target("controller RSS idle", round(idle["controller"] / MIB, 1), 120.0,
                           "MiB"))
    for role, values in (driver.get("startup_seconds") or {}).items():
        median = sorted(values)[len(values) // 2]
        out.append(_target(f"{role} start to first ready Probe (median)", round(median, 3),
                           1.0, "s", f"{len(values)} starts, max {max(values):.3f}s"))
    provisioner = document.get("provisioner") or {}
    for figure, limit in (("creation", 2.0), ("growth", 1.0)):
        rows = [r for r in provisioner.get("rows") or [] if r["figure"] == figure]
        if rows:
            worst = max(r["max_ms"] for r in rows) / 1e3
            out.append(_target(f"provisioner {figure} (worst sample, any level)",
                               round(worst, 3), limit, "s",
                               f"{sum(r['count'] for r in rows)} samples"))
    return out


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown(document: dict[str, Any]) -> str:
    names = list(document["drivers"])
    m = document["machine"]
    lines = [
        f"# Benchmark {document['date']}",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Linux {m['kernel']}, "
        f"Python {m['python']}, {m['disk']}. Both drivers on the same machine in the same run, "
        "driven by the same multi-process gRPC load generator (bench/loadgen.py). "
        f"Run took {document.get('seconds', 0):.0f}s; load average at start "
        f"{m.get('load_average_at_start')}, at end {m.get('load_average_at_end')}.",
        "",
    ]
    lines += [f"> {note}" for note in document.get("notes") or []]
    header = "| op | volumes | clients | " + " | ".join(
        f"{n} p50 ms | {n} p99 ms | {n} ops/s" for n in names) + " | n |"
    lines += ["## Latency and throughput", "", header,
              "|" + "---|" * (4 + 3 * len(names))]
    keys = sorted({(r["method"], r["volumes"], r["clients"])
                   for d in document["drivers"].values() for r in d.get("rows") or []},
                  key=lambda k: (METHODS.index(k[0]), k[1], k[2]))
    for method, volumes, clients in keys:
        cells = []
        count = "-"
        for name in names:
            row = _row(document, name, method, volumes, clients)
            if row is None:
                cells += ["-", "-", "-"]
                continue
            count = str(row["count"])
            cells += [_fmt(row["p50_ms"]), _fmt(row["p99_ms"]),
                      _fmt(row["throughput_per_s"], 0)]
        lines.append(f"| {method} | {volumes} | {clients} | " + " | ".join(cells)
                     + f" | {count} |")
    lines += ["", "NodeUnpublishVolume runs in the same cycle as NodePublishVolume; the cycle's "
              "rate is on the publish row.", "", "## Footprint", "",
              "| driver | process | start to ready Probe (median) | RSS idle MiB | "
              "RSS peak under load MiB | RSS idle after load MiB |", "|---|---|---|---|---|---|"]
    for name, driver in document["drivers"].items():
        for role, values in (driver.get("startup_seconds") or {}).items():
            median = sorted(values)[len(values) // 2]
            lines.append(
                f"| {name} | {role} | {median * 1e3:.0f} ms | "
                f"{(driver.get('rss_idle') or {}).get(role, 0) / MIB:.1f} | "
                f"{(driver.get('rss_load_peak') or {}).get(role, 0) / MIB:.1f} | "
                f"{(driver.get('rss_idle_after') or {}).get(role, 0) / MIB:.1f} |")
    lines += ["", "Load generator ceiling (Probe through the same generator):", ""]
    for name, driver in document["drivers"].items():
        ceiling = ", ".join(f"{r['clients']} clients {r['throughput_per_s']:.0f}/s"
                            for r in driver.get("generator_ceiling") or [])
        fills = ", ".join(f"to {f['to']} at {f['rate_per_s']:.0f}/s"
                          for f in driver.get("fill") or [] if f["created"])
        lines.append(f"- {name}: {ceiling}; fill (CreateVolume, 16 clients): {fills or '-'}")
    provisioner = document.get("provisioner")
    if provisioner:
        lines += ["", "## Provisioner (kube-apiserver, KubeVirt stand-in)", "",
                  "| figure | file systems present | p50 ms | max ms | samples |",
                  "|---|---|---|---|---|"]
        for row in provisioner["rows"]:
            lines.append(f"| {row['figure']} | {row['present']} | {row['p50_ms']:.0f} | "
                         f"{row['max_ms']:.0f} | {row['count']} |")
        lines.append(f"\nPolled every {provisioner['poll_seconds'] * 1e3:.0f} ms.")
    lines += ["", "## Targets", "", "| target | measured | limit | met |", "|---|---|---|---|"]
    for t in document.get("targets") or []:
        met = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
        evidence = f" ({t['evidence']})" if t["evidence"] else ""
        lines.append(f"| {t['target']}{evidence} | {_fmt(t['value'])} {t['unit']} | "
                     f"{_fmt(t['limit'])} {t['unit']} | {met} |")
    if document.get("errors"):
        lines += ["", f"**{len(document['errors'])} ERRORS** (first: {document['errors'][0]})"]
    return "\n".join(lines) + "\n"


def plot(document: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scales = document["plan"]["scales"]
    figure, axes = plt.subplots(2, 2, figsize=(10, 7), dpi=80)
    colors = {"lustre-csi": "tab:blue", "hostpath": "tab:orange"}
    for axis, method in zip(axes.flat, PLOTTED, strict=True):
        for name in document["drivers"]:
            rows = [_row(document, name, method, s) for s in scales]
            xs = [i for i, r in enumerate(rows) if r]
            color = colors.get(name, "tab:gray")
            axis.plot(xs, [rows[i]["p50_ms"] for i in xs], "o-", color=color,  # type: ignore[index]
                      label=f"{name} p50")
            axis.plot(xs, [rows[i]["p99_ms"] for i in xs], "s--", color=color,  # type: ignore[index]
                      alpha=0.6, label=f"{name} p99")
        axis.set_title(f"{method} ({TARGET_CLIENTS} clients)")
        axis.set_xticks(range(len(scales)), [f"{s:,}" for s in scales])
        axis.set_xlabel("volumes present")
        axis.set_ylabel("latency (ms)")
        axis.set_ylim(bottom=0)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.suptitle(f"CSI latency against volume count ({document['date']})")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def write(document: dict[str, Any], out: Path) -> dict[str, Path]:
    import json

    out.mkdir(parents=True, exist_ok=True)
    stem = document["date"].replace(":", "")
    paths = {"json": out / f"{stem}.json", "markdown": out / f"{stem}.md",
             "png": out / f"{stem}.png"}
    paths["json"].write_text(json.dumps(document, indent=1) + "\n")
    paths["markdown"].write_text(markdown(document))
    try:
        plot(document, paths["png"])
    except ImportError:
        paths.pop("png")
        print("bench: matplotlib is not installed (pip install '.[bench]'): no plot")
    return paths
