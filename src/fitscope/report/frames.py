"""Run folders become the report's frames: `runs` (one row per run: its varying config keys,
status, diagnosis, best and early-stopping epochs, results) and `curves` (long format: run,
epoch, split, metric, value), with the per-layer diagnostics, the configs and, when seeds or
folds vary, mean and std per setup.

A damaged run (`RunRecord.damage`: a file that is there but unreadable) keeps its row in `runs`
(status and diagnosis `damaged`, the reason) and is left out of everything else: the varying
keys, the labels, curves, charts and means are what they would be without it."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fitscope.config import flatten_config, is_display_key, show_value
from fitscope.report.diagnose import (
    DEFAULT_CLASSES,
    Verdict,
    diagnose,
    layer_frame,
    run_flags,
    stopping_epochs,
    trained,
)
from fitscope.report.settings import ReportSettings
from fitscope.report.stats import compare_setups, interval_columns
from fitscope.rundir import (
    LAYER_MEASURES,
    SPLIT_METRICS,
    RunRecord,
    display_path,
    find_run_dirs,
    read_run,
)

# Keys whose values are repetitions of one setup: runs that differ only in them are aggregated.
REPLICATE_KEYS = ("trainer.seed", "data.fold")
SHORT_NAMES = {"trainer.seed": "seed", "data.fold": "fold"}
# Whole numbers: nullable integers, so that a run without a value (no data, damaged) leaves the
# others' 12 as 12, not 12.0.
INTEGER_COLUMNS = (
    "best_epoch",
    "early_stopping_epoch",
    "restored_epoch",
    "smoothed_min_epoch",
    "val_window",
    "dead_outputs",
    "epochs_run",
    "params",
    "classes",
)
AGGREGATED = (
    "best_val_loss",
    "best_val_acc",
    "test_loss",
    "test_acc",
    "best_epoch",
    "early_stopping_epoch",
    "last_train_loss",
    "gap_loss",
)


@dataclass
class Report:
    """Everything a report shows, as frames; `fitscope.report.build` turns it into files."""

    runs: pd.DataFrame  # one row per run
    curves: pd.DataFrame  # run, epoch, split, metric, value (+ varying keys, label)
    layers: pd.DataFrame  # run, epoch, layer, grad_norm, act_mean, act_std, dead, saturated
    configs: pd.DataFrame  # run x every flattened config key and group choice (values as read),
    # for the runs compared (damaged runs left out)
    varying: list[str]
    groups: pd.DataFrame | None  # mean/std over replicate keys, when one varies
    replicate_keys: list[str]
    skipped: list[tuple[str, str]]  # (run, why) for runs left out of the charts
    damaged: list[tuple[str, str]]  # (run, why) for damaged runs, left out of every comparison
    settings: ReportSettings
    sources: list[str]
    shared_config: dict[str, Any]  # the config keys every run has in common, nested
    # when a replicate key varies: every pair of setups that differ in one key, tested
    # (`fitscope.report.stats.compare_setups`)
    comparisons: pd.DataFrame | None = None


def _as_text(configs: pd.DataFrame) -> pd.DataFrame:
    """Every value as the command line writes it, missing ones included, so that they compare."""
    return configs.map(show_value)


def varying_keys(configs: pd.DataFrame) -> list[str]:
    """The config keys whose values differ between runs: group choices (`activation`) first, then
    leaf keys (`model.depth`), leaving out leaves that a varying group choice already explains."""
    text = _as_text(configs)
    keys = [k for k in configs.columns if not is_display_key(k) and text[k].nunique() > 1]
    groups = [k for k in keys if "." not in k]
    leaves = []
    for key in (k for k in keys if "." in k):
        group = key.split(".")[0]
        if group in groups and (text.groupby(text[group])[key].nunique() <= 1).all():
            continue
        leaves.append(key)
    return groups + leaves


def shared_config(config: Mapping[str, Any], configs: pd.DataFrame) -> dict[str, Any]:
    """`config` without the leaves whose values differ between the runs in `configs`."""
    text = _as_text(configs)
    differing = {k for k in configs.columns if "." in k and text[k].nunique() > 1}

    def keep(node: Mapping[str, Any], prefix: str) -> dict[str, Any]:
        kept = {}
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            if isinstance(value, Mapping):
                child = keep(value, dotted + ".")
                if child:
                    kept[key] = child
            elif dotted not in differing:
                kept[key] = value
        return kept

    return keep(config, "")


def run_label(config: pd.Series, varying: Sequence[str], run_id: str) -> str:
    """`activation=relu model.depth=1 seed=2`: the run's values of the varying keys, written as
    on the command line (seed and fold by their short names)."""
    shown = [f"{SHORT_NAMES.get(k, k)}={show_value(config[k])}" for k in varying]
    return " ".join(shown) or run_id


def _run_ids(paths: Sequence[Path]) -> list[str]:
    """Short unique names: each run folder's path below the folders' common parent."""
    if len(paths) == 1:
        return [paths[0].name]
    common = os.path.commonpath(paths)
    return [str(p.relative_to(common)) for p in paths]


def _metric_at(metrics: pd.DataFrame, epoch: int | None, prefix: str) -> dict[str, float]:
    if epoch is None:
        return {f"{prefix}_{m}": np.nan for m in SPLIT_METRICS}
    row = metrics.loc[metrics["epoch"] == epoch].iloc[0]
    return {f"{prefix}_{m}": float(row[m]) for m in SPLIT_METRICS}


def _diagnosis(record: RunRecord, settings: ReportSettings) -> Verdict:
    """`damaged` with what is wrong, the run's status when it diverged or failed, else
    `diagnose` (with what the trainer's early stopping did, and the run's problems)."""
    if record.damage:
        return Verdict("damaged", "; ".join(record.damage))
    if record.status in ("diverged", "failed"):
        return Verdict(record.status, (record.summary or {}).get("error") or record.status)
    if trained(record.metrics).empty:
        return Verdict("no data", "; ".join(record.problems) or "no trained epoch")
    verdict = diagnose(record.metrics, settings)
    reason = verdict.reason
    summary = record.summary or {}
    if summary.get("stopped_early"):
        reason += f"; the trainer stopped early at epoch {summary.get('epochs_run')}"
    if record.status == "running":
        reason += " (unfinished: " + "; ".join(record.problems or ["status running"]) + ")"
    elif record.problems:  # e.g. its config read from .hydra/config.yaml
        reason += " (" + "; ".join(record.problems) + ")"
    return dataclasses.replace(verdict, reason=reason)


def _run_row(
    record: RunRecord, keys: Mapping[str, Any], settings: ReportSettings, layers: pd.DataFrame
) -> dict[str, Any]:
    """The run's row of `runs`; `keys`: its run id, label and values of the varying keys. A
    damaged run's results are left empty: none of its files is taken for a result."""
    summary, metrics = record.summary or {}, record.metrics
    if record.damage:
        summary, metrics = {}, metrics.iloc[0:0]
    verdict = _diagnosis(record, settings)
    row: dict[str, Any] = {**keys, "status": record.status, "diagnosis": verdict.diagnosis}
    row["reason"] = verdict.reason
    row.update(stopping_epochs(metrics, settings), epochs_run=len(trained(metrics)))
    last = int(metrics["epoch"].iloc[-1]) if len(metrics) else None
    initial = (
        int(metrics["epoch"].iloc[0]) if len(metrics) and metrics["epoch"].iloc[0] == 0 else None
    )
    row.update(_metric_at(metrics, initial, "initial"))
    row.update(_metric_at(metrics, row["best_epoch"], "best"))
    row.update(_metric_at(metrics, last, "last"))
    row.update(
        val_noise=verdict.val_noise,
        val_rise=verdict.val_rise,
        val_window=verdict.val_window,
        smoothed_min_epoch=verdict.smoothed_min_epoch,
    )
    classes = summary.get("classes")
    classes = classes if _is_int64(classes) else DEFAULT_CLASSES
    row.update(run_flags(metrics, layers, row["best_epoch"], classes, settings, record.status))
    test_best, test_last = summary.get("test_best") or {}, summary.get("test_last") or {}
    row.update(
        test_loss=test_best.get("loss", np.nan),
        test_acc=test_best.get("acc", np.nan),
        last_test_loss=test_last.get("loss", np.nan),
        last_test_acc=test_last.get("acc", np.nan),
        gap_loss=row["best_val_loss"] - row["best_train_loss"],
        gap_acc=row["best_train_acc"] - row["best_val_acc"],
        params=summary.get("params", np.nan),
        classes=summary.get("classes", np.nan),
        wall_time_s=summary.get("wall_time_s", np.nan),
        samples_per_s=summary.get("samples_per_s", np.nan),
        command=record.command,
        path=display_path(record.path),
    )
    return row


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _is_int64(value: Any) -> bool:
    return (
        isinstance(value, (int, np.integer))
        and not isinstance(value, bool)
        and -(2**63) <= value < 2**63
    )


