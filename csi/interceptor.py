"""One place where domain errors become gRPC status codes, and every call is logged.

Each RPC is logged with its method, duration and status code; at DEBUG level the request too,
with every field the CSI spec marks `csi_secret` replaced, so secrets never reach a log.

It also keeps the server answerable under load: each capped service (Controller, Node) may
occupy at most its budget of the server's worker threads at once; past that its calls answer
UNAVAILABLE at once (kubelet and the sidecars retry). Identity is never capped, so Probe,
which the liveness probe calls, always finds a free thread even when every volume call hangs
on a dead server; and with separate budgets, controller calls stuck on a dead file system
cannot take the threads kubelet's NodeUnpublish needs (or the other way round).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grpc
from google.protobuf import text_format
from google.protobuf.message import Message

from csi.errors import DriverError, InProgress
from csi.metrics import RpcMetrics
from csi.rpc import csi_pb2

log = logging.getLogger("csi.rpc")
STRIPPED = "***stripped***"


def sanitized(message: Message) -> str:
    """The message as one line of text with secret fields replaced."""
    copy = type(message)()
    copy.CopyFrom(message)
    _strip_secrets(copy)
    return text_format.MessageToString(copy, as_one_line=True)


def _strip_secrets(message: Message) -> None:
    for descriptor, value in message.ListFields():
        if descriptor.GetOptions().Extensions[csi_pb2.csi_secret]:
            if (
                descriptor.message_type is not None
                and descriptor.message_type.GetOptions().map_entry
            ):
                for key in list(value):
                    value[key] = STRIPPED
            else:
                message.ClearField(descriptor.name)
        elif descriptor.message_type is not None:
            if descriptor.message_type.GetOptions().map_entry:
                continue
            if descriptor.is_repeated:
                for item in value:
                    _strip_secrets(item)
            else:
                _strip_secrets(value)


class ServerBusy(InProgress):
    """Every thread the service may use is taken; retry shortly."""


def thread_budgets(workers: int, services: Sequence[str]) -> dict[str, int]:
    """Split all but two of `workers` threads between the capped services (two stay free for
    Identity); each service gets at least one."""
    usable = max(len(services), workers - 2)
    share, extra = divmod(usable, max(1, len(services)))
    return {s: share + (1 if i < extra else 0) for i, s in enumerate(services)}


class ErrorMappingInterceptor(grpc.ServerInterceptor):
    def __init__(
        self, metrics: RpcMetrics | None = None, *, budgets: Mapping[str, int] | None = None
    ) -> None:
        """`budgets`: threads each service may hold, by short name ("Controller", "Node");
        services not named are not capped."""
        self._metrics = metrics
        self._budgets = {
            service: threading.BoundedSemaphore(limit) for service, limit in (budgets or {}).items()
        }

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        service, _, method = handler_call_details.method.rpartition("/")
        behaviour = handler.unary_unary
        metrics = self._metrics
        busy = self._budgets.get(service.rsplit(".", 1)[-1])

        def mapped(request: Any, context: grpc.ServicerContext) -> Any:
            started = time.monotonic()
            code = grpc.StatusCode.OK
            message = ""
            if log.isEnabledFor(logging.DEBUG):
                _log_request(method, request)
            try:
                if busy is None:
                    return behaviour(request, context)
                if not busy.acquire(blocking=False):
                    raise ServerBusy(
                        f"{method}: every worker this service may use is busy; retry shortly"
                    )
                try:
                    return behaviour(request, context)
                finally:
                    busy.release()
            except DriverError as exc:
                code, message = exc.code, str(exc)
            except Exception as exc:
                log.exception("%s failed unexpectedly", method)
                code, message = grpc.StatusCode.INTERNAL, f"internal error: {exc}"
            finally:
                elapsed = time.monotonic() - started
                level = logging.INFO if code in _EXPECTED else logging.WARNING
                if code == grpc.StatusCode.OK and method in _FREQUENT:
                    level = logging.DEBUG  # liveness probes every few seconds would drown the log
                log.log(
                    level,
                    "%s -> %s in %.1f ms%s",
                    method,
                    code.name,
                    elapsed * 1e3,
                    f": {message}" if message else "",
                )
                if metrics is not None:
                    metrics.observe(method, code.name, elapsed)
            context.abort(code, message)

        return grpc.unary_unary_rpc_method_handler(
            mapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _log_request(method: str, request: Message) -> None:
    """Log a request with its secrets stripped; a logging failure never fails the call."""
    try:
        log.debug("%s request: %s", method, sanitized(request))
    except Exception as exc:
        log.warning("%s request not logged: %s", method, exc)


# Read-only calls the sidecars and kubelet make all the time.
_FREQUENT = {
    "Probe",
    "GetPluginInfo",
    "GetPluginCapabilities",
    "ControllerGetCapabilities",
    "NodeGetCapabilities",
    "NodeGetInfo",
}
# Codes that are part of normal operation (idempotent retries, probes of missing volumes).
_EXPECTED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.INVALID_ARGUMENT,
}
