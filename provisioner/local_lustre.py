"""Stand-in for the Lustre client tools on the embedded default (no Lustre kernel modules here).

`LocalLustreCommands` is a CommandRunner: it receives the same argv lists the real driver
would run (`mount -t lustre ...`, `lfs df`, `lfs project`, `lfs setquota`, `lfs quota`,
`lfs setstripe`/`getstripe -d` on directories, `lfs pool_list`, `lctl get_param`) and
answers in the formats real Lustre 2.17 prints (captured in tests/fixtures/lustre-2.17;
the layout formats from 2.17's liblustreapi.c, as no fixture has them yet), so the
driver's argv builders and parsers run unchanged. Everything else (plain `mount --bind`,
`umount`) goes to the real runner: a Lustre mount becomes a real bind mount of the local
server set's tree.

Project quota state lives next to the server set, one file per project id, so setting one
volume's quota never rewrites another's. A directory's default layout lives on the directory
itself (an extended attribute, as Lustre keeps it in `lustre.lov`), so it moves and goes
with the directory; OST pools are the ledger's `pools` (name -> OST indices).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from csi.errors import ExternalCommandFailed
from csi.host.command import DEFAULT_TIMEOUT_S, CommandResult, CommandRunner
from csi.host.mounts import HostMounts
from csi.lustre.fsname import FSNAME_CHARS
from provisioner.local import LOCAL_NID, LocalServerSets
from provisioner.local_projects import LocalProjects
from provisioner.lustre_reports import (
    df_report,
    getstripe_directory_report,
    project_quota_report,
)

_SOURCE = re.compile(rf"^(?P<nids>[^/]+):/(?P<fsname>{FSNAME_CHARS})(?P<subdir>(/[^/]+)*)/?$")


MGS_NIDS_FILE = "mgs-nids"
LAYOUT_XATTR = "user.lustre-csi-stand-in.lov"
_MIN_STRIPE_SIZE = 64 << 10
_PER_MOUNT_FLAGS = ("ro", "nosuid", "nodev", "noexec", "noatime", "nodiratime", "relatime")


class LocalLustreCommands:
    """See the module docstring.

    `any_server=False` (the embedded default): only file systems of the local server sets,
    at NID 0@lo, can be mounted. `any_server=True`: the servers run elsewhere (the KubeVirt
    stand-in in tests), so a mount of any NIDs is accepted and the file system's data lives in
    a local tree created on first mount, as if the servers had just formatted it; the NIDs are
    remembered so mounts can be recognised later (they never change, by design).
    """

    def __init__(
        self, server_sets: LocalServerSets, host: CommandRunner, *, any_server: bool = False
    ) -> None:
        self._server_sets = server_sets
        self._projects = LocalProjects(server_sets)
        self._host = host
        self._any_server = any_server

    def run(self, argv: Sequence[str], *, timeout: float = DEFAULT_TIMEOUT_S) -> CommandResult:
        args = tuple(argv)
        if args[:1] == ("mount",) and _option_value(args, "-t") == "lustre":
            return self._mount(args, timeout)
        if args[:1] == ("lfs",):
            return self._lfs(args)
        if args[:1] == ("lctl",):
            return self._lctl(args)
        return self._host.run(args, timeout=timeout)

    # -- mount -t lustre ----------------------------------------------------------------------
    def _mount(self, args: tuple[str, ...], timeout: float) -> CommandResult:
        source, target = args[-2], args[-1]
        options = (_option_value(args, "-o") or "").split(",")
        match = _SOURCE.match(source)
        if not match:
            return _fail(args, 22, f"mount.lustre: unable to parse target '{source}'")
        fsname = match["fsname"]
        if self._any_server:
            root = self._server_sets.namespace_root(fsname)
            root.mkdir(parents=True, exist_ok=True)
            self._server_sets.quota_dir(fsname).mkdir(parents=True, exist_ok=True)
            (root.parent / MGS_NIDS_FILE).write_text(match["nids"])
        elif LOCAL_NID not in re.split("[,:]", match["nids"]):
            return _fail(
                args, 5, f"mount.lustre: mount {source} at {target} failed: Input/output error"
            )
        elif self._server_sets.ledger(fsname) is None:
            return _fail(
                args, 2, f"mount.lustre: mount {source} at {target} failed: No such file or dir"
            )
        tree = self._server_sets.namespace_root(fsname) / match["subdir"].lstrip("/")
        if not tree.is_dir():
            return _fail(
                args, 2, f"mount.lustre: mount {source} at {target} failed: No such file or dir"
            )
        # The kernel client applies ro, nosuid, nodev, noexec and the atime flags to the
        # mount; the bind takes them too (HostMounts: mount(2) directly, as the node's own
        # binds are made, rather than two runs of mount(8) per mount, which cost the stand-in
        # two process starts no real Lustre mount pays on top of mount.lustre's own).
        flags = [option for option in options if option in _PER_MOUNT_FLAGS and option != "ro"]
        try:
            HostMounts(self._host).bind(str(tree), target, readonly="ro" in options,
                                        options=flags)
        except ExternalCommandFailed as exc:
            return _fail(args, 32, f"mount.lustre: mount {source} at {target} failed: {exc}")
        return _ok(args, "")

    # -- lfs ------------------------------------------------------------------------------------
    def _lfs(self, args: tuple[str, ...]) -> CommandResult:
        command = args[1] if len(args) > 1 else ""
        handlers = {
            "df": self._lfs_df,
            "project": self._lfs_project,
            "setquota": self._lfs_setquota,
            "quota": self._lfs_quota,
            "setstripe": self._lfs_setstripe,
            "getstripe": self._lfs_getstripe,
            "pool_list": self._lfs_pool_list,
        }
        handler = handlers.get(command)
        if handler is None:
            return _fail(args, 22, f"lfs: unknown command '{command}' in the local stand-in")
        try:
            return handler(args)
        except _LocateError as exc:
            return _fail(args, 2, str(exc))

    def _lfs_df(self, args: tuple[str, ...]) -> CommandResult:
        inodes = "-i" in args
        mountpoint = args[-1]
        fsname, _ = self._locate(mountpoint)
        ledger = self._server_sets.ledger(fsname) or {"osts": [], "template": {}}
        used_bytes, used_files = _tree_usage(self._server_sets.namespace_root(fsname))
        return _ok(args, df_report(fsname, ledger, mountpoint, used_bytes=used_bytes,
                                   used_files=used_files, inodes=inodes))

    def _lfs_project(self, args: tuple[str, ...]) -> CommandResult:
        path = args[-1]
        if "-d" in args:
            record = self._projects.of_directory(path)
            project_id = record["project_id"] if record else 0
            flag = "P" if record else "-"
            return _ok(args, f"{project_id:5d} {flag} {path}\n")
        project_id = int(_option_value(args, "-p") or "0")
        fsname, relative = self._locate(path)
        self._projects.change(fsname, project_id, {"path": relative})
        return _ok(args, "")

    def _lfs_setquota(self, args: tuple[str, ...]) -> CommandResult:
        project_id = int(_option_value(args, "-p") or "0")
        fsname, _ = self._locate(args[-1])
        # lfs setquota changes only the limits it is given and keeps the others.
        limit_options: dict[str, tuple[str, Callable[[str], int]]] = {
            "-B": ("hard_kib", _kib),
            "-b": ("soft_kib", _kib),
            "-I": ("hard_inodes", int),
            "-i": ("soft_inodes", int),
        }
        limits = {}
        for flag, (key, parse) in limit_options.items():
            value = _option_value(args, flag)
            if value is not None:
                limits[key] = parse(value)
        self._projects.change(fsname, project_id, limits)
        return _ok(args, "")

    def _lfs_quota(self, args: tuple[str, ...]) -> CommandResult:
        project_id = int(_option_value(args, "-p") or "0")
        mountpoint = args[-1]
        fsname, _ = self._locate(mountpoint)
        record = self._projects.read(fsname, project_id)
        used_kib, files = 0, 0
        if "path" in record:
            directory = self._server_sets.namespace_root(fsname) / record["path"]
            used_bytes, files = _tree_usage(directory)
            # The project's directory is in the project too: Lustre 2.17 counts 2 files for
            # a directory holding one file (tests/fixtures/lustre-2.17/lfs-quota-p.txt).
            with contextlib.suppress(OSError):
                used_bytes += os.lstat(directory).st_blocks * 512
                files += 1
            used_kib = (used_bytes + 1023) // 1024
        return _ok(
            args,
            project_quota_report(
                project_id,
                mountpoint,
                used_kib=used_kib,
                block_limits=(record.get("soft_kib", 0), record.get("hard_kib", 0)),
                files=files,
                inode_limits=(record.get("soft_inodes", 0), record.get("hard_inodes", 0)),
            ),
        )

    def _lfs_setstripe(self, args: tuple[str, ...]) -> CommandResult:
        """A directory's default layout: plain (-c/-S/-p) or one component per -E."""
        directory = args[-1]
        fsname, _ = self._locate(directory)
        components: list[dict] = []
        current: dict = {}
        options = list(args[2:-1])
        while options:
            flag = options.pop(0)
            if flag not in ("-E", "-c", "-S", "-p") or not options:
                return _fail(args, 22, f"lfs setstripe: option '{flag}' is not supported by "
                                       "the local stand-in")
            value = options.pop(0)
            if flag == "-E":
                current = {"end": None if value in ("-1", "eof") else _bytes(value)}
                components.append(current)
            elif flag == "-c":
                current["stripe_count"] = int(value)
            elif flag == "-S":
                size = _bytes(value)
                if size % _MIN_STRIPE_SIZE:
                    return _fail(args, 22, f"lfs setstripe: invalid stripe size '{value}'")
                current["stripe_size"] = size
            else:
                pools = (self._server_sets.ledger(fsname) or {}).get("pools", {})
                if value not in pools:
                    return _fail(args, 22, f"pool '{fsname}.{value}' does not exist")
                current["pool"] = value
        for component in components:
            stripe, end = component.get("stripe_size"), component["end"]
            if stripe and end is not None and end % stripe:
                return _fail(args, 22, "The component end must be aligned by the stripe size")
        layout = {"components": components} if components else current
        os.setxattr(directory, LAYOUT_XATTR, json.dumps(layout).encode())
        return _ok(args, "")

    def _lfs_getstripe(self, args: tuple[str, ...]) -> CommandResult:
        if args[2:-1] != ("-d",):
            return _fail(args, 22, "lfs getstripe: only -d DIRECTORY is in the local stand-in")
        directory = args[-1]
        self._locate(directory)
        try:
            layout = json.loads(os.getxattr(directory, LAYOUT_XATTR))
        except OSError:
            layout = None
        return _ok(args, getstripe_directory_report(layout))

    def _lfs_pool_list(self, args: tuple[str, ...]) -> CommandResult:
        target = args[-1]
        if target.startswith("/"):
            fsname, _ = self._locate(target)
            pools = (self._server_sets.ledger(fsname) or {}).get("pools", {})
            lines = [f"Pools from {fsname}:", *(f"{fsname}.{pool}" for pool in sorted(pools))]
            return _ok(args, "\n".join(lines) + "\n")
        fsname, _, pool = target.partition(".")
        members = (self._server_sets.ledger(fsname) or {}).get("pools", {}).get(pool)
        if members is None:
            return _fail(args, 2, f"cannot open {target}: No such file or directory")
        osts = [f"{fsname}-OST{index:04x}_UUID" for index in members]
        lines = [f"Pool: {fsname}.{pool}", *osts]
        return _ok(args, "\n".join(lines) + "\n")

    # -- lctl -----------------------------------------------------------------------------------
    def _lctl(self, args: tuple[str, ...]) -> CommandResult:
        if args[1:] == ("get_param", "-n", "health_check"):
            return _ok(args, "healthy\n")
        if args[1:] == ("get_param", "health_check"):
            return _ok(args, "health_check=healthy\n")
        if args[1:] == ("get_param", "-n", "version"):
            return _ok(args, "lustre: 2.16.1 (lustre-csi local stand-in)\n")
        if args[1:] == ("list_nids",):
            return _ok(args, f"{LOCAL_NID}\n")
        return _fail(args, 22, f"lctl: {' '.join(args[1:])} is not supported by the stand-in")

    # -- state ------------------------------------------------------------------------------------
    def _locate(self, path: str) -> tuple[str, str]:
        """(fsname, path inside it) for a path under a mount of a local file system's root."""
        # A client may have mounted the root or a volume's directory (subdirectory mount), so
        # both are anchors; a bind mount keeps the (device, inode) of what it shows.
        # File system roots first: one stat each. Volume directories (subdirectory mounts)
        # cost a read per volume, so they are consulted only when no root is an ancestor.
        roots: dict[tuple[int, int], tuple[str, str]] = {}
        for fsname in self._server_sets.namespaces():
            try:
                info = os.stat(self._server_sets.namespace_root(fsname))
            except OSError:
                continue
            roots[(info.st_dev, info.st_ino)] = (fsname, "")
        try:
            return self._walk_up(path, roots)
        except _LocateError:
            pass
        anchors = dict(roots)
        for fsname in self._server_sets.namespaces():
            root = self._server_sets.namespace_root(fsname)
            for relative_dir in self._projects.paths(fsname):
                try:
                    info = os.stat(root / relative_dir)
                except OSError:
                    continue
                anchors[(info.st_dev, info.st_ino)] = (fsname, relative_dir)
        try:
            return self._walk_up(path, anchors)
        except _LocateError:
            pass
        # A mount of any other directory (a static PV's subdir): search the trees for it.
        # Only this rare case pays for a walk; the kernel's lfs would just ask the mount.
        wanted = self._ancestors(path)
        for fsname in self._server_sets.namespaces():
            root = self._server_sets.namespace_root(fsname)
            for top, _, _ in os.walk(root):
                info = os.stat(top)
                if (info.st_dev, info.st_ino) in wanted:
                    anchors[(info.st_dev, info.st_ino)] = (fsname, os.path.relpath(top, root))
                    return self._walk_up(path, anchors)
        return self._walk_up(path, anchors)

    @staticmethod
    def _ancestors(path: str) -> set[tuple[int, int]]:
        found: set[tuple[int, int]] = set()
        for current in (Path(path), *Path(path).parents):
            with contextlib.suppress(OSError):
                info = os.stat(current)
                found.add((info.st_dev, info.st_ino))
        return found

    @staticmethod
    def _walk_up(path: str, anchors: dict[tuple[int, int], tuple[str, str]]) -> tuple[str, str]:
        current = Path(path)
        below: list[str] = []
        while True:
            try:
                info = os.stat(current)
            except OSError as exc:
                raise _LocateError(f"{path}: {exc.strerror}") from exc
            anchor = anchors.get((info.st_dev, info.st_ino))
            if anchor is not None:
                fsname, relative_dir = anchor
                return fsname, "/".join([p for p in [relative_dir, *reversed(below)] if p])
            if current.parent == current:
                raise _LocateError(f"{path}: not on a Lustre file system")
            below.append(current.name)
            current = current.parent


