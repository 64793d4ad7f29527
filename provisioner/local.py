"""The embedded default: Lustre server sets on this machine, with no cluster and no VMs.

A file system is a directory tree (`<state>/filesystems/<fsname>/root`) and its OSTs are rows
in a ledger (`server-set.json`). Growth appends OSTs to the ledger at once, so the CSI
controller's logic (ensure the file system, make room, reserve quota) runs unchanged, only
without waiting. Clients reach it through `LocalLustreCommands`, a stand-in for the
`mount -t lustre` / `lfs` tools that answers in Lustre's documented formats.

The NID of every local server set is `0@lo`, Lustre's loopback NID.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

from csi.errors import CapacityExhausted, NotFound
from csi.host.atomicfile import read_json, write_json_atomic
from csi.host.keyed_locks import KeyedLocks
from csi.lustre.fsname import validate_fsname
from csi.server_sets import (
    POOL_INDEX_BLOCK,
    FileSystemCapacity,
    FileSystemEndpoint,
    ServerSetTemplate,
    check_dedication,
    check_deletable,
    dedication,
    growth_ceiling_bytes,
    parse_ost_pools,
)
from provisioner.growth import plan_growth

LOCAL_NID = "0@lo"


class LocalServerSets:
    """ServerSetProvider for the embedded default (see module docstring)."""

    def __init__(self, state_dir: Path) -> None:
        self._root = state_dir / "filesystems"
        self._deleted = state_dir / "deleted-filesystems"
        self._root.mkdir(parents=True, exist_ok=True)
        self._lock = KeyedLocks()
        self._ledgers: dict[str, tuple[tuple[int, int, int], dict]] = {}

    # -- paths the Lustre stand-in needs ------------------------------------------------------
    def namespace_root(self, fsname: str) -> Path:
        """The directory that plays the file system's namespace (what `/` of a mount shows)."""
        return self._root / fsname / "root"

    def quota_dir(self, fsname: str) -> Path:
        return self._root / fsname / "quota"

    def _ledger_path(self, fsname: str) -> Path:
        return self._root / fsname / "server-set.json"

    def ledger(self, fsname: str) -> dict | None:
        """The file system's ledger (treat it as read-only), or None when it does not exist.

        Parsed once and kept while the file is unchanged: every CreateVolume reads it twice,
        and a stat is far cheaper than a JSON parse. Every write replaces the file by rename,
        so (inode, mtime, size) changes whenever anyone, in any process, rewrites it.
        """
        path = self._ledger_path(fsname)
        try:
            stamp = _identity(path.stat())
        except FileNotFoundError:
            self._ledgers.pop(fsname, None)
            return None
        cached = self._ledgers.get(fsname)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        document = read_json(path)
        if document is not None:
            self._ledgers[fsname] = (stamp, document)
        return document

    def _store(self, fsname: str, ledger: dict) -> None:
        path = self._ledger_path(fsname)
        write_json_atomic(path, ledger)
        self._ledgers[fsname] = (_identity(path.stat()), ledger)

    # -- ServerSetProvider ----------------------------------------------------------------------
    def file_system(self, fsname: str) -> FileSystemEndpoint:
        validate_fsname(fsname)
        with self._lock(fsname):
            if self.ledger(fsname) is None:
                raise NotFound(f"file system {fsname!r} does not exist")
        return FileSystemEndpoint(fsname=fsname, mgs_nids=(LOCAL_NID,))

    def ensure_file_system(self, fsname: str, template: ServerSetTemplate) -> FileSystemEndpoint:
        validate_fsname(fsname)
        with self._lock(fsname):
            ledger = self.ledger(fsname)
            if ledger is None:
                self._create(fsname, template)
            else:
                check_dedication(fsname, ledger.get("dedicated_to", ""), template)
        return FileSystemEndpoint(fsname=fsname, mgs_nids=(LOCAL_NID,))

    def _create(self, fsname: str, template: ServerSetTemplate) -> None:
        # The namespace first, the ledger last: a crash in between leaves no ledger, and the
        # next call creates it again over the existing (empty) tree.
        self.namespace_root(fsname).mkdir(parents=True, exist_ok=True)
        self.quota_dir(fsname).mkdir(parents=True, exist_ok=True)
        osts = [
            {"index": index, "size_bytes": template.ost_size_bytes, "state": "active"}
            for index in range(template.min_osts)
        ]
        # Each OST pool's OSTs take indices from a block of its own, as on KubeVirt.
        pools: dict[str, list[int]] = {}
        for number, pool in enumerate(parse_ost_pools(template.ost_pools)):
            first = POOL_INDEX_BLOCK * (number + 1)
            pools[pool.name] = list(range(first, first + pool.ost_count))
            osts += [
                {"index": index, "size_bytes": template.ost_size_bytes, "state": "active",
                 "pool": pool.name}
                for index in pools[pool.name]
            ]
        self._store(
            fsname,
            {
                "fsname": fsname,
                "created": time.time(),
                "template": {k: v for k, v in asdict(template).items() if k != "extra"},
                "osts": osts,
                "pools": pools,  # name -> OST indices (what `lfs pool_list` shows)
                "dedicated_to": dedication(template),
            },
        )

    def ensure_capacity(self, fsname: str, required_bytes: int) -> FileSystemCapacity:
        with self._lock(fsname):
            ledger = self._require(fsname)
            template = ledger["template"]
            capacity = _capacity_of(ledger)
            plan = plan_growth(
                fsname=fsname,
                required_bytes=required_bytes,
                current_total_bytes=capacity.total_bytes,
                # Lost ones too (indices stay taken); a pool's OSTs count toward the room,
                # not toward maxOsts (as spec.ostCount on KubeVirt).
                current_osts=sum(1 for ost in ledger["osts"] if not ost.get("pool")),
                ost_size_bytes=template["ost_size_bytes"],
                threshold=template["growth_threshold"],
                max_osts=template["max_osts"],
            )
            if plan.add == 0:
                return capacity
            # OST indices are never reused: the next index follows the highest ever allocated.
            # (Pool OSTs have indices of their own blocks: not counted here.)
            next_index = max(
                (ost["index"] for ost in ledger["osts"] if not ost.get("pool")), default=-1
            ) + 1
            added = [
                {
                    "index": next_index + n,
                    "size_bytes": template["ost_size_bytes"],
                    "state": "active",
                }
                for n in range(plan.add)
            ]
            # A new document, never the cached one mutated: a failed write changes nothing.
            grown = {**ledger, "osts": [*ledger["osts"], *added]}
            self._store(fsname, grown)
            return _capacity_of(grown)

    def ensure_pool_capacity(self, fsname: str, pool: str, required_bytes: int) -> None:
        """PoolCapacity: OSTs added to the pool's own block until its reservations fit."""
        with self._lock(fsname):
            ledger = self._require(fsname)
            pools = ledger.get("pools", {})
            if pool not in pools:
                raise NotFound(f"file system {fsname!r} has no OST pool {pool!r}")
            template = ledger["template"]
            members = [ost for ost in ledger["osts"] if ost.get("pool") == pool]
            try:
                plan = plan_growth(
                    fsname=fsname, required_bytes=required_bytes,
                    current_total_bytes=sum(ost["size_bytes"] for ost in members),
                    current_osts=len(members), ost_size_bytes=template["ost_size_bytes"],
                    threshold=template["growth_threshold"], max_osts=POOL_INDEX_BLOCK,
                )
            except CapacityExhausted as exc:
                raise CapacityExhausted(
                    f"OST pool {pool!r} of file system {fsname!r} cannot hold "
                    f"{required_bytes} bytes of volumes: its block of {POOL_INDEX_BLOCK} OST "
                    "indices is full"
                ) from exc
            if plan.add == 0:
                return
            start = max(pools[pool]) + 1
            added = [
                {"index": start + n, "size_bytes": template["ost_size_bytes"],
                 "state": "active", "pool": pool}
                for n in range(plan.add)
            ]
            indices = [*pools[pool], *(ost["index"] for ost in added)]
            self._store(fsname, {**ledger, "osts": [*ledger["osts"], *added],
                                 "pools": {**pools, pool: indices}})

    def capacity(self, fsname: str) -> FileSystemCapacity:
        return _capacity_of(self._require(fsname))

    def dedicated_to(self, fsname: str) -> str:
        return str(self._require(fsname).get("dedicated_to", ""))

    def delete_file_system(self, fsname: str, *, dedicated_to: str) -> None:
        validate_fsname(fsname)
        with self._lock(fsname):
            ledger = self.ledger(fsname)
            if ledger is None:
                return  # gone already (a crash after the ledger went leaves only garbage)
            check_deletable(fsname, ledger.get("dedicated_to", ""), dedicated_to)
            # One rename takes the whole tree (ledger included) away at once: the file system
            # no longer exists for anyone, and a crash before the removal leaves only a tree
            # under deleted-filesystems/, never a half-deleted file system.
            self._deleted.mkdir(parents=True, exist_ok=True)
            doomed = self._deleted / f"{fsname}-{time.time_ns()}"
            (self._root / fsname).rename(doomed)
            self._ledgers.pop(fsname, None)
            shutil.rmtree(doomed, ignore_errors=True)

    def namespaces(self) -> list[str]:
        """Every file system with a namespace tree here, including ones whose servers run
        elsewhere (see LocalLustreCommands(any_server=True))."""
        return sorted(p.parent.name for p in self._root.glob("*/root"))

    def list_file_systems(self) -> list[str]:
        return sorted(p.parent.name for p in self._root.glob("*/server-set.json"))

    def _require(self, fsname: str) -> dict:
        ledger = self.ledger(fsname)
        if ledger is None:
            raise NotFound(f"file system {fsname!r} does not exist")
        return ledger


def _identity(info: os.stat_result) -> tuple[int, int, int]:
    return (info.st_ino, info.st_mtime_ns, info.st_size)


def _capacity_of(ledger: dict) -> FileSystemCapacity:
    active = [ost for ost in ledger["osts"] if ost["state"] == "active"]
    template = ledger["template"]
    return FileSystemCapacity(
        total_bytes=sum(ost["size_bytes"] for ost in active),
        ost_count=len(active),
        # Every OST in the ledger (lost ones keep their index, pools' count as room).
        max_total_bytes=growth_ceiling_bytes(
            allocated_bytes=sum(ost["size_bytes"] for ost in ledger["osts"]),
            default_osts=sum(1 for ost in ledger["osts"] if not ost.get("pool")),
            max_osts=template["max_osts"], ost_size_bytes=template["ost_size_bytes"],
        ),
    )
