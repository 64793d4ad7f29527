"""Which mount options a CSI user may put in mount_flags / a StorageClass's mountOptions.

The list is an allow-list, not a deny-list: an option is accepted only when it is a documented
Lustre client option (mount.lustre(8), "CLIENT OPTIONS") or a generic VFS flag that only
narrows what the mount can do. Options that change *what* is mounted or *how* the mount
helper behaves (`bind`, `remount`, `loop`, `x-*` helpers, `skpath=` pointing the helper at
node files, `exclude=`, `mgssec=`) are refused, as are `suid`, `dev` and `exec`, which would
widen a pod's powers over the node, and `user_fid2path`, which lets any user turn a file id
into its path anywhere in the file system (other volumes' directory names included).

Every mount is `nosuid,nodev` by default and there is no way to turn that off: a set-uid binary
or a device node written into a shared file system by one pod must not give power on the node
to another. `noexec` stays a choice (many workloads run programs from their volumes).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from csi.errors import InvalidArgument

# Lustre 2.12.3+ enables flock by default; saying it keeps older clients coherent too.
# nosuid,nodev: see the module docstring (no user option can undo them: `suid` and `dev` are
# not on the allow-list).
DEFAULT_MOUNT_OPTIONS: tuple[str, ...] = ("flock", "nosuid", "nodev")

# Flag-only options, grouped so that options in one group are alternatives to each other:
# a user may pick one per group, and a user's pick replaces a default from the same group.
_FLAG_GROUPS: tuple[tuple[str, ...], ...] = (
    # Lustre client options, mount.lustre(8).
    ("flock", "localflock", "noflock"),
    ("user_xattr", "nouser_xattr"),
    ("lazystatfs", "nolazystatfs"),
    ("nouser_fid2path",),
    ("always_ping",),
    ("noencrypt",),
    # Generic VFS flags, mount(8): access-time policy, restrictions, write semantics.
    ("atime", "noatime"),
    ("relatime", "norelatime"),
    ("nodiratime",),
    ("nosuid",),
    ("nodev",),
    ("noexec",),
    ("ro", "rw"),
    ("sync", "async"),
)
FLAG_OPTIONS: frozenset[str] = frozenset(option for group in _FLAG_GROUPS for option in group)
_GROUP_OF: dict[str, tuple[str, ...]] = {
    option: group for group in _FLAG_GROUPS for option in group
}

# LNet network types a client mount can name (socklnd, o2iblnd, gnilnd, kfilnd), each with an
# optional network number: tcp, tcp0, o2ib1, ...
LNET_NETWORK = re.compile(r"(?:tcp|o2ib|gni|kfi)(?:0|[1-9][0-9]{0,4})?")


@dataclass(frozen=True)
class _ValueOption:
    pattern: re.Pattern[str]
    shape: str  # what a valid value looks like, for error messages


# key=value options; the value must match `pattern` in full.
VALUE_OPTIONS: dict[str, _ValueOption] = {
    # Restrict this mount's connections to one LNet network (mount.lustre(8) `network=`).
    "network": _ValueOption(LNET_NETWORK, "<lnet network, e.g. tcp0 or o2ib1>"),
}

_NAME = re.compile(r"[a-z][a-z0-9_]*")


def allowed_mount_options() -> str:
    """The allow-list as one human-readable line, for error messages and docs."""
    names = sorted(FLAG_OPTIONS) + [f"{key}={spec.shape}" for key, spec in VALUE_OPTIONS.items()]
    return ", ".join(names)


def _reject(option: str, reason: str) -> InvalidArgument:
    return InvalidArgument(
        f"mount option {option!r} {reason}; allowed options: {allowed_mount_options()}"
    )


def _check_option(option: str) -> str:
    """One already-split option, returned unchanged when it is allowed."""
    if not option:
        raise InvalidArgument(
            "empty mount option (check for stray or doubled commas); "
            f"allowed options: {allowed_mount_options()}"
        )
    if any(ch.isspace() or not ch.isprintable() for ch in option):
        raise _reject(option, "contains whitespace or a control character")
    if any(ch in "'\"`" for ch in option):
        raise _reject(option, "contains a quote")
    name, has_value, value = option.partition("=")
    if name in FLAG_OPTIONS:
        if has_value:
            raise _reject(option, f"sets a value, but {name!r} is a flag that takes none")
        return option
    spec = VALUE_OPTIONS.get(name)
    if spec is None or not _NAME.fullmatch(name):
        raise _reject(option, "is not allowed")
    if not has_value or not spec.pattern.fullmatch(value):
        raise _reject(option, f"needs a value of the form {name}={spec.shape}")
    return option


def _alternatives_key(option: str) -> tuple[str, ...]:
    """Options sharing a key are alternatives: a flag's group, or a key=value option's key."""
    name = option.partition("=")[0]
    return _GROUP_OF.get(name, (name,))


def validate_mount_options(flags: Iterable[str]) -> tuple[str, ...]:
    """Split, check and de-duplicate CSI mount_flags; InvalidArgument names any bad option.

    Each entry may hold several comma-separated options ("noatime,nodev"); spaces around the
    commas are dropped. The result keeps the first occurrence of each option, in order.
    Two alternatives of one setting ("ro" and "rw", "flock" and "noflock", two different
    `network=` values) are refused rather than left for mount to pick one silently.
    """
    if isinstance(flags, str):
        raise TypeError("validate_mount_options takes a list of mount_flags entries, not a str")
    accepted: list[str] = []
    chosen: dict[tuple[str, ...], str] = {}
    for entry in flags:
        # Only plain spaces are trimmed: a newline or tab inside an entry is refused below.
        for raw in entry.split(","):
            option = _check_option(raw.strip(" "))
            if option in accepted:
                continue
            key = _alternatives_key(option)
            earlier = chosen.get(key)
            if earlier is not None:
                raise InvalidArgument(
                    f"mount options {earlier!r} and {option!r} conflict; choose one"
                )
            chosen[key] = option
            accepted.append(option)
    return tuple(accepted)


def merge_mount_options(user: Iterable[str], readonly: bool) -> tuple[str, ...]:
    """The final `-o` list: defaults first, then the user's options, then `ro` when readonly.

    A user's option replaces a default it is an alternative to (`localflock` drops the
    default `flock`). A read-only volume with a user's `rw` is a contradiction, refused.
    """
    requested = validate_mount_options(user)
    user_keys = {_alternatives_key(option) for option in requested}
    merged = [
        option for option in DEFAULT_MOUNT_OPTIONS if _alternatives_key(option) not in user_keys
    ]
    merged.extend(requested)
    if readonly:
        if "rw" in requested:
            raise InvalidArgument("mount option 'rw' conflicts with a read-only volume")
        if "ro" not in merged:
            merged.append("ro")
    return tuple(merged)
