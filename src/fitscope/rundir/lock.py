"""The run folder's lock: one process trains a run folder (an OS lock the kernel releases
however the process ends), and what another process may record of a run it no longer trains."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from fitscope import FitscopeError
from fitscope.rundir.files import RunFolderError
from fitscope.rundir.guard import check_run_folder
from fitscope.rundir.names import LOCK_FILE, METRICS_FILE, SUMMARY_FILE, display_path
from fitscope.rundir.read import read_summary
from fitscope.rundir.write import write_json_atomic
from fitscope.signals import SIGTERM_REASON

log = logging.getLogger("fitscope")

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None


class RunLocked(FitscopeError):
    """Another process trains this run folder."""


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold `run_dir`'s lock while training it; `RunLocked` (naming the holder) when another
    process holds it. An OS lock (flock): the kernel releases it when its process ends, however
    it ends, so a killed run never blocks the next attempt. Where the OS or the file system has
    no flock (Windows; Lustre mounted without `-o flock`) the run is not locked."""
    path = run_dir / LOCK_FILE
    check_run_folder(run_dir)  # a link in its place is never written through
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags, 0o666)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
                raise RunLocked(f"{display_path(run_dir)} is being trained by {holder}") from None
            except OSError as error:  # a file system without flock (Lustre without -o flock)
                log.warning(f"{display_path(run_dir)}: not locked ({error.strerror})")
        os.ftruncate(fd, 0)
        since = datetime.now().astimezone().isoformat(timespec="seconds")
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {since}\n".encode())
        yield
    finally:
        os.close(fd)  # releases the lock


def mark_ended(run_dir: Path, reason: str, *, sent_sigterm: bool = False) -> str | None:
    """Record that the process training `run_dir` ended without finishing it (a cluster job
    cancelled or killed): a summary.json that still says `running` says `failed`, `reason`,
    unless a process holds the run (it trains it again). With `sent_sigterm` (`reason` sent
    SIGTERM: a SLURM job cancelled or out of time), a run that says it was interrupted by
    SIGTERM gets `reason` as who sent it. Returns the run's status after that (`running` when
    it has metrics but no summary), or None when the folder holds no run."""
    summary_path = run_dir / SUMMARY_FILE
    if not summary_path.is_file():
        return "running" if (run_dir / METRICS_FILE).is_file() else None
    try:
        with run_lock(run_dir):
            summary = read_summary(summary_path) or {}
            if summary.get("status") == "running":
                summary = {**summary, "status": "failed", "error": reason}
                write_json_atomic(summary_path, summary)
            elif sent_sigterm and summary.get("error") == SIGTERM_REASON:
                summary = {**summary, "error": f"interrupted (SIGTERM: {reason})"}
                write_json_atomic(summary_path, summary)
            return str(summary.get("status", "running"))
    except (RunLocked, RunFolderError, OSError):
        return "running"  # trained again by now, or not fitscope's to change
