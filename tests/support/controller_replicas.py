"""Controller replicas in this process: VolumeServices over one state directory.

Each replica has its own mounts and index, as `serve --mode controller` assembles them on the
embedded local server set with real (private) mounts; two over one state directory are two
controller replicas over the same file systems.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import TracebackType
from typing import Any

from csi.controller.mounts import ControllerMounts
from csi.controller.parameters import VolumeParameters, parse_volume_parameters
from csi.controller.records import VolumeRecord
from csi.controller.sizes import CapacityRange
from csi.controller.volumes import LocatedVolume, VolumeService
from csi.host.command import SubprocessRunner
from csi.host.mount_table import ProcMountTable
from csi.host.mounts import HostMounts
from csi.lustre.client import LustreClient
from csi.lustre.recognizers import LocalTreeRecognizer
from provisioner.local import LOCAL_NID, LocalServerSets
from provisioner.local_lustre import LocalLustreCommands

GiB = 1 << 30
SMALL = {"ostSize": "10Gi", "minOsts": "1", "maxOsts": "2", "growthThreshold": "0.5"}


class Replica:
    """One controller: a VolumeService with its own mounts and index over a shared state dir.

    As a context manager it unmounts its file systems on the way out (a replica that stops).
    """

    def __init__(self, state_dir: Path, name: str) -> None:
        self.sets = LocalServerSets(state_dir)
        runner = LocalLustreCommands(self.sets, SubprocessRunner())
        self.lustre = LustreClient(runner)
        self.mounts = ControllerMounts(
            state_dir / f"controller-mounts-{name}",
            self.lustre,
            HostMounts(runner),
            ProcMountTable(),
            LocalTreeRecognizer(state_dir / "filesystems", LOCAL_NID),
        )
        # Removals are run by the test (run_pending_removals), not by a thread, so what a
        # test sees right after DeleteVolume is what the RPC itself did.
        self.volumes = VolumeService(
            self.sets, self.mounts, self.lustre, background_removals=False
        )
        self.state_dir = state_dir

    def __enter__(self) -> Replica:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.unmount_all()

    def root(self, fsname: str) -> Path:
        return self.sets.namespace_root(fsname)

    def create(self, name: str, size: int = GiB, **parameters: str) -> str:
        volume = self.volumes.create(
            name, CapacityRange(required_bytes=size), self.params(name, **parameters)
        )
        return volume.record.volume_id

    def params(self, name: str, **parameters: str) -> VolumeParameters:
        return parse_volume_parameters(
            {**SMALL, **parameters}, volume_name=name, default_fsname="safe"
        )

    def directory(self, record: VolumeRecord) -> Path:
        """The volume's directory, seen through the file system's namespace."""
        return self.root(record.fsname) / record.directory

    def claim_file(self, record: VolumeRecord) -> Path:
        """The file that claims the volume's project id."""
        return self.root(record.fsname) / ".lustre-csi/projects" / str(record.project_id)

    def claim_holder(self, fsname: str, project_id: int) -> str | None:
        """The volume id a project id's claim names, None when it is not claimed."""
        path = self.root(fsname) / ".lustre-csi/projects" / str(project_id)
        return path.read_text().strip() if path.exists() else None

    def record_on_disk(self, fsname: str, subdir: str) -> dict[str, Any] | None:
        path = self.root(fsname) / ".lustre-csi/volumes" / f"{subdir}.json"
        record: dict[str, Any] | None = json.loads(path.read_text()) if path.exists() else None
        return record

    def plant_record(self, document: dict[str, Any]) -> Path:
        """`document` written where the driver keeps the record of volume `document["name"]`
        (a forged or left-over record: the driver reads it as it reads its own)."""
        records = self.root(document["fsname"]) / ".lustre-csi/volumes"
        return write_file(records / f"{document['name']}.json", json.dumps(document))

    def quota_bytes(self, volume: LocatedVolume) -> int:
        """The block hard limit the volume's project id has on its file system."""
        quota = self.lustre.project_quota(volume.mountpoint, volume.record.project_id)
        return quota.block_hard_limit_bytes

    def unmount_all(self) -> None:
        for fsname in self.sets.list_file_systems():
            self.mounts.release(fsname)


def write_file(path: Path, text: str) -> Path:
    """`text` at `path`, its directories made as needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def record_document(
    name: str, project_id: int, *, kind: str = "shared", capacity_bytes: int = GiB, **fields: Any
) -> dict[str, Any]:
    """A well-formed record of a ready volume `name` on file system "safe", as the driver
    writes one beside the data; `fields` replace what a test forges."""
    return {
        "name": name, "volume_id": f"v1:{kind}:safe:{name}", "kind": kind, "fsname": "safe",
        "subdir": name, "capacity_bytes": capacity_bytes, "project_id": project_id,
        "parameters": {}, "state": "ready", "directory": f"csi-volumes/{name}-0123456789abcdef",
        **fields,
    }