def _long_curves(metrics: pd.DataFrame) -> pd.DataFrame:
    """A run's epoch rows as (epoch, split, metric, value)."""
    long = metrics.melt(id_vars="epoch", value_vars=list(SPLIT_METRICS))
    long[["split", "metric"]] = long.pop("variable").str.split("_", n=1, expand=True)
    return long


def _concat(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    """The frames one under the other, in `columns` (those they have); empty with them if none."""
    if not frames:
        return pd.DataFrame(columns=columns)
    joined = pd.concat(frames, ignore_index=True)
    return joined[[c for c in columns if c in joined.columns]]


def _as_read(frame: pd.DataFrame, runs: pd.DataFrame, varying: list[str]) -> pd.DataFrame:
    """`frame` with each run's values of the varying keys as `runs` holds them, as read (object
    dtype: concatenation would turn an int missing from one run into a float, a bool into
    numpy's)."""
    position = frame["run"].map({run: i for i, run in enumerate(runs["run"])}).to_numpy(int)
    for key in varying:
        values = np.empty(len(runs), dtype=object)
        values[:] = runs[key].tolist()
        frame[key] = pd.Series(values[position], index=frame.index, dtype=object)
    return frame


def collect(paths: Iterable[str | Path], settings: ReportSettings | None = None) -> Report:
    """Read every run folder in or under `paths` into a `Report`."""
    settings = settings or ReportSettings.from_mapping()
    run_dirs = find_run_dirs(paths)
    records = [read_run(p) for p in run_dirs]
    ids = _run_ids(run_dirs)
    flat = [{**r.choices, **flatten_config(r.config)} for r in records]
    compared = [i for i, r in enumerate(records) if not r.damage]
    configs = pd.DataFrame(  # object dtype: an int stays an int where another run lacks it
        [flat[i] for i in compared],
        index=pd.Index([ids[i] for i in compared], name="run"),
        dtype=object,
    )
    varying = varying_keys(configs)
    rows, curves, layers, skipped, damaged = [], [], [], [], []
    for i, (run_id, record) in enumerate(zip(ids, records, strict=True)):
        if record.damage:  # its own values, where it has a config; None for the others
            config = pd.Series(flat[i], dtype=object).reindex(varying)
        else:
            config = configs.loc[run_id]
        keys = {"run": run_id}
        keys["label"] = run_label(config, varying, run_id) if record.config else run_id
        keys.update({k: config[k] for k in varying})
        run_layers = layer_frame(record.metrics.iloc[0:0] if record.damage else record.metrics)
        rows.append(_run_row(record, keys, settings, run_layers))
        if record.damage:
            damaged.append((run_id, "; ".join(record.damage)))
            continue
        if record.metrics.empty:
            skipped.append((run_id, "; ".join(record.problems)))
            continue
        curves.append(_long_curves(record.metrics).assign(**keys))
        if not run_layers.empty:
            layers.append(run_layers.assign(**keys))
    runs = pd.DataFrame(rows)
    for column in INTEGER_COLUMNS:
        values = [row[column] for row in rows]
        if all(_missing(v) or _is_int64(v) for v in values):
            runs[column] = pd.array([None if _missing(v) else int(v) for v in values], "Int64")
    for key in varying:  # as read: an int stays an int where another run has no value
        runs[key] = pd.Series([row[key] for row in rows], dtype=object)
    replicates = [k for k in REPLICATE_KEYS if k in varying]
    curve_columns = ["run", "label", *varying, "epoch", "split", "metric", "value"]
    layer_columns = ["run", "label", *varying, "epoch", "layer", "depth_index", *LAYER_MEASURES]
    return Report(
        runs=runs,
        curves=_as_read(_concat(curves, curve_columns), runs, varying),
        layers=_as_read(_concat(layers, layer_columns), runs, varying),
        configs=configs,
        varying=varying,
        groups=aggregate_replicates(runs, varying, replicates) if replicates else None,
        replicate_keys=replicates,
        skipped=skipped,
        damaged=damaged,
        settings=settings,
        sources=[display_path(p) for p in run_dirs],
        shared_config=shared_config(next((r.config for r in records if not r.damage), {}), configs),
        comparisons=(
            compare_setups(runs, [k for k in varying if k not in replicates], replicates)
            if replicates
            else None
        ),
    )


def aggregate_replicates(
    runs: pd.DataFrame, varying: list[str], replicates: list[str]
) -> pd.DataFrame:
    """Mean and std of the main results over the replicate keys (seeds, folds), per setup, and
    95% t-intervals of the mean (`fitscope.report.stats.interval_columns`)."""
    setup = [k for k in varying if k not in replicates]
    done = runs[runs["status"] == "completed"]
    grouped = (
        done.groupby(setup, dropna=False, sort=False) if setup else done.groupby(lambda _: "all")
    )
    stats = grouped[list(AGGREGATED)].agg(["mean", "std"])
    stats.columns = [f"{metric}_{stat}" for metric, stat in stats.columns]
    stats.insert(0, "n", grouped.size())
    stats = stats.join(interval_columns(grouped))
    return stats.reset_index() if setup else stats.reset_index(drop=True)
