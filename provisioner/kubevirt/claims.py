"""Claiming a file system's planned addresses in the one claims object, and giving them back.

Every address of a plan is claimed in the claims ConfigMap (`addresses.AddressClaimStore`,
written with resourceVersion guards) before the plan is recorded, so no two file systems,
planned by two leaders at once or not, get one address.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from provisioner.kubevirt.addresses import AddressClaimStore
from provisioner.kubevirt.kube import ConflictError
from provisioner.kubevirt.layout import Layout, extend_layout
from provisioner.kubevirt.spec import FileSystemSpec

log = logging.getLogger(__name__)
CLAIM_ATTEMPTS = 5


def claim_plan(store: AddressClaimStore, fs: str, spec: FileSystemSpec, layout: Layout,
               others: list[dict[str, Any]]) -> tuple[Layout, list[str]] | None:
    """The layout extended as the spec asks, every address in it claimed for `fs`.

    Also a problem for each recorded address another file system holds the claim of
    (possible only for plans made before claims existed); None when the claims object
    changed under us on every attempt.
    """
    for _ in range(CLAIM_ATTEMPTS):
        claims = store.read()
        # Statuses too: file systems planned before the claims object existed.
        taken = claims.taken_by_others(fs) | addresses_of(others)
        planned = extend_layout(layout, spec, taken, claims.held_by(fs))
        owners = dict(claims.owners)
        conflicts = []
        for server in planned.servers:
            owner = owners.get(server.address, "")
            if owner and owner.partition("/")[0] != fs:
                conflicts.append(
                    f"{server.name} address {server.address} is also claimed by "
                    f"{owner.replace('/', ' server ')}; two file systems must not share a "
                    "NID: delete one of them or fix its status by hand")
                continue
            owners[server.address] = f"{fs}/{server.name}"
        if owners == claims.owners:
            return planned, conflicts
        try:
            store.write(claims, owners)
        except ConflictError:
            continue  # another writer claimed first: read again, pick again
        return planned, conflicts
    return None


def release_claims(store: AddressClaimStore, fs: str, confirm: Callable[[str], None]) -> None:
    """Give back every address `fs` holds (its VMs are gone); confirms leadership first."""
    for _ in range(CLAIM_ATTEMPTS):
        claims = store.read()
        owners = {a: o for a, o in claims.owners.items() if o.partition("/")[0] != fs}
        if owners == claims.owners:
            return
        confirm(f"release the addresses of {fs}")
        try:
            store.write(claims, owners)
        except ConflictError:
            continue
        log.info("LustreFileSystem %s: address claims released", fs)
        return
    raise ConflictError(409, "Conflict", "address claims kept changing; will retry")


def addresses_of(others: list[dict[str, Any]]) -> set[str]:
    """Addresses other file systems record in their status (planned before claims existed)."""
    return {s["address"] for o in others
            for s in (o.get("status") or {}).get("servers") or [] if s.get("address")}
