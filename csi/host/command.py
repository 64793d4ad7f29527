"""Running host commands: the one door through which the driver touches mount(8), lfs and lctl.

Commands are argv lists, never a shell string. The real runner is `SubprocessRunner`; the
embedded default swaps in a stand-in for the Lustre tools
(`provisioner.local_lustre.LocalLustreCommands`) that answers in Lustre's documented output
formats, so the same parsing code runs either way.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from csi.errors import ExternalCommandFailed

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def check(self) -> CommandResult:
        """Raise ExternalCommandFailed unless the command exited 0."""
        if self.returncode != 0:
            raise ExternalCommandFailed(
                f"{' '.join(self.argv)} exited {self.returncode}: "
                f"{(self.stderr or self.stdout).strip()[:500]}"
            )
        return self


class CommandRunner(Protocol):
    def run(self, argv: Sequence[str], *, timeout: float = DEFAULT_TIMEOUT_S) -> CommandResult:
        """Run argv to completion and return what it printed; never raises for a non-zero exit."""
        ...


class SubprocessRunner:
    """Runs real programs with subprocess, no shell, bounded by a timeout."""

    def run(self, argv: Sequence[str], *, timeout: float = DEFAULT_TIMEOUT_S) -> CommandResult:
        args = tuple(argv)
        started = time.monotonic()
        try:
            done = subprocess.run(
                args, capture_output=True, text=True, timeout=timeout, check=False
            )
        except FileNotFoundError as exc:
            raise ExternalCommandFailed(f"{args[0]} is not installed: {exc}") from exc
        except subprocess.TimeoutExpired as exc:
            raise ExternalCommandFailed(
                f"{' '.join(args)} did not finish within {timeout:.0f}s"
            ) from exc
        log.debug(
            "ran %s -> %d in %.1f ms", args, done.returncode, (time.monotonic() - started) * 1e3
        )
        return CommandResult(args, done.returncode, done.stdout, done.stderr)
