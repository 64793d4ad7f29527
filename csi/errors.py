"""Typed domain errors.

Every layer below the gRPC servicers raises one of these; a single interceptor
(`csi.interceptor`) turns them into gRPC status codes. Nothing else in the code
base chooses a status code, so the mapping can be read in one place.
"""

from __future__ import annotations

import threading

import grpc


class DriverError(Exception):
    """Base class: a failure with a message meant for the person who made the request."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL


class InvalidArgument(DriverError):
    """The request is malformed: the message says which field and what to fix."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(DriverError):
    """The volume, file system or path named in the request does not exist."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(DriverError):
    """The name is taken by a volume that is incompatible with the request."""

    code = grpc.StatusCode.ALREADY_EXISTS


class OperationInFlight(DriverError):
    """Another request for the same volume (or volume + path) is still running."""

    code = grpc.StatusCode.ABORTED


class InvalidPageToken(DriverError):
    """A ListVolumes starting_token this driver did not hand out (the spec asks for ABORTED)."""

    code = grpc.StatusCode.ABORTED


class InProgress(DriverError):
    """Work was started (a file system booting, OSTs being added); retry the same request later.

    The external-provisioner treats UNAVAILABLE as "not final" and retries with backoff, so
    CreateVolume never has to block past the sidecar's timeout.
    """

    code = grpc.StatusCode.UNAVAILABLE


class TeardownStarted(InProgress):
    """A dedicated file system, confirmed to be the volume's, is being torn down; retry.

    Its own type because the controller lets go of its mount of the file system on this
    answer alone (while the servers still answer), never on a plain InProgress, which an API
    server that is away can give before anything was checked.
    """


class CallHung(InProgress):
    """A call into a file system did not answer in time and may still take effect.

    `returned` is set once the call returns (None: it was refused before it started, so it
    never will take effect). Until then, a retry of the request that made it must not run
    beside it: its late write could undo the retry's (csi.inflight holds the request's keys).
    """

    def __init__(self, message: str, returned: threading.Event | None = None) -> None:
        super().__init__(message)
        self.returned = returned

    @property
    def still_running(self) -> bool:
        return self.returned is not None and not self.returned.is_set()


class CapacityExhausted(DriverError):
    """The request cannot fit even at the file system's maximum size / OST count."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(DriverError):
    """The system is not in a state where the request can run (e.g. path mounted elsewhere)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class ExternalCommandFailed(DriverError):
    """A mount / lfs / lctl command failed; the message carries its argv and stderr."""

    code = grpc.StatusCode.INTERNAL
