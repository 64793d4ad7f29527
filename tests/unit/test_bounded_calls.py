"""A hung file-system call must not hold an RPC thread past its deadline."""

from __future__ import annotations

import threading

import pytest

from csi.errors import InProgress
from csi.host.bounded import BoundedCalls, CallTimedOut


def test_result_and_errors_of_a_quick_call_pass_through() -> None:
    calls = BoundedCalls(timeout_s=5)
    assert calls.run("add", lambda: 2 + 2) == 4
    with pytest.raises(FileNotFoundError):
        calls.run("stat", lambda: open("/nonexistent/x"))  # noqa: SIM115


def test_a_hung_call_answers_retryable_at_the_deadline_and_leaves_the_caller_free() -> None:
    release = threading.Event()
    calls = BoundedCalls(timeout_s=0.05)
    with pytest.raises(CallTimedOut, match=r"did not answer within 0\.05 s") as raised:
        calls.run("stat /mnt/lustre", release.wait)
    assert isinstance(raised.value, InProgress)  # UNAVAILABLE: the CO retries
    release.set()


def test_stuck_calls_are_capped_and_slots_come_back_when_they_finish() -> None:
    release = threading.Event()
    calls = BoundedCalls(timeout_s=0.01, max_stuck=2)
    for _ in range(2):
        with pytest.raises(CallTimedOut):
            calls.run("stat", release.wait)
    with pytest.raises(CallTimedOut, match="too many earlier file-system calls"):
        calls.run("stat", lambda: 1)
    release.set()
    for _ in range(100):
        try:
            assert calls.run("stat", lambda: 1, timeout_s=1) == 1
            break
        except CallTimedOut:
            threading.Event().wait(0.01)
    else:
        pytest.fail("slots of finished calls were never given back")
