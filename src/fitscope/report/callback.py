"""The Hydra callback that builds `reports/<sweep name>/` when a multirun ends (conf/config.yaml
registers it; `report.enabled=false` turns it off)."""

from __future__ import annotations

import atexit
import logging
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from hydra.core.utils import JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import OmegaConf

from fitscope.report.settings import ReportSettings
from fitscope.rundir import SUMMARY_FILE, SWEEP_FILE, completed_summary

log = logging.getLogger("fitscope")


def report_command(sweep_dir: str | Path) -> str:
    """The command that builds a sweep's report from its folders on disk."""
    return f"python src/report.py {shlex.quote(str(sweep_dir))}"


class ReportCallback(Callback):
    """Builds the report when a multirun ends.

    Hydra skips `on_multirun_end` when a job raised; the callback then prints, as the process
    exits, the command that builds the report from the folders on disk.
    """

    def __init__(self) -> None:
        self._announced = False
        self._started = time.time()

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        self._started = time.time()
        # Hydra writes the sweep's record next (multirun.yaml): never through a link
        record = Path(str(config.hydra.sweep.dir)) / SWEEP_FILE
        if record.is_symlink():
            target = os.readlink(record)
            record.unlink()
            log.warning(
                f"{record} was a symlink (to {target}): replaced by this sweep's own record; "
                "the file it pointed to is untouched"
            )

    def on_job_end(self, config: Any, job_return: Any, **kwargs: Any) -> None:
        if (
            job_return.status == JobStatus.FAILED
            and not self._announced
            and config.hydra.mode == RunMode.MULTIRUN
        ):
            self._announced = True
            command = report_command(config.hydra.sweep.dir)
            atexit.register(
                lambda: print(
                    f"A run failed, so Hydra skips the end-of-sweep report. "
                    f"Build it with: {command}",
                    file=sys.stderr,
                )
            )

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        summaries = list(sweep_dir.glob(f"*/{SUMMARY_FILE}"))
        kept = sum(  # completed before this sweep started: not a run another process trains
            1
            for s in summaries
            if s.stat().st_mtime < self._started and completed_summary(s.parent) is not None
        )
        if kept:  # a resumed sweep: their summary.json files were not touched by this sweep
            print(
                f"resume: {kept} of {len(summaries)} runs were already completed with the same "
                "config and were skipped"
            )
        section = config.get("report")
        try:
            settings = ReportSettings.from_mapping(
                OmegaConf.to_container(section, resolve=True) if section is not None else None
            )
            if not settings.enabled:
                return
            from fitscope.report.build import build_report  # matplotlib only when it draws

            folder = build_report([sweep_dir], settings, settings.name)
        except Exception as error:  # the runs are done: a report problem must not hide them
            log.error(f"report not built ({error}); build it with: {report_command(sweep_dir)}")
            return
        print(f"report: {folder / 'report.html'} (and report.md, runs.csv, curves.csv)")
