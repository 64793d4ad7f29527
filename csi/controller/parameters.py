"""StorageClass parameters -> what CreateVolume should make.

Every key is checked: an unknown key or a bad value is InvalidArgument naming the key, so a
typo in a StorageClass shows up as a PVC Event instead of a silently different volume.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from csi.errors import InvalidArgument
from csi.lustre.fsname import validate_fsname
from csi.quantity import format_quantity, parse_quantity
from csi.server_sets import DEDICATED_TO, TEMPLATE_FIELDS, ServerSetTemplate, TemplateField
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


def _parser(field: TemplateField) -> Callable[[str, str], Any]:
    if field.kind == "size":
        return _size_at_least(field.minimum)
    return {"count": _positive_int, "fraction": _fraction, "text": _text}[field.kind]


# StorageClass key -> (ServerSetTemplate field, parser), from the one field table
_TEMPLATE_KEYS: dict[str, tuple[str, Callable[[str, str], Any]]] = {
    field.parameter: (field.attribute, _parser(field)) for field in TEMPLATE_FIELDS
}
_OWN_KEYS = ("kind", "fsname")
KNOWN_KEYS = (*_OWN_KEYS, *_TEMPLATE_KEYS)


@dataclass(frozen=True)
class VolumeParameters:
    kind: VolumeKind
    fsname: str  # for the dedicated kind: derived from the volume name
    template: ServerSetTemplate

    def fingerprint(self) -> dict[str, Any]:
        """What must match for a repeated CreateVolume with the same name to be the same volume."""
        values = {f.name: getattr(self.template, f.name) for f in fields(self.template)}
        values.pop("extra")
        return {"kind": self.kind, "fsname": self.fsname, "template": values}


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
) -> VolumeParameters:
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
    return VolumeParameters(kind=kind, fsname=fsname, template=template)
