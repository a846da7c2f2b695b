"""SIGTERM handled as Ctrl-C is: what SLURM, Kubernetes and `timeout` send to stop a job.

A run that gets SIGINT (Ctrl-C) raises KeyboardInterrupt where it is; its summary.json then
says `failed` (interrupted), its finished epochs are kept and the sweep prints how to go on.
`terminate_as_interrupt` makes SIGTERM raise `Terminated`, a KeyboardInterrupt, so that every
run, pack member and worker ends the same way. The process then exits with 143 (128 + SIGTERM),
as a process killed by SIGTERM does, so that a scheduler sees what it expects.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from pathlib import Path
from types import FrameType

EXIT_CODE = 128 + signal.SIGTERM
# What summary.json says of a run that SIGTERM stopped; a launcher that learns who sent it (a
# SLURM job cancelled, out of time) puts that in place of the words after the colon.
SIGTERM_REASON = "interrupted (SIGTERM: stopped by a scheduler, timeout or kill)"
SIGINT_REASON = "interrupted (KeyboardInterrupt: Ctrl-C or SIGINT)"


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: the process is being stopped from outside."""


def interrupt_reason(stop: KeyboardInterrupt) -> str:
    """What summary.json says of a run that `stop` (Ctrl-C, or SIGTERM) ended."""
    return SIGTERM_REASON if isinstance(stop, Terminated) else SIGINT_REASON


def _children() -> list[int]:
    """This process's child processes (a parallel launcher's workers), from /proc; none where
    there is no /proc."""
    me, found = os.getpid(), []
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == me:
                    found.append(int(entry.name))
    return found


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the cleanup short
    for child in _children():  # workers end their runs as this process does
        with contextlib.suppress(OSError):
            os.kill(child, signal.SIGTERM)
    raise Terminated()


def terminate_as_interrupt() -> None:
    """From now on, SIGTERM raises `Terminated` in this process (in its main thread, where
    Python runs signal handlers) after passing it on to its child processes."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
