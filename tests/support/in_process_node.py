"""The node service in this process, for the tests that inject a fault into one of its parts.

Real mounts (the tests run in a private mount namespace) of the embedded local server set's
file system "itest", at kubelet's CSI path layouts below a kubelet dir of the test's own.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from csi.cli.client import NodeCalls
from csi.errors import DriverError
from csi.host.command import SubprocessRunner
from csi.host.mount_table import MountEntry, ProcMountTable, mounts_at
from csi.host.mounts import HostMounts
from csi.lustre.client import LustreClient
from csi.lustre.recognizers import LocalTreeRecognizer
from csi.node.paths import PathPolicy, kubelet_staging_path, kubelet_target_path
from csi.node.servicer import NodeServicer
from csi.node.stats import VolumeStatsReader
from csi.server_sets import ServerSetTemplate
from provisioner.local import LOCAL_NID, LocalServerSets
from provisioner.local_lustre import LocalLustreCommands


class ServicerAsStub:
    """A servicer's methods with a stub's signature, `(request, timeout=...)`: the call runs in
    this process with no deadline, and a refusal comes out as the typed DriverError raised."""

    def __init__(self, servicer: object) -> None:
        self._servicer = servicer

    def __getattr__(self, method: str) -> Callable[..., Any]:
        handler = getattr(self._servicer, method)
        return lambda request, timeout=None: handler(request, None)


class InProcessNode(NodeCalls):
    """The node calls (stage, publish, ..., volume_stats) made straight to `servicer`."""

    def __init__(self, servicer: NodeServicer, kubelet: Path, sets: LocalServerSets) -> None:
        super().__init__(ServicerAsStub(servicer), timeout=0.0)
        self.servicer = servicer
        self.kubelet = kubelet
        self.sets = sets

    def volume(self, name: str) -> tuple[str, dict[str, str]]:
        """A volume directory made behind the controller's back: (volume id, context)."""
        (self.sets.namespace_root("itest") / name).mkdir(exist_ok=True)
        return f"v1:shared:itest:{name}", {"fsname": "itest", "mgsNids": "0@lo", "subdir": name}

    def staged_volume(self, name: str) -> tuple[str, dict[str, str], str, str]:
        """A volume made behind the controller's back, staged: (volume id, context, staging
        path, and the target path of its PV pv-`name` in pod-1, not yet published)."""
        volume_id, context = self.volume(name)
        staging, target = self.staging(volume_id), self.target(f"pv-{name}")
        self.stage(volume_id, staging, context)
        return volume_id, context, staging, target

    def staging(self, volume_id: str) -> str:
        path = Path(kubelet_staging_path(str(self.kubelet), volume_id))
        path.mkdir(parents=True, exist_ok=True)
        return str(path)

    def target(self, pv_name: str, pod_uid: str = "pod-1") -> str:
        path = Path(kubelet_target_path(str(self.kubelet), pv_name, pod_uid))
        path.parent.mkdir(parents=True, exist_ok=True)
        return str(path)


def in_process_node(tmp_path: Path, **overrides: Any) -> InProcessNode:
    """A node service over file system "itest"; `overrides` replace its parts by name."""
    state, kubelet = tmp_path / "state", tmp_path / "kubelet"
    kubelet.mkdir()
    sets = LocalServerSets(state)
    sets.ensure_file_system("itest", ServerSetTemplate())
    runner = LocalLustreCommands(sets, SubprocessRunner())
    lustre = LustreClient(runner)
    probe, bounded = overrides.get("probe"), overrides.get("bounded")
    parts = {
        "node_id": "n",
        "lustre": lustre,
        "host": HostMounts(runner),
        "table": ProcMountTable(),
        "recognizer": LocalTreeRecognizer(state / "filesystems", LOCAL_NID),
        "paths": PathPolicy([str(kubelet)]),
        "stats": VolumeStatsReader(lustre, probe=probe, bounded=bounded),
        **overrides,
    }
    return InProcessNode(NodeServicer(**parts), kubelet, sets)


def refusal_code(call: Callable[[], object]) -> grpc.StatusCode:
    """The gRPC code of the typed error the call must raise."""
    with pytest.raises(DriverError) as failed:
        call()
    return failed.value.code


def top_mount(path: str | Path) -> MountEntry | None:
    """The mount a lookup of `path` sees (the last one stacked there), None if none is."""
    entries = mounts_at(ProcMountTable(), str(path))
    return entries[-1] if entries else None


class RedirectedBinds(HostMounts):
    """Real bind mounts, but of another source or onto another target than asked: a path
    swapped mid-way (the file system's root for the staged volume, a target moved away)."""

    def __init__(self, *, source: Path | None = None, target: Path | None = None) -> None:
        super().__init__(SubprocessRunner())
        self._source, self._target = source, target

    def bind(self, source: str, target: str, **kwargs: Any) -> None:
        if self._target is not None:
            self._target.mkdir(exist_ok=True)
            kwargs.pop("mounted_at", None)  # it names the target asked for, not this one
            target = str(self._target)
        super().bind(str(self._source or source), target, **kwargs)
