"""Measured use of the file systems the provisioner serves: `lfs df` and `lfs df -i`.

The leader measures every Ready file system on a timer of its own (`UsageMeter.measure_all`),
not inside a reconcile: a file system whose servers hang makes `lfs df` wait out its timeout,
and the one reconcile worker must stay free for fencing meanwhile. Each measurement is kept
in memory (like the nodes' readiness the fencing clock keeps) and the file system is queued;
its reconcile derives the figures into status (`status.derive_status`) and writes them.
After a restart the status keeps the last figures until the next measurement.

`UsageReader` is the seam: `MountedUsage` reads through the controller's own mount of the
file system and the driver's Lustre client (argv only, parsed by csi.lustre.df), so tests put
their stand-in at the command runner, as everywhere else.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from csi.errors import DriverError
from csi.lustre.client import LustreClient
from csi.lustre.df import LfsDf
from csi.lustre.parsers import LustreOutputError
from csi.metrics import ProvisionerMetrics
from csi.server_sets import FileSystemEndpoint
from provisioner.kubevirt.provider import endpoint_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OstUsage:
    """One OST as `lfs df` saw it; an inactive OST reports no figures."""

    index: int
    active: bool
    used_bytes: int = 0
    available_bytes: int = 0
    inodes_used: int = 0
    inodes_free: int = 0


@dataclass(frozen=True)
class FileSystemUsage:
    """The summary rows of `lfs df` (data bytes on the OSTs) and `lfs df -i` (files)."""

    used_bytes: int
    available_bytes: int
    inodes_used: int
    inodes_free: int
    osts: tuple[OstUsage, ...]
    measured_at: str  # RFC 3339

    def ost(self, index: int) -> OstUsage | None:
        return next((ost for ost in self.osts if ost.index == index), None)


def usage_of(blocks: LfsDf, inodes: LfsDf, *, measured_at: str) -> FileSystemUsage:
    """Join `lfs df` and `lfs df -i` of one file system, OST by OST."""
    if blocks.inodes or not inodes.inodes:
        raise LustreOutputError("usage needs `lfs df` then `lfs df -i` output, in that order")
    osts = []
    for target in blocks.osts:
        objects = inodes.ost(target.index)
        active = target.active and objects is not None and objects.active
        osts.append(OstUsage(
            index=target.index, active=active,
            used_bytes=target.used if active else 0,
            available_bytes=target.available if active else 0,
            inodes_used=objects.used if active and objects else 0,
            inodes_free=objects.available if active and objects else 0,
        ))
    return FileSystemUsage(
        used_bytes=blocks.used, available_bytes=blocks.available,
        inodes_used=inodes.used, inodes_free=inodes.available,
        osts=tuple(osts), measured_at=measured_at,
    )


class UsageReader(Protocol):
    def usage(self, endpoint: FileSystemEndpoint) -> FileSystemUsage:
        """Measured use now; DriverError (LustreOutputError among them) or OSError when it
        cannot be read."""
        ...


class MountedUsage:
    """`lfs df` and `lfs df -i` on the controller's own mount of the file system.

    `mountpoint`: the controller's mount of an endpoint, mounted first if need be
    (`csi.controller.mounts.ControllerMounts.mountpoint`).
    """

    def __init__(self, lustre: LustreClient,
                 mountpoint: Callable[[FileSystemEndpoint], Path],
                 clock: Callable[[], str]) -> None:
        self._lustre = lustre
        self._mountpoint = mountpoint
        self._clock = clock

    def usage(self, endpoint: FileSystemEndpoint) -> FileSystemUsage:
        path = self._mountpoint(endpoint)
        return usage_of(self._lustre.df(path), self._lustre.df_inodes(path),
                        measured_at=self._clock())


class UsageMeter:
    """The latest measurement of each Ready file system, and the gauges that show it."""

    def __init__(self, reader: UsageReader, metrics: ProvisionerMetrics) -> None:
        self._reader = reader
        self._metrics = metrics
        self._latest: dict[str, FileSystemUsage] = {}
        self._shown: set[str] = set()  # fsnames whose gauges are out

    def latest(self, name: str) -> FileSystemUsage | None:
        """The last measurement of LustreFileSystem `name` this process made, if any."""
        return self._latest.get(name)

    def measure_all(self, file_systems: Iterable[dict[str, Any]]) -> list[str]:
        """Measure each Ready file system; answers the names measured (to be reconciled)."""
        measured = []
        served: set[str] = set()
        listed: set[str] = set()
        for lfs in file_systems:
            name = lfs["metadata"]["name"]
            listed.add(name)
            try:
                endpoint = endpoint_of(lfs)
            except DriverError:
                continue  # not Ready (or being deleted): nothing to measure
            served.add(endpoint.fsname)
            try:
                usage = self._reader.usage(endpoint)
            except (DriverError, OSError) as error:
                # The status keeps the last figures; the Ready condition says why servers fail.
                log.warning("could not measure the use of file system %s: %s",
                            endpoint.fsname, error)
                continue
            self._latest[name] = usage
            self._show(endpoint.fsname, usage)
            measured.append(name)
        for fsname in self._shown - served:
            self._metrics.forget(fsname)
        self._shown = served
        for gone in set(self._latest) - listed:
            del self._latest[gone]
        return measured

    def _show(self, fsname: str, usage: FileSystemUsage) -> None:
        m = self._metrics
        m.fs_used_bytes.set(usage.used_bytes, fsname)
        m.fs_available_bytes.set(usage.available_bytes, fsname)
        m.fs_inodes_used.set(usage.inodes_used, fsname)
        m.fs_inodes_free.set(usage.inodes_free, fsname)
        m.forget_osts(fsname)
        for ost in usage.osts:
            if not ost.active:
                continue
            label = ost_label(ost.index)
            m.ost_used_bytes.set(ost.used_bytes, fsname, label)
            m.ost_available_bytes.set(ost.available_bytes, fsname, label)
            m.ost_inodes_used.set(ost.inodes_used, fsname, label)
            m.ost_inodes_free.set(ost.inodes_free, fsname, label)


def ost_label(index: int) -> str:
    """How Lustre names an OST: OST0000, OST000a."""
    return f"OST{index:04x}"

