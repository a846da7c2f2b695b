"""A run folder read whole, for the report: `read_run` gives its `RunRecord`, with what is
missing (`problems`) and what is there but unreadable or not what its summary claims
(`damage`). No torch."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from fitscope.rundir.files import DamagedFileError
from fitscope.rundir.guard import completed_problems
from fitscope.rundir.names import METRICS_FILE, REQUIRED_COLUMNS, SUMMARY_FILE, rerun_command
from fitscope.rundir.read import (
    read_choices,
    read_config,
    read_metrics,
    read_overrides,
    read_summary,
)


@dataclass
class RunRecord:
    """One run folder as read from disk. `problems`: what is missing or unfinished (the run is
    still reported); `damage`: files that are there but unreadable (the run is listed as
    damaged and left out of every comparison), each a one-line reason naming the file."""

    path: Path
    summary: dict[str, Any] | None
    metrics: pd.DataFrame
    config: dict[str, Any]
    choices: dict[str, str]
    overrides: list[str]
    problems: list[str] = field(default_factory=list)
    damage: list[str] = field(default_factory=list)

    @property
    def command(self) -> str:
        """The command line that re-runs this run."""
        return (self.summary or {}).get("command") or rerun_command(self.overrides)

    @property
    def status(self) -> str:
        if self.damage:
            return "damaged"
        if self.summary is None:
            return "running"
        return self.summary.get("status", "running")


def read_run(path: Path) -> RunRecord:
    """Everything a run folder holds; what is missing is listed in `problems`, what is there
    but unreadable in `damage`. Raises nothing for a run folder's contents."""
    problems: list[str] = []
    damage: list[str] = []
    summary = None
    if path.is_symlink():  # fitscope makes no links: someone else's folder, not read
        damage.append(
            f"the run folder is a symlink (to {os.readlink(path)}): not read; fitscope reads no "
            "linked run folder (copy it in to report it)"
        )
        return RunRecord(path, None, pd.DataFrame(columns=list(REQUIRED_COLUMNS)), {}, {}, [],
                         problems, damage)  # fmt: skip
    try:
        summary = read_summary(path / SUMMARY_FILE)
        if summary is None:
            problems.append("no summary.json: still running, or stopped before it was written")
    except DamagedFileError as error:
        damage.append(str(error))
    metrics = pd.DataFrame(columns=list(REQUIRED_COLUMNS))
    try:
        metrics = read_metrics(path / METRICS_FILE)
        if metrics.empty:
            reason = "missing" if not (path / METRICS_FILE).is_file() else "has no complete epoch"
            problems.append(f"metrics.csv {reason}")
    except DamagedFileError as error:
        damage.append(str(error))
    config: dict[str, Any] = {}
    try:
        config, note = read_config(path, summary)
        problems += [note] if note else []
    except DamagedFileError as error:
        damage.append(str(error))
    choices: dict[str, str] = {}
    overrides: list[str] = []
    try:
        choices = read_choices(path, summary)
    except DamagedFileError as error:
        damage.append(str(error))
    try:
        overrides = read_overrides(path, summary)
    except DamagedFileError as error:
        damage.append(str(error))
    if summary and summary.get("status") == "completed" and not damage:  # as resume checks it
        damage += [f"completed, but {p}" for p in completed_problems(path, summary, metrics)]
    return RunRecord(path, summary, metrics, config, choices, overrides, problems, damage)
