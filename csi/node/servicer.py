"""CSI Node service: stage (Lustre mount), publish (bind mount), stats, and their undo.

Stateless: what to mount comes from volume_context (fsname, mgsNids, subdir), what is mounted
from the kernel's mount table. Every call is idempotent, and a stale mount (ESTALE, ENOTCONN,
its directory gone) found at a path is unmounted and made again rather than reported as
success; one that answers EIO/EHOSTDOWN or nothing (eviction, recovery, a hung server) is left
alone and the call answers UNAVAILABLE.

Isolation: only kubelet's CSI paths are served, held open without following symlinks or
crossing other mounts (csi/node/paths.py); only Lustre mounts and binds of them are ever unmounted;
a publish binds only the volume volume_context names; every mount is nosuid,nodev.

This module translates requests into steps and answers; what is mounted where and the checks
after each mount and bind are csi.node.volume_mounts'.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import AbstractContextManager as ContextManager
from contextlib import nullcontext
from typing import Any

from csi.capabilities import check_capability, is_readonly_mode
from csi.controller.records import VOLUMES_DIR
from csi.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from csi.host.bounded import BoundedCalls, CallTimedOut
from csi.host.mount_table import MountTable
from csi.host.mounts import BIND_DEFAULT_OPTIONS, HostMounts, MountHealth, MountProbe, OsMountProbe
from csi.inflight import InFlightKeys
from csi.lustre.client import LustreClient
from csi.lustre.layout import LayoutParameters, parse_layout
from csi.lustre.mount_options import merge_mount_options
from csi.lustre.recognizers import LustreMountRecognizer
from csi.node.paths import HeldPath, PathPolicy, fd_path
from csi.node.stats import VolumeStatsReader
from csi.node.volume_mounts import VolumeMounts, opened, same_tree, visible_flags
from csi.rpc import csi_pb2, csi_pb2_grpc
from csi.volume_id import check_volume_id_field

log = logging.getLogger(__name__)
AccessMode = csi_pb2.VolumeCapability.AccessMode
NodeCapability = csi_pb2.NodeServiceCapability.RPC
NODE_CAPABILITIES = (
    NodeCapability.STAGE_UNSTAGE_VOLUME,
    NodeCapability.GET_VOLUME_STATS,
    NodeCapability.VOLUME_CONDITION,
    NodeCapability.EXPAND_VOLUME,
    NodeCapability.SINGLE_NODE_MULTI_WRITER,
)


# A healthy Lustre mount answers stat(2) in milliseconds; past this its server is taken as away.
NODE_STAT_TIMEOUT_S = 10.0
# The controller keeps its records (`.lustre-csi/`) and may keep driver-owned parents of volume
# directories next to them, all under names starting with this; none is ever a volume.
DRIVER_METADATA_PREFIX = ".lustre-csi"


def mount_source_from_context(context: Mapping[str, str]) -> str:
    """`<mgsNids>:/<fsname>[/<subdir>]` from a volume context (ours or a static PV's)."""
    missing = [key for key in ("fsname", "mgsNids") if not context.get(key)]
    if missing:
        raise InvalidArgument(
            f"volume_context is missing {', '.join(missing)}; a static PV needs "
            "volumeAttributes fsname and mgsNids (and optionally subdir)"
        )
    parts = [part for part in context.get("subdir", "").split("/") if part]
    if any(part in (".", "..") for part in parts):
        raise InvalidArgument(
            f"volume_context subdir {context['subdir']!r} must not hold '.' or '..' "
            "components; name the directory by its plain path below the file system's root"
        )
    subdir = "/".join(parts)
    if subdir.split("/", 1)[0].startswith(DRIVER_METADATA_PREFIX):
        raise InvalidArgument(
            f"volume_context subdir {subdir!r} is inside the driver's own metadata "
            f"({DRIVER_METADATA_PREFIX}*: volume records and project ids of every volume); "
            "a volume cannot be mounted from there"
        )
    if subdir == VOLUMES_DIR:
        raise InvalidArgument(
            f"volume_context subdir {subdir!r} is the parent of every volume the driver makes; "
            f"name one volume's directory ({VOLUMES_DIR}/<name>-<token>) instead"
        )
    return f"{context['mgsNids']}:/{context['fsname']}" + (f"/{subdir}" if subdir else "")


def static_volume_layout(context: Mapping[str, str]) -> LayoutParameters | None:
    """The layout a static PV's volumeAttributes ask for; None when none, or not static.

    A volume CreateVolume made carries `kind` in its context and got its layout from the
    controller, which ModifyVolume may have changed since: the keys in its context, fixed at
    creation, are never applied again. A static PV (an admin's handle and attributes) has no
    controller, so the node gives its directory the layout when it stages it. A bad key is
    InvalidArgument naming it, before anything is mounted."""
    if "kind" in context:
        return None
    layout = parse_layout(context)
    return None if layout.is_default else layout


class NodeServicer(csi_pb2_grpc.NodeServicer):
    def __init__(
        self,
        *,
        node_id: str,
        lustre: LustreClient,
        host: HostMounts,
        table: MountTable,
        recognizer: LustreMountRecognizer,
        paths: PathPolicy,
        stats: VolumeStatsReader,
        probe: MountProbe | None = None,
        bounded: BoundedCalls | None = None,
    ) -> None:
        self._node_id = node_id
        self._lustre = lustre
        self._host = host
        self._paths = paths
        self._stats = stats
        self._inflight = InFlightKeys()
        # stat(2) of a mount point asks its servers: bounded, so a hung one answers UNAVAILABLE
        # (or is detached, by an unpublish) instead of holding an RPC thread.
        self._mounts = VolumeMounts(
            host=host,
            table=table,
            recognizer=recognizer,
            paths=paths,
            probe=probe or OsMountProbe(),
            bounded=bounded or BoundedCalls(timeout_s=NODE_STAT_TIMEOUT_S),
        )

    # -- stage --------------------------------------------------------------------------------
    def NodeStageVolume(self, request, context):
        volume_id = check_volume_id_field(request.volume_id)
        staging = self._paths.staging_path(
            request.staging_target_path, "staging_target_path", volume_id
        )
        if not request.HasField("volume_capability"):
            raise InvalidArgument("volume_capability is required")
        options = check_capability(request.volume_capability, "volume_capability")
        source = mount_source_from_context(request.volume_context)
        layout = static_volume_layout(request.volume_context)
        # A volume staged for readers only is mounted read-only: no publish can write to it.
        readonly = is_readonly_mode(request.volume_capability)
        mount_options = merge_mount_options(options, readonly=readonly)
        field = "staging_target_path"
        with (
            self._inflight.claim(f"stage:{volume_id}", f"path:{staging}"),
            self._hold(staging, field, make_parents=True) as held,
        ):
            existing = self._mounts.healthy_mount_of_ours(
                held,
                field,
                lambda entry: self._mounts.is_lustre_source(entry, source),
            )
            if existing is not None:
                # The spec: staged already, but with an incompatible capability -> ALREADY_EXISTS.
                have, want = visible_flags(existing.options), visible_flags(mount_options)
                if have != want:
                    raise AlreadyExists(
                        f"volume {volume_id} is already staged at {staging} with "
                        f"{','.join(sorted(have))}; this request asks for "
                        f"{','.join(sorted(want))}: unstage it first"
                    )
                return csi_pb2.NodeStageVolumeResponse()
            held.make_dir()
            before = self._mounts.mark()
            with opened(held) as staging_fd:
                self._lustre.mount(source, fd_path(staging_fd), mount_options)
            self._mounts.check_stage(held, field, source, before)
            if layout is not None and readonly:
                log.info("static volume %s staged read-only: its layout is not applied (a "
                         "reader makes no files)", volume_id)
            elif layout is not None:
                self._give_static_layout(held, request.volume_context["fsname"], layout)
            log.info("staged %s (%s) at %s", volume_id, source, staging)
        return csi_pb2.NodeStageVolumeResponse()

    def NodeUnstageVolume(self, request, context):
        volume_id = check_volume_id_field(request.volume_id)
        staging = self._paths.staging_path(
            request.staging_target_path, "staging_target_path", volume_id
        )
        field = "staging_target_path"
        with (
            self._inflight.claim(f"stage:{volume_id}", f"path:{staging}"),
            self._hold(staging, field, make_parents=False) as held,
        ):
            if held is not None:  # None: its directories are gone, so nothing is mounted
                self._mounts.unmount_ours(held, field)
        return csi_pb2.NodeUnstageVolumeResponse()

    # -- publish ------------------------------------------------------------------------------
    def NodePublishVolume(self, request, context):
        volume_id = check_volume_id_field(request.volume_id)
        target = self._paths.target_path(request.target_path, "target_path")
        staging = self._paths.staging_path(
            request.staging_target_path, "staging_target_path", volume_id
        )
        if not request.HasField("volume_capability"):
            raise InvalidArgument("volume_capability is required")
        check_capability(request.volume_capability, "volume_capability")
        readonly = request.readonly or is_readonly_mode(request.volume_capability)
        source = mount_source_from_context(request.volume_context)
        # Shared on the staging path: publishes of one volume run side by side, but never
        # beside an unstage (or a stage) of it, which would pull the mount from under the bind.
        with (
            self._inflight.claim(f"path:{target}", shared=(f"path:{staging}",)),
            self._hold(staging, "staging_target_path", make_parents=False) as staged_held,
            self._hold(target, "target_path", make_parents=True) as held,
        ):
            staged = self._mounts.staged_mount_of(volume_id, staging, source, staged_held)
            if staged.readonly and not readonly:
                raise FailedPrecondition(
                    f"volume {volume_id} is staged read-only at {staging}; it cannot be "
                    "published read-write"
                )
            top = self._mounts.healthy_mount_of_ours(
                held, "target_path", lambda entry: same_tree(entry, staged)
            )
            if top is not None:
                if top.readonly != readonly:
                    raise _already_published(target, top.readonly)
                return csi_pb2.NodePublishVolumeResponse()
            if request.volume_capability.access_mode.mode == AccessMode.SINGLE_NODE_SINGLE_WRITER:
                elsewhere = self._mounts.published_elsewhere(staged, staging, target)
                if elsewhere:
                    raise FailedPrecondition(
                        f"volume {volume_id} has access mode SINGLE_NODE_SINGLE_WRITER and is "
                        f"already published at {elsewhere}"
                    )
            held.make_dir()
            # The staged mount's own restrictions go with the bind (a remount sets them all).
            flags = [*BIND_DEFAULT_OPTIONS, *(f for f in ("noexec",) if f in staged.options)]
            before = self._mounts.mark()
            # Onto the held target directory itself; `held.at` (by name in the held parent)
            # leads into the new bind, for a kernel that needs a remount to set its flags.
            with opened(staged_held) as staging_fd, opened(held) as target_fd:
                self._host.bind(
                    fd_path(staging_fd),
                    fd_path(target_fd),
                    readonly=readonly,
                    options=flags,
                    mounted_at=held.at,
                )
            self._mounts.check_bind(held, staged, readonly, before)
            log.info("published %s at %s%s", volume_id, target, " (ro)" if readonly else "")
        return csi_pb2.NodePublishVolumeResponse()

    def NodeUnpublishVolume(self, request, context):
        check_volume_id_field(request.volume_id)
        target = self._paths.target_path(request.target_path, "target_path")
        with (
            self._inflight.claim(f"path:{target}"),
            self._hold(target, "target_path", make_parents=False) as held,
        ):
            if held is None:  # its directories are gone: nothing is mounted or left to remove
                return csi_pb2.NodeUnpublishVolumeResponse()
            self._mounts.unmount_ours(held, "target_path")
            try:
                if held.exists():
                    held.remove_dir()
            except OSError as exc:
                raise FailedPrecondition(
                    f"target_path {target} could not be removed after unmount: {exc.strerror}"
                ) from exc
        return csi_pb2.NodeUnpublishVolumeResponse()

    # -- stats and expansion ------------------------------------------------------------------
    def NodeGetVolumeStats(self, request, context):
        check_volume_id_field(request.volume_id)
        path = self._existing_volume_path(request.volume_path)
        top = self._mounts.top_mount(path)
        if top is None:
            return _abnormal(f"{path} is not mounted")
        health, reason = self._mounts.health(top)
        if health is not MountHealth.HEALTHY:
            # Reported, never repaired here: an evicted or recovering client comes back by
            # itself, and a stale one is repaired by the next stage or publish.
            return _abnormal(f"the mount at {path} is {health.value} ({reason})")
        away = self._stats.targets_away(path)
        if away:
            listed = ", ".join(f"{target} ({state})" for target, state in away.items())
            return _abnormal(
                f"the mount at {path} does not reach {listed}: the server is away or the "
                "client is recovering with it; I/O to it waits until it is back"
            )
        try:
            stats = self._stats.read(path, key=top.device)
        except (OSError, CallTimedOut) as exc:
            return _abnormal(f"the mount at {path} does not answer statfs ({exc})")
        Unit = csi_pb2.VolumeUsage.Unit
        return csi_pb2.NodeGetVolumeStatsResponse(
            usage=[
                csi_pb2.VolumeUsage(
                    unit=Unit.BYTES,
                    total=stats.total_bytes,
                    used=stats.used_bytes,
                    available=stats.available_bytes,
                ),
                csi_pb2.VolumeUsage(
                    unit=Unit.INODES,
                    total=stats.total_inodes,
                    used=stats.used_inodes,
                    available=stats.available_inodes,
                ),
            ],
            volume_condition=csi_pb2.VolumeCondition(abnormal=False, message="mounted"),
        )

    def NodeExpandVolume(self, request, context):
        check_volume_id_field(request.volume_id)
        path = self._existing_volume_path(request.volume_path)
        if request.HasField("volume_capability"):
            check_capability(request.volume_capability, "volume_capability")
        if self._mounts.top_mount(path) is None:
            raise FailedPrecondition(f"volume_path {path} is not mounted")
        # The controller already raised the project quota; a Lustre mount needs no resize.
        return csi_pb2.NodeExpandVolumeResponse(
            capacity_bytes=max(
                request.capacity_range.required_bytes, request.capacity_range.limit_bytes
            )
        )

    def NodeGetCapabilities(self, request, context):
        return csi_pb2.NodeGetCapabilitiesResponse(
            capabilities=[
                csi_pb2.NodeServiceCapability(rpc=NodeCapability(type=capability))
                for capability in NODE_CAPABILITIES
            ]
        )

    def NodeGetInfo(self, request, context):
        return csi_pb2.NodeGetInfoResponse(node_id=self._node_id)

    # -- helpers ------------------------------------------------------------------------------
    def _existing_volume_path(self, volume_path: str) -> str:
        """A staging or target path that is there; NotFound for anything else.

        The path check comes first and looks at the spelling only, so a path outside
        kubelet's CSI layouts answers the same whether or not it exists on the host: these
        calls cannot be used to probe for files. (The spec's code for "no volume at this
        path" is NOT_FOUND, which csi-sanity checks with a relative path.)
        """
        if not volume_path:
            raise InvalidArgument("volume_path is required")
        try:
            path = self._paths.volume_path(volume_path, "volume_path")
            held = self._paths.hold(path, "volume_path", make_parents=False)
        except InvalidArgument as exc:
            raise NotFound(f"no volume of this driver at volume_path: {exc}") from exc
        if held is None:
            raise NotFound(f"volume_path {path} does not exist")
        with held:
            # The mount table first: lstat of a mount point would ask a possibly hung server.
            if self._mounts.top_mount(path) is None and not held.exists():
                raise NotFound(f"volume_path {path} does not exist")
        return path

    def _give_static_layout(self, held: HeldPath, fsname: str, layout: LayoutParameters) -> None:
        """Make `layout` the default layout of the static volume just mounted at `held`.

        A layout the file system cannot give (a pool it lacks, more stripes than OSTs) undoes
        the mount, so the next NodeStage checks again rather than finding a finished stage."""
        try:
            # Through the held parent, as the mount was made: the name cannot be swapped.
            self._lustre.check_layout(held.at, fsname, layout)
            self._lustre.set_default_layout(held.at, layout)
        except BaseException:
            self._host.unmount(held.at, lazy=True, nofollow=True)
            raise
        log.info("static volume at %s: default layout %s", held.path, layout.to_attributes())

    def _hold(self, path: str, field: str, *, make_parents: bool) -> ContextManager[Any]:
        held = self._paths.hold(path, field, make_parents=make_parents)
        return held if held is not None else nullcontext()


def _abnormal(message: str) -> csi_pb2.NodeGetVolumeStatsResponse:
    return csi_pb2.NodeGetVolumeStatsResponse(
        volume_condition=csi_pb2.VolumeCondition(abnormal=True, message=message)
    )


def _already_published(target: str, readonly: bool) -> AlreadyExists:
    mode = "read-only" if readonly else "read-write"
    return AlreadyExists(
        f"volume is already published at {target} {mode}; unpublish it before changing mode"
    )
