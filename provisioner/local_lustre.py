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
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from csi.host.atomicfile import read_json, write_json_atomic
from csi.host.command import DEFAULT_TIMEOUT_S, CommandResult, CommandRunner
from csi.lustre.fsname import FSNAME_CHARS
from provisioner.local import LOCAL_NID, LocalServerSets

_SOURCE = re.compile(rf"^(?P<nids>[^/]+):/(?P<fsname>{FSNAME_CHARS})(?P<subdir>(/[^/]+)*)/?$")


MGS_NIDS_FILE = "mgs-nids"
LAYOUT_XATTR = "user.lustre-csi-stand-in.lov"
DEFAULT_STRIPE_SIZE = 1 << 20  # Lustre's file-system default (lfs-setstripe(1))
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
        bound = self._host.run(["mount", "--bind", str(tree), target], timeout=timeout)
        # The kernel client applies ro, nosuid, nodev, noexec and the atime flags to the
        # mount; a bind mount takes them in a second, remounting step (mount(8) semantics).
        flags = [option for option in options if option in _PER_MOUNT_FLAGS]
        if bound.returncode != 0 or not flags:
            return bound
        remount = ",".join(["remount", "bind", *flags])
        remounted = self._host.run(["mount", "-o", remount, target], timeout=timeout)
        if remounted.returncode != 0:
            self._host.run(["umount", target], timeout=timeout)
        return remounted

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
        active = [ost for ost in ledger["osts"] if ost["state"] == "active"]
        header = "UUID                      Inodes       IUsed       IFree IUse%  Mounted on"
        if not inodes:
            header = "UUID                   1K-blocks        Used   Available Use%  Mounted on"
        rows = [header]
        mdt_kib = ledger["template"].get("mdt_size_bytes", 64 << 30) // 1024
        # An MDT holds about one inode per 2 KiB on ldiskfs; OSTs one object per 16 KiB or so.
        mdt_total = mdt_kib // 2 if inodes else mdt_kib
        mdt_used = used_files if inodes else min(mdt_kib, 4 * (used_files + 1))
        rows.append(_df_row(f"{fsname}-MDT0000_UUID", mdt_total, mdt_used, mountpoint, "MDT:0"))
        totals = [0, 0]
        ost_free_inodes = 0
        for ost in ledger["osts"]:
            name = f"{fsname}-OST{ost['index']:04x}_UUID"
            if ost["state"] != "active":
                rows.append(f"OST{ost['index']:04x}             : inactive device")
                continue
            ost_kib = ost["size_bytes"] // 1024
            total = ost_kib // 16 if inodes else ost_kib
            share = (used_files if inodes else used_bytes // 1024) // max(1, len(active))
            rows.append(_df_row(name, total, share, mountpoint, f"OST:{ost['index']}"))
            totals[0] += total
            totals[1] += share
            ost_free_inodes += max(0, total - share)
        if inodes:
            # Files are counted on the MDTs, but each needs an OST object too: lfs reports
            # the MDTs' used inodes and the smaller of the two free counts (2.17:
            # 309 used + min(419123, 130770) free = 131079 files).
            free = min(max(0, mdt_total - mdt_used), ost_free_inodes)
            totals = [mdt_used + free, mdt_used]
        rows.append("")
        rows.append(_df_row("filesystem_summary:", totals[0], totals[1], mountpoint, None))
        rows.append("")  # lfs ends each file system's block with a blank line
        return _ok(args, "\n".join(rows) + "\n")

    def _lfs_project(self, args: tuple[str, ...]) -> CommandResult:
        path = args[-1]
        if "-d" in args:
            record = self._project_of(path)
            project_id = record["project_id"] if record else 0
            flag = "P" if record else "-"
            return _ok(args, f"{project_id:5d} {flag} {path}\n")
        project_id = int(_option_value(args, "-p") or "0")
        fsname, relative = self._locate(path)
        self._write_project(fsname, project_id, {"path": relative})
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
        self._write_project(fsname, project_id, limits)
        return _ok(args, "")

    def _lfs_quota(self, args: tuple[str, ...]) -> CommandResult:
        project_id = int(_option_value(args, "-p") or "0")
        mountpoint = args[-1]
        fsname, _ = self._locate(mountpoint)
        record = read_json(self._project_file(fsname, project_id)) or {}
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
            for relative_dir in self._project_paths(fsname):
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

    def _project_paths(self, fsname: str) -> list[str]:
        return [record["path"] for record in self._project_records(fsname)]

    def _project_records(self, fsname: str) -> Iterator[dict]:
        """Project records of a file system that name a directory (set by `lfs project`)."""
        for record_file in self._server_sets.quota_dir(fsname).glob("*.json"):
            record = read_json(record_file) or {}
            if record.get("path"):
                yield record

    def _project_file(self, fsname: str, project_id: int) -> Path:
        return self._server_sets.quota_dir(fsname) / f"{project_id}.json"

    def _write_project(self, fsname: str, project_id: int, changes: dict) -> None:
        path = self._project_file(fsname, project_id)
        record = read_json(path) or {"project_id": project_id}
        record.update(changes)
        write_json_atomic(path, record, durable=False)  # stands in for server-side state

    def _project_of(self, path: str) -> dict | None:
        """The project record whose directory is `path` (matched by inode, as Lustre would)."""
        target = os.stat(path)
        for fsname in self._server_sets.namespaces():
            root = self._server_sets.namespace_root(fsname)
            for record in self._project_records(fsname):
                try:
                    info = os.stat(root / record["path"])
                except OSError:
                    continue
                if (info.st_dev, info.st_ino) == (target.st_dev, target.st_ino):
                    return record
        return None


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


def getstripe_directory_report(layout: dict | None) -> str:
    """`lfs getstripe -d <directory>` as Lustre 2.17 prints it (lov_dump_user_lmm_header and
    lov_dump_comp_v1 in liblustreapi.c): a plain layout on one line, fields separated by
    one space; a progressive one as `lcm_*`, then per component `lcme_*` lines and its
    fields on one line, each preceded by the six-space indent. No layout: the file system's
    default (count 1, 1 MiB, pattern 0)."""
    if layout is None:
        return f"stripe_count:  1 stripe_size:   {DEFAULT_STRIPE_SIZE} pattern:       0 " \
               "stripe_offset: -1\n\n"

    def fields(part: dict, space: str) -> str:
        shown = [
            f"{space}stripe_count:  {part.get('stripe_count', 1)}",
            f"{space}stripe_size:   {part.get('stripe_size', DEFAULT_STRIPE_SIZE)}",
            f"{space}pattern:       raid0",
            f"{space}stripe_offset: -1",
        ]
        if part.get("pool"):
            shown.append(f"{space}pool:          {part['pool']}")
        return " ".join(shown) + "\n\n"

    components = layout.get("components")
    if not components:
        return fields(layout, "")
    lines = [
        "  lcm_layout_gen:    0",
        "  lcm_mirror_count:  1",
        f"  lcm_entry_count:   {len(components)}",
    ]
    text = "\n".join(lines) + "\n"
    start = 0
    for component in components:
        end = component["end"]
        text += (
            "    lcme_id:             N/A\n"
            "    lcme_mirror_id:      N/A\n"
            "    lcme_flags:          0\n"
            f"    lcme_extent.e_start: {start}\n"
            f"    lcme_extent.e_end:   {'EOF' if end is None else end}\n"
        )
        text += fields(component, "      ")
        start = end if end is not None else start
    return text


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


def project_quota_report(
    project_id: int,
    mountpoint: str,
    *,
    used_kib: int,
    block_limits: tuple[int, int],
    files: int,
    inode_limits: tuple[int, int],
) -> str:
    """`lfs quota -p <id> <mountpoint>` as Lustre 2.17 prints it (tests/fixtures/lustre-2.17).

    Limits are (soft, hard), 0 for none. The stand-in knows no project names, so the title
    says `<unknown>` as Lustre does for an id missing from /etc/projid; no grace timers run.
    """

    def usage(value: int, limits: tuple[int, int]) -> str:
        # '*' right after the figure once it is over a limit (lfs's `%7s%c`).
        soft, hard = limits
        over = (soft and value > soft) or (hard and value > hard)
        return f" {value:>7}{'*' if over else ' '}{limits[0]:>7}{limits[1]:>8}{'-':>8}"

    # print_quota(): a mount point wider than its 15 columns gets a line of its own.
    place = f"{mountpoint}\n{'':15}" if len(mountpoint) > 15 else f"{mountpoint:>15}"
    return (
        f"Disk quotas for prj <unknown> (pid {project_id}):\n"
        "     Filesystem  kbytes  bquota  blimit  bgrace   files  iquota  ilimit  igrace \n"
        f"{place}{usage(used_kib, block_limits)}{usage(files, inode_limits)} \n"
    )


def _df_row(name: str, total: int, used: int, mountpoint: str, target: str | None) -> str:
    # showdf() in 2.17: "%-20s %11s %11s %11s %4s  %s" (two spaces before the mount point).
    available = max(0, total - used)
    percent = f"{(100 * used + total - 1) // total if total else 0}%"
    suffix = f"[{target}]" if target else ""
    return f"{name:<20} {total:>11} {used:>11} {available:>11} {percent:>4}  {mountpoint}{suffix}"


def _ok(args: tuple[str, ...], stdout: str) -> CommandResult:
    return CommandResult(args, 0, stdout, "")


def _fail(args: tuple[str, ...], code: int, message: str) -> CommandResult:
    return CommandResult(args, code, "", message + "\n")