class _LocateError(Exception):
    pass


def _option_value(args: tuple[str, ...], flag: str) -> str | None:
    for position, arg in enumerate(args[:-1]):
        if arg == flag:
            return args[position + 1]
    return None


def _kib(text: str) -> int:
    units = {"k": 1, "m": 1 << 10, "g": 1 << 20, "t": 1 << 30, "p": 1 << 40}
    text = text.strip().lower()
    if text and text[-1] in units:
        return int(text[:-1]) * units[text[-1]]
    return int(text)


def _bytes(text: str) -> int:
    """An lfs size: bytes, or binary units with a k/m/g/t/p suffix; lfs takes a number below
    4096 as KiB (lfs-setstripe(1), for -S and -E alike)."""
    size = _kib(text) * 1024 if text[-1:].lower() in ("k", "m", "g", "t", "p") else int(text)
    return size * 1024 if size < 4096 else size


def _tree_usage(top: Path) -> tuple[int, int]:
    """(bytes allocated, entries) under `top`, as a quota would count them."""
    used, entries = 0, 0
    for directory, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            try:
                info = os.lstat(os.path.join(directory, name))
            except OSError:
                continue
            used += info.st_blocks * 512
            entries += 1
    return used, entries


def _ok(args: tuple[str, ...], stdout: str) -> CommandResult:
    return CommandResult(args, 0, stdout, "")


def _fail(args: tuple[str, ...], code: int, message: str) -> CommandResult:
    return CommandResult(args, code, "", message + "\n")
