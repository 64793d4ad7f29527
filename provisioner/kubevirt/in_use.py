"""Which PersistentVolumes still use a file system: a LustreFileSystem with users is not
deleted (condition DeletionBlocked) unless its spec says forceDelete."""

from __future__ import annotations

from typing import Any


def volumes_using(pvs: list[dict[str, Any]], driver_name: str, fsname: str) -> list[str]:
    """Names of this driver's PersistentVolumes that name `fsname`.

    A PV names a file system by its volume handle (`v1:<kind>:<fsname>:<subdir>`) or,
    for static PVs, by the `fsname` volume attribute. Not counted: a PV being deleted that
    no claim is bound to, and the PV of a dedicated volume whose claim is gone (Released)
    or that is being deleted, since its DeleteVolume is what tears the file system down.
    """
    users = []
    for pv in pvs:
        csi = (pv.get("spec") or {}).get("csi") or {}
        if csi.get("driver") != driver_name:
            continue
        parts = str(csi.get("volumeHandle", "")).split(":")
        by_handle = len(parts) == 4 and parts[0] == "v1" and parts[2] == fsname
        by_attribute = (csi.get("volumeAttributes") or {}).get("fsname") == fsname
        if not (by_handle or by_attribute):
            continue
        phase = (pv.get("status") or {}).get("phase")
        deleting = bool(pv["metadata"].get("deletionTimestamp"))
        if deleting and phase != "Bound":
            continue  # on its way out, and no claim holds it
        if by_handle and parts[1] == "dedicated" and (deleting or phase in ("Released",
                                                                            "Failed")):
            continue
        users.append(pv["metadata"]["name"])
    return sorted(users)
