"""Whether this client reaches every target of a mounted file system: its import states.

A Lustre client keeps one import (connection) per MDT and OST. When a server dies, stat(2) of
cached directories and statfs(2) with `lazystatfs` still answer, so a mount can look healthy
while every write to the dead OST blocks; the import's state says it at once. The state is
what `lctl get_param mdc.*.state osc.*.state` prints (lprocfs_state_seq_show):

    osc.real-OST0000-osc-ffff8e2c41b6d800.state=
    current_state: FULL
    state_history:
     - [ 1764640000, CONNECTING ]
     - [ 1764640000, FULL ]

`FULL` is connected; `IDLE` is an OSC that disconnected itself after `idle_timeout` without
I/O and reconnects on the next request; anything else (DISCONN, CONNECTING, REPLAY*,
RECOVER, EVICTED, CLOSED, NEW) means the target is away or the client is recovering with it.
The mount's instance (`lfs getname -i <path>`) names the imports of that one mount.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from csi.host.command import CommandRunner
from csi.lustre.parsers import numbered_lines, output_error

CONNECTED_STATES = frozenset({"FULL", "IDLE"})
_INSTANCE = re.compile(r"[0-9a-f]{1,16}")
_PARAM = re.compile(r"^(?:mdc|osc)\.(?P<target>[A-Za-z0-9_-]+-(?:MDT|OST)[0-9a-f]{4})-"
                    r"(?:mdc|osc)-(?P<instance>[0-9a-f]+)\.state=$")
_CURRENT = re.compile(r"^current_state: (?P<state>[A-Z_<>]+)$")
STATE_TIMEOUT_S = 10.0


def build_instance_argv(path: str) -> list[str]:
    return ["lfs", "getname", "-i", path]


def build_states_argv(instance: str) -> list[str]:
    return ["lctl", "get_param", f"mdc.*-mdc-{instance}.state", f"osc.*-osc-{instance}.state"]


def parse_instance(text: str) -> str:
    instance = text.strip()
    if not _INSTANCE.fullmatch(instance):
        raise output_error("lfs getname -i", 1, instance, "is not a client instance")
    return instance


def parse_import_states(text: str) -> dict[str, str]:
    """target (e.g. `real-OST0000`) -> its import's current state."""
    states: dict[str, str] = {}
    target = ""
    for number, line in numbered_lines(text):
        if match := _PARAM.match(line):
            target = match["target"]
        elif match := _CURRENT.match(line):
            if not target:
                raise output_error("lctl get_param state", number, line, "names no target")
            states[target] = match["state"]
            target = ""
    return states


@dataclass(frozen=True)
class TargetStates:
    """The import states of one mount, and the targets it does not reach now."""

    states: dict[str, str]

    @property
    def away(self) -> dict[str, str]:
        return {t: s for t, s in sorted(self.states.items()) if s not in CONNECTED_STATES}


class TargetConnections:
    """Reads the import states of the mount at a path with `lfs` and `lctl`."""

    def __init__(self, runner: CommandRunner, timeout: float = STATE_TIMEOUT_S) -> None:
        self._runner = runner
        self._timeout = timeout

    def of_mount(self, path: str | os.PathLike[str]) -> TargetStates:
        """DriverError when the tools do not answer (e.g. not a Lustre client)."""
        found = self._runner.run(build_instance_argv(os.fspath(path)), timeout=self._timeout)
        instance = parse_instance(found.check().stdout)
        states = self._runner.run(build_states_argv(instance), timeout=self._timeout)
        return TargetStates(parse_import_states(states.check().stdout))
