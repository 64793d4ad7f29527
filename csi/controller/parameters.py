"""StorageClass parameters -> what CreateVolume should make.

Every key is checked: an unknown key or a bad value is InvalidArgument naming the key, so a
typo in a StorageClass shows up as a PVC Event instead of a silently different volume.

Three groups of keys: the volume's own (`kind`, `fsname`), the server set's template (one
table, csi.server_sets.TEMPLATE_FIELDS) and the mutable ones a VolumeAttributesClass may also
give and ModifyVolume may change later: the default layout (csi.lustre.layout's table) and
`inodeLimit`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from csi.errors import InvalidArgument
from csi.lustre.fsname import validate_fsname
from csi.lustre.layout import (
    DEFAULT_LAYOUT,
    LAYOUT_PARAMETERS,
    LayoutParameters,
    parse_layout,
)
from csi.quantity import format_quantity, parse_quantity
from csi.server_sets import (
    DEDICATED_TO,
    TEMPLATE_FIELDS,
    ServerSetTemplate,
    TemplateField,
    format_ost_pools,
    parse_ost_pools,
)
from csi.volume_id import KINDS, VolumeId, VolumeKind, subdir_for_name

# Keys the external-provisioner adds with --extra-create-metadata; informational only.
SIDECAR_PREFIX = "csi.storage.k8s.io/"


def _positive_int(key: str, text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise InvalidArgument(f"parameter {key}: {text!r} must be a whole number of at least 1")
    return int(text)


def _fraction(key: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.05 <= value <= 1.0:
        raise InvalidArgument(f"parameter {key}: {text!r} must be a number from 0.05 to 1.0")
    return value


def _size_at_least(minimum: int) -> Callable[[str, str], int]:
    def parse(key: str, text: str) -> int:
        size = parse_quantity(f"parameter {key}", text)
        if size < minimum:
            raise InvalidArgument(
                f"parameter {key}: {text!r} is below the minimum of {format_quantity(minimum)}"
            )
        return size

    return parse


def _text(key: str, text: str) -> str:
    if not text or len(text) > 253 or any(ch.isspace() for ch in text):
        raise InvalidArgument(f"parameter {key}: {text!r} must be 1-253 characters, no spaces")
    return text


def _pools(key: str, text: str) -> str:
    # Kept in its canonical text form: a repeated CreateVolume compares it as written.
    return format_ost_pools(parse_ost_pools(text, f"parameter {key}"))


def _parser(field: TemplateField) -> Callable[[str, str], Any]:
    if field.kind == "size":
        return _size_at_least(field.minimum)
    return {"count": _positive_int, "fraction": _fraction, "text": _text, "pools": _pools}[
        field.kind
    ]


# StorageClass key -> (ServerSetTemplate field, parser), from the one field table
_TEMPLATE_KEYS: dict[str, tuple[str, Callable[[str, str], Any]]] = {
    field.parameter: (field.attribute, _parser(field)) for field in TEMPLATE_FIELDS
}
_OWN_KEYS = ("kind", "fsname")
INODE_LIMIT = "inodeLimit"
MAX_INODE_LIMIT = (1 << 63) - 1
# What a VolumeAttributesClass may set and ModifyVolume may change.
MUTABLE_KEYS = (*LAYOUT_PARAMETERS, INODE_LIMIT)
KNOWN_KEYS = (*_OWN_KEYS, *_TEMPLATE_KEYS, *MUTABLE_KEYS)


@dataclass(frozen=True)
class MutableParameters:
    """The mutable keys a request gave: a layout (only `given` keys count) and an inode limit."""

    layout: LayoutParameters = DEFAULT_LAYOUT
    given: frozenset[str] = frozenset()
    inode_limit: int | None = None  # files and directories; 0: no limit


@dataclass(frozen=True)
class VolumeParameters:
    kind: VolumeKind
    fsname: str  # for the dedicated kind: derived from the volume name
    template: ServerSetTemplate
    layout: LayoutParameters = DEFAULT_LAYOUT
    inode_limit: int | None = None

    def fingerprint(self) -> dict[str, Any]:
        """What must match for a repeated CreateVolume with the same name to be the same volume."""
        values = {f.name: getattr(self.template, f.name) for f in fields(self.template)}
        values.pop("extra")
        if not values["ost_pools"]:
            values.pop("ost_pools")  # records from before pools existed still match
        found: dict[str, Any] = {"kind": self.kind, "fsname": self.fsname, "template": values}
        # Only when given: records of volumes made before layouts existed still match.
        if not self.layout.is_default:
            found["layout"] = self.layout.to_attributes()
        if self.inode_limit is not None:
            found[INODE_LIMIT] = self.inode_limit
        return found


def _inode_limit(text: str) -> int:
    if not text.isdigit() or int(text) > MAX_INODE_LIMIT:
        raise InvalidArgument(
            f"parameter {INODE_LIMIT}: {text!r} must be a whole number of files and "
            f"directories from 0 (no limit) to {MAX_INODE_LIMIT}"
        )
    return int(text)


def parse_mutable_parameters(parameters: Mapping[str, str]) -> MutableParameters:
    """ModifyVolume's (and a VolumeAttributesClass's) parameters: only MUTABLE_KEYS.

    A key fixed when the volume is made is refused with that reason, any other unknown key
    with the list of the keys that may change."""
    fixed = sorted(key for key in parameters if key in KNOWN_KEYS and key not in MUTABLE_KEYS)
    if fixed:
        raise InvalidArgument(
            f"parameter(s) {', '.join(fixed)} cannot change after a volume is made; "
            f"a VolumeAttributesClass may set {', '.join(MUTABLE_KEYS)}"
        )
    unknown = sorted(key for key in parameters if key not in MUTABLE_KEYS)
    if unknown:
        raise InvalidArgument(
            f"unknown mutable parameter(s) {', '.join(unknown)}; a VolumeAttributesClass may "
            f"set {', '.join(MUTABLE_KEYS)}"
        )
    limit = parameters.get(INODE_LIMIT)
    return MutableParameters(
        layout=parse_layout(parameters),
        given=frozenset(key for key in parameters if key in LAYOUT_PARAMETERS),
        inode_limit=None if limit is None else _inode_limit(limit),
    )


def dedicated_fsname(volume_name: str) -> str:
    """A stable 8-character fsname for a dedicated volume ('d' + 7 base-32 hash characters).

    Two names can hash alike; the file system records the volume id it is dedicated to, so
    the second is refused at CreateVolume (`csi.server_sets.check_dedication`), never adopted.
    """
    digest = int.from_bytes(hashlib.sha256(volume_name.encode()).digest()[:8], "big")
    alphabet = "0123456789abcdefghijklmnopqrstuv"
    return "d" + "".join(alphabet[(digest >> (5 * n)) & 31] for n in range(7))


def parse_volume_parameters(
    parameters: Mapping[str, str],
    *,
    volume_name: str,
    default_fsname: str,
    defaults: ServerSetTemplate = ServerSetTemplate(),  # noqa: B008 - frozen, shared safely
    mutable_parameters: Mapping[str, str] | None = None,
) -> VolumeParameters:
    """`parameters` from the StorageClass; `mutable_parameters` from the claim's
    VolumeAttributesClass, whose keys win over the StorageClass's for the same setting."""
    unknown = sorted(
        key for key in parameters if key not in KNOWN_KEYS and not key.startswith(SIDECAR_PREFIX)
    )
    if unknown:
        raise InvalidArgument(
            f"unknown parameter(s) {', '.join(unknown)}; known parameters are "
            f"{', '.join(KNOWN_KEYS)}"
        )
    kind_text = parameters.get("kind", "shared")
    if kind_text not in KINDS:
        raise InvalidArgument(f"parameter kind: {kind_text!r} must be one of {', '.join(KINDS)}")
    kind: VolumeKind = "shared" if kind_text == "shared" else "dedicated"
    if kind == "dedicated":
        if "fsname" in parameters:
            raise InvalidArgument(
                "parameter fsname: a dedicated volume gets its own file system; remove fsname"
            )
        fsname = dedicated_fsname(volume_name)
    else:
        fsname = validate_fsname(parameters.get("fsname", default_fsname), "parameter fsname")
    changes = {
        field_name: parse(key, parameters[key])
        for key, (field_name, parse) in _TEMPLATE_KEYS.items()
        if key in parameters
    }
    if kind == "dedicated":
        # The file system records the id of the volume it is made for: the provider refuses
        # to put another volume in it and to delete it for any other volume id.
        volume_id = VolumeId("dedicated", fsname, subdir_for_name(volume_name))
        changes["extra"] = {**defaults.extra, DEDICATED_TO: str(volume_id)}
    template = replace(defaults, **changes)
    if template.min_osts > template.max_osts:
        raise InvalidArgument(
            f"parameter minOsts ({template.min_osts}) is above maxOsts ({template.max_osts})"
        )
    mutable = parse_mutable_parameters(
        {key: parameters[key] for key in MUTABLE_KEYS if key in parameters}
    )
    if mutable_parameters:
        chosen = parse_mutable_parameters(mutable_parameters)
        mutable = MutableParameters(
            layout=mutable.layout.changed_by(chosen.layout, set(chosen.given)),
            inode_limit=mutable.inode_limit if chosen.inode_limit is None else chosen.inode_limit,
        )
    return VolumeParameters(
        kind=kind, fsname=fsname, template=template, layout=mutable.layout,
        inode_limit=mutable.inode_limit,
    )
