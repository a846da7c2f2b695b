"""A run's row of the report's `runs` frame: its status and fit verdict with the reason, the
best, early-stopping and restored epochs, the metrics at epoch 0, the best and the last epoch,
the diagnostics' flag and ratios, and what its summary.json records of its results."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from fitscope.report.diagnose import (
    DEFAULT_CLASSES,
    RunCurves,
    Verdict,
    diagnose,
    stopping_epochs,
)
from fitscope.report.flags import run_flags
from fitscope.report.settings import ReportSettings
from fitscope.rundir import SPLIT_METRICS, RunRecord, display_path


def _diagnosis(record: RunRecord, run: RunCurves, settings: ReportSettings) -> Verdict:
    """`damaged` with what is wrong, the run's status when it diverged or failed, else
    `diagnose` (with what the trainer's early stopping did, and the run's problems)."""
    if record.damage:
        return Verdict("damaged", "; ".join(record.damage))
    if record.status in ("diverged", "failed"):
        return Verdict(record.status, (record.summary or {}).get("error") or record.status)
    if not len(run.trained()):
        return Verdict("no data", "; ".join(record.problems) or "no trained epoch")
    verdict = diagnose(run, settings)
    reason = verdict.reason
    summary = record.summary or {}
    if summary.get("stopped_early"):
        reason += f"; the trainer stopped early at epoch {summary.get('epochs_run')}"
    if record.status == "running":
        reason += " (unfinished: " + "; ".join(record.problems or ["status running"]) + ")"
    elif record.problems:  # e.g. its config read from .hydra/config.yaml
        reason += " (" + "; ".join(record.problems) + ")"
    return dataclasses.replace(verdict, reason=reason)


def _metric_at(run: RunCurves, epoch: int | None, prefix: str) -> dict[str, float]:
    return {f"{prefix}_{m}": run.at(epoch, m) for m in SPLIT_METRICS}


def _results(summary: Mapping[str, Any], row: Mapping[str, Any]) -> dict[str, Any]:
    """What summary.json records of the run's results, and the gaps at its best epoch."""
    test_best, test_last = summary.get("test_best") or {}, summary.get("test_last") or {}
    return {
        "test_loss": test_best.get("loss", np.nan),
        "test_acc": test_best.get("acc", np.nan),
        "last_test_loss": test_last.get("loss", np.nan),
        "last_test_acc": test_last.get("acc", np.nan),
        "gap_loss": row["best_val_loss"] - row["best_train_loss"],
        "gap_acc": row["best_train_acc"] - row["best_val_acc"],
        "params": summary.get("params", np.nan),
        "classes": summary.get("classes", np.nan),
        "wall_time_s": summary.get("wall_time_s", np.nan),
        "samples_per_s": summary.get("samples_per_s", np.nan),
    }


def run_row(
    record: RunRecord, run: RunCurves, keys: Mapping[str, Any], settings: ReportSettings
) -> dict[str, Any]:
    """The run's row of `runs`; `keys`: its run id, label and values of the varying keys. A
    damaged run's results are left empty: none of its files is taken for a result."""
    summary = record.summary or {}
    if record.damage:
        summary, run = {}, run.rows(np.zeros(len(run), bool))
    verdict = _diagnosis(record, run, settings)
    row: dict[str, Any] = {**keys, "status": record.status, "diagnosis": verdict.diagnosis}
    row["reason"] = verdict.reason
    row.update(stopping_epochs(run, settings), epochs_run=len(run.trained()))
    last = int(run.epoch[-1]) if len(run) else None
    initial = 0 if len(run) and run.epoch[0] == 0 else None
    row.update(_metric_at(run, initial, "initial"))
    row.update(_metric_at(run, row["best_epoch"], "best"))
    row.update(_metric_at(run, last, "last"))
    row.update(
        val_noise=verdict.val_noise,
        val_rise=verdict.val_rise,
        val_window=verdict.val_window,
        smoothed_min_epoch=verdict.smoothed_min_epoch,
    )
    classes = summary.get("classes")
    classes = classes if is_int64(classes) else DEFAULT_CLASSES
    row.update(run_flags(run, row["best_epoch"], classes, settings, record.status))
    row.update(_results(summary, row))
    row.update(command=record.command, path=display_path(record.path))
    return row


def missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def is_int64(value: Any) -> bool:
    return (
        isinstance(value, (int, np.integer))
        and not isinstance(value, bool)
        and -(2**63) <= value < 2**63
    )
