"""Resume: running a sweep again into its folder skips the runs it already completed.

A run folder that holds a completed run of the same resolved config (same `config_hash`) is
skipped, once its folder is checked to hold what its summary says (`completed_problems`:
metrics.csv up to its last epoch, best.pt of the recorded checksum, config.yaml of the
recorded hash). One that is not whole is trained again, its files first set aside in
`.replaced-<time>/` in its folder, with one line saying why; so is a run whose summary.json
is there but cannot be read. A completed run of another config is never overwritten
(`ResumeError`); failed and unfinished runs run again.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig

from fitscope import FitscopeError
from fitscope.config import config_hash
from fitscope.rundir import (
    METRICS_FILE,
    SUMMARY_FILE,
    RunFolderError,
    completed_problems,
    display_path,
    read_metrics,
    read_summary,
    set_aside,
)
from fitscope.rundir.logfile import CONSOLE_ONLY
from fitscope.train.settings import validate

log = logging.getLogger("fitscope")


class ResumeError(FitscopeError):
    pass


def completed_run(cfg: DictConfig, run_dir: Path, label: str = "run") -> dict[str, Any] | None:
    """The summary of the completed run of this config in `run_dir`, marked `skipped: True`;
    None when there is none to keep (a run that is not whole is set aside first).
    `ResumeError` when it completed another config."""
    try:
        previous = read_summary(run_dir / SUMMARY_FILE)
    except RunFolderError as error:  # there, but not a summary fitscope wrote: kept, not reused
        aside = set_aside(run_dir)
        log.warning(
            f"{label}: not skipped: {error}; trained again, its files kept in {display_path(aside)}"
        )
        return None
    if not previous or previous.get("status") != "completed":
        return None
    validate(cfg)  # a bad value is refused as in any run, before the hashes are compared
    if previous.get("config_hash") != config_hash(cfg):
        raise ResumeError(
            f"{run_dir} holds a completed run of another config (config hash "
            f"{previous.get('config_hash')}, this one {config_hash(cfg)}); it is kept: "
            "run the sweep into a new hydra.sweep.dir"
        )
    try:
        metrics: pd.DataFrame | RunFolderError = read_metrics(run_dir / METRICS_FILE)
    except RunFolderError as error:
        metrics = error
    problems = completed_problems(run_dir, previous, metrics)
    if problems:
        aside = set_aside(run_dir)
        log.warning(
            f"{label}: not skipped: summary.json says completed, but {'; '.join(problems)}; "
            f"trained again, its files kept in {display_path(aside)}"
        )
        return None
    return {**previous, "skipped": True}


def skipped_line(label: str, run_dir: Path) -> None:
    """The line of a run skipped as completed: on the console, never into its run.log."""
    log.info(f"{label}: skipped, already completed in {run_dir}", extra=CONSOLE_ONLY)
