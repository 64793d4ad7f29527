"""LustreClient: the Lustre client commands the driver runs, as argv lists through a CommandRunner.

Each command has a module-level `build_*_argv` so its exact argv can be tested (and read) on its
own; `LustreClient` validates its inputs, runs the argv with `.check()` (a non-zero exit is
ExternalCommandFailed carrying the argv and stderr) and parses the output.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from typing import Final, TypeVar

from csi.errors import InvalidArgument
from csi.host.command import DEFAULT_TIMEOUT_S, CommandRunner
from csi.lustre.df import LfsDf, parse_lfs_df
from csi.lustre.fsname import FSNAME
from csi.lustre.layout import (
    ALL_OSTS,
    LayoutParameters,
    check_layout_fits,
    parse_getstripe_directory,
    parse_pool_list,
    parse_pool_members,
)
from csi.lustre.mount_options import validate_mount_options
from csi.lustre.parsers import (
    LustreHealth,
    LustreOutputError,
    ProjectQuota,
    parse_health_check,
    parse_lfs_project,
    parse_lfs_quota,
)

# 0 is the project every file starts in; 2^32-1 is the kernel's "no id" (-1 as u32).
MIN_PROJECT_ID: Final = 1
MAX_PROJECT_ID: Final = 4_294_967_294

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = rf"{_OCTET}(?:\.{_OCTET}){{3}}"
# A host name needs a letter somewhere, so "10.0.0.300" is not taken for one.
_HOSTNAME = (
    r"(?=[A-Za-z0-9.-]*[A-Za-z])[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
# An LNet NID: address @ network. Addresses are IPv4 or host names (socklnd, o2iblnd) or a
# number (gnilnd, and 0@lo); networks are an LND name with an optional network number.
NID: Final = re.compile(
    rf"(?:{_IPV4}|{_HOSTNAME}|[0-9]{{1,10}})@(?:tcp|o2ib|gni|kfi|lo)(?:0|[1-9][0-9]{{0,4}})?"
)
_PATH_COMPONENT = re.compile(r"[A-Za-z0-9._-]{1,255}")

_Parsed = TypeVar("_Parsed")


def validate_mount_source(source: str) -> str:
    """`<nid>[,<nid>...][:<nid>[,<nid>...]...]:/<fsname>[/<subdir>]`, as mount.lustre(8).

    ':' separates MGS failover nodes, ',' several NIDs of one node. The subdirectory (a
    Lustre fileset) is checked component by component: no empty, '.' or '..' components, so
    a volume can never name a path outside its file system's tree.
    """
    nodes, separator, path = source.partition(":/")
    if not separator:
        raise InvalidArgument(
            f"Lustre source {source!r} must look like <mgs-nid>[:<failover-nid>]:/<fsname>[/<dir>]"
        )
    for node in nodes.split(":"):
        for nid in node.split(","):
            if not NID.fullmatch(nid):
                raise InvalidArgument(
                    f"Lustre source {source!r}: {nid!r} is not an LNet NID "
                    "(like 10.0.0.5@tcp, 192.168.1.2@o2ib1 or 0@lo)"
                )
    fsname, _, subdir = path.partition("/")
    if not FSNAME.fullmatch(fsname):
        raise InvalidArgument(
            f"Lustre source {source!r}: file system name {fsname!r} must be 1-8 characters "
            "from a-z, A-Z, 0-9, '-' and '_'"
        )
    if path.endswith("/") or (subdir and not _valid_subdir(subdir)):
        raise InvalidArgument(
            f"Lustre source {source!r}: subdirectory {subdir!r} must be '/'-separated names "
            "of A-Z, a-z, 0-9, '.', '_' and '-', with no empty, '.' or '..' parts"
        )
    return source


def _valid_subdir(subdir: str) -> bool:
    return all(
        _PATH_COMPONENT.fullmatch(part) and part not in (".", "..") for part in subdir.split("/")
    )


def validate_project_id(project_id: int) -> int:
    if (
        not isinstance(project_id, int)
        or isinstance(project_id, bool)
        or not MIN_PROJECT_ID <= project_id <= MAX_PROJECT_ID
    ):
        raise InvalidArgument(
            f"project id {project_id!r} must be a whole number from {MIN_PROJECT_ID} to "
            f"{MAX_PROJECT_ID}"
        )
    return project_id


def _validate_size(name: str, size: int) -> int:
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise InvalidArgument(f"{name} {size!r} must be a positive number of bytes")
    return size


def _validate_path(name: str, path: str | os.PathLike[str]) -> str:
    """An absolute path: never mistaken for an option, and free of control characters."""
    text = os.fspath(path)
    if not text.startswith("/") or any(not ch.isprintable() for ch in text):
        raise InvalidArgument(
            f"{name} {text!r} must be an absolute path without control characters"
        )
    return text


def kib_rounded_up(size_bytes: int) -> int:
    """Lustre block limits are whole KiB; round up so a volume never gets less than asked."""
    return -(-size_bytes // 1024)


# --- argv builders ----------------------------------------------------------------------------


def build_mount_argv(source: str, target: str, options: Sequence[str]) -> list[str]:
    argv = ["mount", "-t", "lustre"]
    if options:
        argv += ["-o", ",".join(options)]
    return [*argv, source, target]


def build_assign_project_argv(directory: str, project_id: int) -> list[str]:
    # -s sets PROJID_INHERIT so files created later join the project; -r applies the id to
    # anything already inside (a retried CreateVolume may find files there).
    return ["lfs", "project", "-p", str(project_id), "-s", "-r", directory]


def build_project_of_argv(path: str) -> list[str]:
    # -d: the path itself, not a listing of a directory's children.
    return ["lfs", "project", "-d", path]


def _setquota_argv(mountpoint: str, project_id: int, limits: Sequence[str]) -> list[str]:
    """`lfs setquota -p <id> <limits...> <mountpoint>`: lfs keeps every limit not given."""
    return ["lfs", "setquota", "-p", str(project_id), *limits, mountpoint]


def build_set_project_quota_argv(
    mountpoint: str, project_id: int, hard_limit_bytes: int
) -> list[str]:
    # A CSI capacity is a hard limit, so the soft limit is set to 0 ("none") explicitly:
    # given -B alone, lfs keeps whatever soft limit was there before (an extra GETQUOTA
    # round trip), and a stale soft limit would start grace timers below the capacity.
    hard = f"{kib_rounded_up(hard_limit_bytes)}k"
    return _setquota_argv(mountpoint, project_id, ["-b", "0", "-B", hard])


def build_clear_project_quota_argv(mountpoint: str, project_id: int) -> list[str]:
    # 0 means "no limit" for every one of the four limits (lfs-setquota(1)).
    return _setquota_argv(mountpoint, project_id, ["-b", "0", "-B", "0", "-i", "0", "-I", "0"])


def build_project_quota_argv(mountpoint: str, project_id: int) -> list[str]:
    return ["lfs", "quota", "-p", str(project_id), mountpoint]


def build_set_inode_limit_argv(mountpoint: str, project_id: int, hard_limit: int) -> list[str]:
    # Only the inode limits are given, so lfs keeps the block limits (the capacity) as they
    # are; the soft limit is 0 ("none") for the same reason as the block one.
    return _setquota_argv(mountpoint, project_id, ["-i", "0", "-I", str(hard_limit)])


def build_setstripe_argv(directory: str, layout: LayoutParameters) -> list[str]:
    """`lfs setstripe` making `layout` the default layout of `directory` (lfs-setstripe(1)).

    It replaces the whole default layout the directory had. Sizes and extent ends are bytes
    (all multiples of 64 KiB, so never below lfs's 4096 "assume KiB" cut); a progressive
    layout is one `-E <end>` per extent (`eof` for the last) followed by that extent's
    options, and the stripe size and pool are repeated on every extent so none inherits
    another's by accident.
    """
    def options(stripe_count: int | None) -> list[str]:
        argv = [] if stripe_count is None else ["-c", str(stripe_count)]
        if layout.stripe_size is not None:
            argv += ["-S", str(layout.stripe_size)]
        if layout.pool is not None:
            argv += ["-p", layout.pool]
        return argv

    if not layout.extents:
        return ["lfs", "setstripe", *options(layout.stripe_count), directory]
    argv = ["lfs", "setstripe"]
    for extent in layout.extents:
        argv += ["-E", "eof" if extent.end is None else str(extent.end)]
        argv += options(extent.stripe_count)
    return [*argv, directory]


def build_getstripe_directory_argv(directory: str) -> list[str]:
    # -d: the directory's own default layout, not a listing of every file in it.
    return ["lfs", "getstripe", "-d", directory]


def build_pool_list_argv(target: str) -> list[str]:
    """`lfs pool_list <mountpoint>` lists the pools; `lfs pool_list FS.POOL` a pool's OSTs."""
    return ["lfs", "pool_list", target]


def build_df_argv(mountpoint: str, *, inodes: bool = False) -> list[str]:
    # -v lists OSTs an administrator deactivated as "inactive device" rows instead of hiding
    # them, so the provisioner sees every OST it owns; without -v they vanish from the list.
    return ["lfs", "df", "-v", *(["-i"] if inodes else []), mountpoint]


def build_health_check_argv() -> list[str]:
    return ["lctl", "get_param", "-n", "health_check"]


# --- the client -------------------------------------------------------------------------------


class LustreClient:
    """Lustre client operations on one node, run through `runner`."""

    def __init__(self, runner: CommandRunner, *, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self._runner = runner
        self._timeout = timeout

    def _run(self, argv: list[str]) -> str:
        return self._runner.run(argv, timeout=self._timeout).check().stdout

    def mount(self, source: str, target: str | os.PathLike[str], options: Sequence[str]) -> None:
        """`mount -t lustre -o <options> <source> <target>`; options go through the allow-list."""
        validate_mount_source(source)
        checked = validate_mount_options(options)
        self._run(build_mount_argv(source, _validate_path("mount target", target), checked))

    def assign_project(self, directory: str | os.PathLike[str], project_id: int) -> None:
        """Put `directory` and everything under it in project `project_id`, inherited."""
        self._run(
            build_assign_project_argv(
                _validate_path("directory", directory), validate_project_id(project_id)
            )
        )

    def project_id_of(self, path: str | os.PathLike[str]) -> int:
        """The project `path` belongs to; 0 when it is in none."""
        argv = build_project_of_argv(_validate_path("path", path))
        return self._parse(argv, parse_lfs_project).project_id

    def set_project_quota(
        self, mountpoint: str | os.PathLike[str], project_id: int, hard_limit_bytes: int
    ) -> None:
        """Cap project `project_id` at `hard_limit_bytes` (rounded up to whole KiB)."""
        self._run(
            build_set_project_quota_argv(
                _validate_path("mount point", mountpoint),
                validate_project_id(project_id),
                _validate_size("hard limit", hard_limit_bytes),
            )
        )

    def clear_project_quota(self, mountpoint: str | os.PathLike[str], project_id: int) -> None:
        """Remove every limit of project `project_id` (its usage is still accounted)."""
        self._run(
            build_clear_project_quota_argv(
                _validate_path("mount point", mountpoint), validate_project_id(project_id)
            )
        )

    def project_quota(self, mountpoint: str | os.PathLike[str], project_id: int) -> ProjectQuota:
        argv = build_project_quota_argv(
            _validate_path("mount point", mountpoint), validate_project_id(project_id)
        )
        quota = self._parse(argv, parse_lfs_quota)
        if quota.project_id != project_id:
            raise LustreOutputError(
                f"{' '.join(argv)}: reported project {quota.project_id}, not {project_id}"
            )
        return quota

    def set_project_inode_limit(
        self, mountpoint: str | os.PathLike[str], project_id: int, hard_limit: int
    ) -> None:
        """Cap project `project_id` at `hard_limit` files and directories (0: no limit)."""
        if not isinstance(hard_limit, int) or isinstance(hard_limit, bool) or hard_limit < 0:
            raise InvalidArgument(f"inode limit {hard_limit!r} must be a whole number >= 0")
        self._run(
            build_set_inode_limit_argv(
                _validate_path("mount point", mountpoint), validate_project_id(project_id),
                hard_limit,
            )
        )

    def set_default_layout(
        self, directory: str | os.PathLike[str], layout: LayoutParameters
    ) -> None:
        """Make `layout` the layout new files in `directory` get (files there keep theirs)."""
        if layout.is_default:
            raise InvalidArgument("set_default_layout: the layout sets nothing")
        self._run(build_setstripe_argv(_validate_path("directory", directory), layout))

    def default_layout(self, directory: str | os.PathLike[str]) -> LayoutParameters:
        """The default layout of `directory`, as `lfs getstripe -d` reports it."""
        argv = build_getstripe_directory_argv(_validate_path("directory", directory))
        return self._parse(argv, parse_getstripe_directory)

    def pools(self, mountpoint: str | os.PathLike[str], fsname: str) -> dict[str, int]:
        """Each OST pool of the file system mounted at `mountpoint`, with its OST count."""
        if not FSNAME.fullmatch(fsname):
            raise InvalidArgument(f"file system name {fsname!r} is not valid")
        argv = build_pool_list_argv(_validate_path("mount point", mountpoint))
        names = self._parse(argv, lambda text: parse_pool_list(text, fsname))
        return {pool: len(self._pool_members(fsname, pool)) for pool in names}

    def check_layout(
        self, mountpoint: str | os.PathLike[str], fsname: str, layout: LayoutParameters
    ) -> None:
        """InvalidArgument unless the file system mounted at `mountpoint` has the pool and the
        OSTs `layout` names (`check_layout_fits`).

        Asks Lustre only when the layout names a pool or a count above one, so a volume with
        the default layout costs no extra command."""
        if layout.pool is None and all(c in (1, ALL_OSTS) for c in layout.stripe_counts()):
            return
        pools = self.pools(mountpoint, fsname) if layout.pool is not None else {}
        osts = len(self.df(mountpoint).active_osts)
        check_layout_fits(layout, fsname=fsname, ost_count=osts, pools=pools)

    def _pool_members(self, fsname: str, pool: str) -> list[str]:
        argv = build_pool_list_argv(f"{fsname}.{pool}")
        return self._parse(argv, lambda text: parse_pool_members(text, fsname, pool))

    def df(self, mountpoint: str | os.PathLike[str]) -> LfsDf:
        """Space per MDT/OST and in total, in bytes."""
        return self._parse(build_df_argv(_validate_path("mount point", mountpoint)), parse_lfs_df)

    def df_inodes(self, mountpoint: str | os.PathLike[str]) -> LfsDf:
        """Inodes (files) per MDT/OST and in total."""
        argv = build_df_argv(_validate_path("mount point", mountpoint), inodes=True)
        return self._parse(argv, parse_lfs_df)

    def health(self) -> LustreHealth:
        """This node's Lustre health (`lctl get_param -n health_check`)."""
        return self._parse(build_health_check_argv(), parse_health_check)

    def _parse(self, argv: list[str], parse: Callable[[str], _Parsed]) -> _Parsed:
        stdout = self._run(argv)
        try:
            return parse(stdout)
        except LustreOutputError as exc:
            # Name the command: the parser only knows the text it was given.
            raise LustreOutputError(f"{' '.join(argv)}: {exc}") from exc
