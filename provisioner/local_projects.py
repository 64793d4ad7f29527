"""The Lustre tool stand-in's project quotas: one JSON file per project id beside the server set.

What `lfs project` and `lfs setquota` set and `lfs quota` reads (server-side state on real
Lustre), kept as one small file per project id (`<quota dir>/<id>.json`: the directory it
was set on, the limits), so setting one volume's quota never rewrites another's. Split from
the stand-in's commands (provisioner.local_lustre).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from csi.host.atomicfile import read_json, write_json_atomic
from provisioner.local import LocalServerSets


class LocalProjects:
    def __init__(self, server_sets: LocalServerSets) -> None:
        self._server_sets = server_sets

    def read(self, fsname: str, project_id: int) -> dict:
        """The project's record ({} when it has none)."""
        return read_json(self._file(fsname, project_id)) or {}

    def change(self, fsname: str, project_id: int, changes: dict) -> None:
        """Set `changes` in the project's record, keeping its other fields."""
        path = self._file(fsname, project_id)
        record = read_json(path) or {"project_id": project_id}
        record.update(changes)
        write_json_atomic(path, record, durable=False)  # stands in for server-side state

    def paths(self, fsname: str) -> list[str]:
        """The directories (below the root) projects were set on."""
        return [record["path"] for record in self._records(fsname)]

    def of_directory(self, path: str) -> dict | None:
        """The project record whose directory is `path` (matched by inode, as Lustre would)."""
        target = os.stat(path)
        for fsname in self._server_sets.namespaces():
            root = self._server_sets.namespace_root(fsname)
            for record in self._records(fsname):
                try:
                    info = os.stat(root / record["path"])
                except OSError:
                    continue
                if (info.st_dev, info.st_ino) == (target.st_dev, target.st_ino):
                    return record
        return None

    def _records(self, fsname: str) -> Iterator[dict]:
        """Project records of a file system that name a directory (set by `lfs project`)."""
        for record_file in self._server_sets.quota_dir(fsname).glob("*.json"):
            record = read_json(record_file) or {}
            if record.get("path"):
                yield record

    def _file(self, fsname: str, project_id: int) -> Path:
        return self._server_sets.quota_dir(fsname) / f"{project_id}.json"
