"""A hung file-system call must not hold an RPC thread past its deadline."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

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
    # It says the call may still take effect, and when it no longer can.
    returned = raised.value.returned
    assert returned is not None and raised.value.still_running
    release.set()
    assert returned.wait(5) and not raised.value.still_running


def test_a_call_refused_at_once_says_it_never_started() -> None:
    release = threading.Event()
    calls = BoundedCalls(timeout_s=0.01, max_stuck=1)
    with pytest.raises(CallTimedOut):
        calls.run("stat", release.wait)
    with pytest.raises(CallTimedOut, match="too many") as refused:
        calls.run("stat", lambda: 1)
    assert refused.value.returned is None and not refused.value.still_running
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


def _hang_until(release: threading.Event) -> Callable[[], None]:
    return lambda: release.wait(30) and None


def test_calls_hung_on_one_dead_file_system_leave_calls_to_other_mounts_working() -> None:
    release = threading.Event()
    calls = BoundedCalls(timeout_s=0.01)  # a deadline, not an assertion: keeps the test short
    try:
        # Ten stats on a dead mount: each answers retryable, and past its own cap the dead
        # one's calls are refused at once instead of piling up threads.
        for _ in range(10):
            with pytest.raises(CallTimedOut) as dead:
                calls.run("stat /dead", _hang_until(release), key="0:51")
            assert isinstance(dead.value, InProgress)
        assert "same file system" in str(dead.value)
        # Every other mount still answers: stage, publish, stats of healthy volumes go on.
        # (Their deadline is a loaded machine's, not the 10 ms that keeps the hung ones short:
        # a thread hand-off alone can take that long when the cores are busy.)
        for device in ("0:52", "0:53"):
            for _ in range(10):
                assert calls.run("stat /healthy", lambda: "ok", key=device, timeout_s=30) == "ok"
        assert calls.run("statvfs /unkeyed", lambda: "ok", timeout_s=30) == "ok"
    finally:
        release.set()


def test_more_concurrent_slow_healthy_calls_than_any_cap_all_succeed() -> None:
    # Twelve calls that can only finish once all twelve are running at the same time: none
    # may be refused for the others merely being in flight.
    calls = BoundedCalls(timeout_s=60)
    together = threading.Barrier(12, timeout=60)
    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(
            pool.map(
                lambda i: calls.run(f"stat /mnt/{i}", lambda: together.wait() >= 0, key="0:60"),
                range(12),
            )
        )
    assert results == [True] * 12
    assert calls.stuck() == 0


def test_a_call_whose_thread_cannot_start_gives_its_slot_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = BoundedCalls(timeout_s=5, max_stuck=2)

    def no_thread(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    with monkeypatch.context() as patched:
        patched.setattr(threading.Thread, "start", no_thread)
        for _ in range(3):
            with pytest.raises(CallTimedOut, match="could not start a thread"):
                calls.run("stat /mnt/lustre", lambda: 1)
    # Threads can be had again: nothing was left counted against the cap.
    assert calls.run("stat /mnt/lustre", lambda: 1) == 1
    assert calls.stuck() == 0
