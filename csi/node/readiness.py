"""Is this node able to mount Lustre? Checked at start and until it is, then reported.

Two facts make a Lustre client: the kernel modules are loaded (`lctl get_param -n version`
answers) and LNet has a network (`lctl list_nids` lists a NID other than the loopback one).
Until both hold, the node plugin's Probe says not ready, the log says what is missing, and,
with --report-node-condition, the Node carries condition LustreClientReady=False, so
`kubectl describe node` shows why volumes cannot mount there.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from csi.errors import DriverError
from csi.host.command import CommandRunner

log = logging.getLogger(__name__)
CONDITION_TYPE = "LustreClientReady"


@dataclass(frozen=True)
class ClientReadiness:
    ready: bool
    reason: str  # CamelCase, for the node condition
    message: str


def check_client(runner: CommandRunner, *, require_network: bool) -> ClientReadiness:
    try:
        version = runner.run(["lctl", "get_param", "-n", "version"], timeout=10)
        nids = runner.run(["lctl", "list_nids"], timeout=10)
    except DriverError as exc:  # lctl itself missing or hanging
        return ClientReadiness(
            False,
            "ToolsMissing",
            f"the Lustre client tools are not usable ({exc}); install lustre-client-utils",
        )
    if version.returncode != 0:
        return ClientReadiness(
            False,
            "ModulesNotLoaded",
            "the Lustre client modules are not loaded (lctl get_param version failed: "
            f"{(version.stderr or version.stdout).strip()[:200]}); install the lustre-client "
            "modules matching this kernel and run `modprobe lustre`",
        )
    listed = [line.strip() for line in nids.stdout.splitlines() if line.strip()]
    usable = [nid for nid in listed if not nid.endswith("@lo")] if require_network else listed
    if nids.returncode != 0 or not usable:
        return ClientReadiness(
            False,
            "LNetNotConfigured",
            f"LNet has no network (lctl list_nids: {', '.join(listed) or 'nothing'}); "
            "configure one, e.g. `lnetctl lnet configure && lnetctl net add --net tcp0 --if eth0`",
        )
    first_line = version.stdout.strip().splitlines()[0] if version.stdout.strip() else "?"
    return ClientReadiness(True, "ClientReady", f"{first_line}; NIDs {', '.join(usable)}")


class ClientReadinessWatch:
    """Checks until the client is ready, then sets `ready`; reports each change once.

    A report that fails (the API server away, a refused patch) is made again at the next
    check, and the checks go on until the ready state has been reported: the startup taint
    (taint.py) must not stay on a ready node because one call failed.
    """

    def __init__(
        self,
        check: Callable[[], ClientReadiness],
        ready: threading.Event,
        report: Callable[[ClientReadiness], None] | None = None,
        interval_seconds: float = 10.0,
    ) -> None:
        self._check = check
        self._ready = ready
        self._report = report
        self._interval = interval_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="client-readiness", daemon=True)
        self.last: ClientReadiness | None = None
        self._reported = report is None  # the last state reached the API server

    def start(self) -> None:
        """Check once now (so a ready node probes ready at once), then keep checking if not."""
        if not self._step():
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            if self._step():
                return

    def _step(self) -> bool:
        """One check; reports a change (or a failed report again); True once ready and told."""
        state = self._check()
        if state != self.last:
            level = logging.INFO if state.ready else logging.WARNING
            log.log(
                level,
                "Lustre client %s: %s",
                "ready" if state.ready else "NOT ready",
                state.message,
            )
            self._reported = self._report is None
        if not self._reported and self._report is not None:
            try:
                self._report(state)
                self._reported = True
            except Exception:
                log.exception("could not report the Lustre client condition; will retry")
        self.last = state
        if state.ready:
            self._ready.set()
        return state.ready and self._reported


def node_condition_patch(state: ClientReadiness) -> dict:
    """A status patch that sets the LustreClientReady condition (merged by type)."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "status": {
            "conditions": [
                {
                    "type": CONDITION_TYPE,
                    "status": "True" if state.ready else "False",
                    "reason": state.reason,
                    "message": state.message,
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                }
            ]
        }
    }
