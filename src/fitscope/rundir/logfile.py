"""The job's log file, `run.log`: Hydra's file handler (`hydra.job_logging.handlers.file`)
as fitscope writes it. No torch.

Hydra opens a job's log file before the job runs, so a plain `logging.FileHandler` would
append to whatever `run.log` is: a symlink's target, or the log of a completed run that
resume only skips. `RunLog` opens its file when the first line is written (`delay`), never
through a symlink (a link is someone else's doing: the run's own check names it, and the lines
go nowhere), and leaves out the lines marked `console_only` (a run skipped as completed, or
left to the process that trains it), so that a run it does not train keeps its log as it was.
"""

from __future__ import annotations

import logging
import os
from typing import IO, Any

CONSOLE_ONLY = {"console_only": True}  # `extra=` of a line that must not reach run.log


class RunLog(logging.FileHandler):
    def __init__(
        self,
        filename: str,
        mode: str = "a",
        encoding: str | None = None,
        delay: bool = True,
        errors: str | None = None,
    ) -> None:
        super().__init__(filename, mode, encoding or "utf-8", delay=True, errors=errors)

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "console_only", False):
            return
        super().emit(record)

    def _open(self) -> IO[Any]:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(self.baseFilename, flags | getattr(os, "O_CLOEXEC", 0), 0o666)
        except OSError:  # a link, or a folder that cannot be written: its check says which
            fd = os.open(os.devnull, os.O_WRONLY)
        return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)
