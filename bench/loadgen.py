"""A multi-process CSI load generator: N concurrent clients, each on its own gRPC channel.

Clients are spread over up to `MAX_PROCESSES` worker processes (threads inside each), so the
generator's own GIL is not what limits a run; `bench.run` proves it keeps up by driving a
trivial Identity Probe through the same code, against both drivers, far faster than any rate
it reports for real operations.

Every call's outcome is checked: a non-OK status, or a response that lacks what the operation
must return (a volume id, a full page), is recorded as an error with its message, and the
suite fails loudly when any phase has one. UNAVAILABLE is the one answer retried, as every CO
retries it (lustre-csi sheds calls past its thread budget with it): after a short backoff,
until the call's deadline; the latency runs from the first attempt to the answer, and each
retry is counted per method.

Workers start together: each connects its channels and makes one warm-up Probe per channel
before the start signal, so connection set-up is never timed.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event as MpEvent
from typing import Any

MAX_PROCESSES = 4
# Backoff between attempts of a call answered UNAVAILABLE: short, so the figures measure the
# driver's capacity rather than a sidecar's 1 s first backoff.
RETRY_FIRST_S, RETRY_MAX_S = 0.005, 0.1
ACCESS_MODE_SINGLE_NODE_WRITER = 1  # csi.v1 VolumeCapability.AccessMode.SINGLE_NODE_WRITER


@dataclass(frozen=True)
class Call:
    """One unit of work for one client. `kind` is one of the ops below; `args` its inputs.

    - ("Probe", ())
    - ("CreateVolume", (name, size_bytes, ((key, value), ...)))
    - ("DeleteVolume", (volume_id,))
    - ("ListVolumes", (max_entries, min_entries))   min_entries: what a full page must hold
    - ("PublishCycle", (volume_id, staging, target, ((key, value), ...)))
      NodePublishVolume then NodeUnpublishVolume, timed separately.
    - ("StageCycle", (volume_id, staging, ((key, value), ...)))
      NodeStageVolume then NodeUnstageVolume, timed separately.
    - ("Stage", (volume_id, staging, context)), ("Publish", (volume_id, staging, target,
      context)), ("Unpublish", (volume_id, target)), ("Unstage", (volume_id, staging)):
      one call each (the mount-density run keeps what it mounted).
    """

    kind: str
    args: tuple[Any, ...] = ()


@dataclass
class PhaseResult:
    """Latencies (seconds) per RPC method, errors, and the wall-clock window of the phase."""

    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    retries: dict[str, int] = field(default_factory=dict)  # method -> UNAVAILABLE answers retried
    started: float = 0.0
    finished: float = 0.0
    created: dict[str, str] = field(default_factory=dict)  # volume name -> volume id
    # volume id -> the volume_context CreateVolume answered (what a node call needs)
    contexts: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def wall_seconds(self) -> float:
        return max(self.finished - self.started, 1e-9)

    def merge(self, other: PhaseResult) -> None:
        for method, values in other.latencies.items():
            self.latencies.setdefault(method, []).extend(values)
        self.errors.extend(other.errors)
        for method, count in other.retries.items():
            self.retries[method] = self.retries.get(method, 0) + count
        self.created.update(other.created)
        self.contexts.update(other.contexts)
        self.started = min(self.started, other.started) if self.started else other.started
        self.finished = max(self.finished, other.finished)


def _capability(pb: Any) -> Any:
    return pb.VolumeCapability(
        mount=pb.VolumeCapability.MountVolume(),
        access_mode=pb.VolumeCapability.AccessMode(mode=ACCESS_MODE_SINGLE_NODE_WRITER),
    )


class _Client:
    """One concurrent client: its own channel and stubs; runs its calls one after another."""

    def __init__(self, endpoint: str, timeout: float) -> None:
        import grpc

        from csi.rpc import csi_pb2, csi_pb2_grpc

        self.pb = csi_pb2
        self.grpc = grpc
        # A channel per client (no subchannel sharing), as separate sidecars/kubelets would be.
        self.channel = grpc.insecure_channel(
            endpoint, options=[("grpc.use_local_subchannel_pool", 1)])
        self.identity = csi_pb2_grpc.IdentityStub(self.channel)
        self.controller = csi_pb2_grpc.ControllerStub(self.channel)
        self.node = csi_pb2_grpc.NodeStub(self.channel)
        self.timeout = timeout
        self.capability = _capability(csi_pb2)

    def warm_up(self) -> None:
        self.identity.Probe(self.pb.ProbeRequest(), timeout=self.timeout, wait_for_ready=True)

    def run(self, calls: Sequence[Call], result: PhaseResult) -> None:
        for call in calls:
            try:
                getattr(self, f"_do_{call.kind}")(result, *call.args)
            except self.grpc.RpcError as error:
                result.errors.append(f"{call.kind} {call.args[:1]}: {error.code().name}: "
                                     f"{error.details()}")
            except _BadAnswer as error:
                result.errors.append(f"{call.kind} {call.args[:1]}: {error}")

    def _timed(self, result: PhaseResult, method: str, function: Any, request: Any) -> Any:
        started = time.perf_counter()
        backoff = RETRY_FIRST_S
        while True:
            try:
                response = function(request, timeout=self.timeout)
                break
            except self.grpc.RpcError as error:
                late = time.perf_counter() - started + backoff > self.timeout
                if error.code() != self.grpc.StatusCode.UNAVAILABLE or late:
                    raise
            result.retries[method] = result.retries.get(method, 0) + 1
            time.sleep(backoff)
            backoff = min(2 * backoff, RETRY_MAX_S)
        result.latencies.setdefault(method, []).append(time.perf_counter() - started)
        return response

    def _do_Probe(self, result: PhaseResult) -> None:
        response = self._timed(result, "Probe", self.identity.Probe, self.pb.ProbeRequest())
        if response.HasField("ready") and not response.ready.value:
            raise _BadAnswer("Probe answered not ready")

    def _do_CreateVolume(self, result: PhaseResult, name: str, size: int,
                         parameters: tuple[tuple[str, str], ...]) -> None:
        request = self.pb.CreateVolumeRequest(
            name=name, capacity_range=self.pb.CapacityRange(required_bytes=size),
            volume_capabilities=[self.capability], parameters=dict(parameters))
        response = self._timed(result, "CreateVolume", self.controller.CreateVolume, request)
        if not response.volume.volume_id:
            raise _BadAnswer("CreateVolume returned no volume id")
        result.created[name] = response.volume.volume_id
        result.contexts[response.volume.volume_id] = dict(response.volume.volume_context)

    def _do_DeleteVolume(self, result: PhaseResult, volume_id: str) -> None:
        request = self.pb.DeleteVolumeRequest(volume_id=volume_id)
        self._timed(result, "DeleteVolume", self.controller.DeleteVolume, request)

    def _do_ListVolumes(self, result: PhaseResult, max_entries: int, min_entries: int) -> None:
        request = self.pb.ListVolumesRequest(max_entries=max_entries)
        response = self._timed(result, "ListVolumes", self.controller.ListVolumes, request)
        if len(response.entries) < min_entries:
            raise _BadAnswer(f"ListVolumes returned {len(response.entries)} entries, "
                             f"expected at least {min_entries}")

    def _do_PublishCycle(self, result: PhaseResult, volume_id: str, staging: str, target: str,
                         context: tuple[tuple[str, str], ...]) -> None:
        self._do_Publish(result, volume_id, staging, target, context)
        self._do_Unpublish(result, volume_id, target)


    def _do_StageCycle(self, result: PhaseResult, volume_id: str, staging: str,
                       context: tuple[tuple[str, str], ...]) -> None:
        self._do_Stage(result, volume_id, staging, context)
        self._do_Unstage(result, volume_id, staging)

    def _do_Stage(self, result: PhaseResult, volume_id: str, staging: str,
                  context: tuple[tuple[str, str], ...]) -> None:
        stage = self.pb.NodeStageVolumeRequest(
            volume_id=volume_id, staging_target_path=staging,
            volume_capability=self.capability, volume_context=dict(context))
        self._timed(result, "NodeStageVolume", self.node.NodeStageVolume, stage)

    def _do_Unstage(self, result: PhaseResult, volume_id: str, staging: str) -> None:
        unstage = self.pb.NodeUnstageVolumeRequest(volume_id=volume_id,
                                                   staging_target_path=staging)
        self._timed(result, "NodeUnstageVolume", self.node.NodeUnstageVolume, unstage)

    def _do_Publish(self, result: PhaseResult, volume_id: str, staging: str, target: str,
                    context: tuple[tuple[str, str], ...]) -> None:
        publish = self.pb.NodePublishVolumeRequest(
            volume_id=volume_id, staging_target_path=staging, target_path=target,
            volume_capability=self.capability, volume_context=dict(context))
        self._timed(result, "NodePublishVolume", self.node.NodePublishVolume, publish)

    def _do_Unpublish(self, result: PhaseResult, volume_id: str, target: str) -> None:
        unpublish = self.pb.NodeUnpublishVolumeRequest(volume_id=volume_id, target_path=target)
        self._timed(result, "NodeUnpublishVolume", self.node.NodeUnpublishVolume, unpublish)


class _BadAnswer(Exception):
    pass


def _worker(endpoint: str, per_client: list[list[Call]], timeout: float, ready: Any,
            go: MpEvent, out: Any) -> None:
    """One process: a thread per client, all released together by `go`."""
    clients = [_Client(endpoint, timeout) for _ in per_client]
    for client in clients:
        client.warm_up()
    results = [PhaseResult() for _ in per_client]
    threads = [threading.Thread(target=client.run, args=(calls, result))
               for client, calls, result in zip(clients, per_client, results, strict=True)]
    ready.put(os.getpid())
    go.wait()
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    merged = PhaseResult(started=started, finished=time.monotonic())
    for result in results:
        merged.merge(result)
    merged.started, merged.finished = started, merged.finished
    for client in clients:
        client.channel.close()
    out.put(merged)


def run_phase(endpoint: str, calls: Sequence[Call], clients: int,
              timeout: float = 60.0) -> PhaseResult:
    """Run `calls` spread round-robin over `clients` concurrent clients; wait for all."""
    if clients < 1:
        raise ValueError("clients must be at least 1")
    per_client: list[list[Call]] = [list(calls[c::clients]) for c in range(clients)]
    processes = min(clients, MAX_PROCESSES)
    groups = [per_client[p::processes] for p in range(processes)]
    context = mp.get_context("spawn")  # never fork a process that has gRPC threads
    ready, out = context.Queue(), context.Queue()
    go = context.Event()
    workers = [context.Process(target=_worker, args=(endpoint, group, timeout, ready, go, out),
                               daemon=True) for group in groups]
    for worker in workers:
        worker.start()
    for _ in workers:
        ready.get(timeout=120)
    go.set()
    total = PhaseResult()
    for _ in workers:
        total.merge(out.get(timeout=3600))
    for worker in workers:
        worker.join(30)
        if worker.exitcode != 0:
            total.errors.append(f"load generator process {worker.pid} exited {worker.exitcode}")
    return total
