"""Run folders become the report's frames: `runs` (one row per run: its varying config keys,
status, diagnosis, best and early-stopping epochs, results), `epochs` (every epoch row of every
run, wide, as metrics.csv holds them), and from it `curves` (long format: run, epoch, split,
metric, value) and `layers` (one row per run, epoch and layer); the configs and, when seeds or
folds vary, mean and std per setup.

A damaged run (`RunRecord.damage`: a file that is there but unreadable) keeps its row in `runs`
(status and diagnosis `damaged`, the reason) and is left out of everything else: the varying
keys, the labels, curves, charts and means are what they would be without it."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fitscope import __version__
from fitscope.config import flatten_config, is_display_key, show_value
from fitscope.report.diagnose import (
    RunCurves,
)
from fitscope.report.index import INDEX_VERSION, Sweep, load_sweep
from fitscope.report.runs import is_int64, missing, run_row
from fitscope.report.settings import ReportSettings
from fitscope.report.stats import compare_setups, interval_columns
from fitscope.rundir import LAYER_MEASURES, SPLIT_METRICS
from fitscope.rundir import parse_layer_column as parse_layer

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
# report settings that lay the report out but do not change how a run is judged
UNJUDGED = ("enabled", "dir", "name", "metric", "matrix", "group_by", "extremes", "run_panels")
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
    epochs: pd.DataFrame  # every epoch row: `run` (the run's position in `runs`), metrics.csv
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
    sweep: Sweep | None = None  # what the runs were read from (kept as the report's index)

    @functools.cached_property
    def charted(self) -> np.ndarray:
        """The positions of the runs whose curves are shown: not damaged, with epoch rows."""
        shown = ~self.runs["status"].eq("damaged").to_numpy()
        has_rows = np.isin(np.arange(len(self.runs)), self.epochs["run"].to_numpy())
        return np.flatnonzero(shown & has_rows)

    @functools.cached_property
    def curves(self) -> pd.DataFrame:
        """Every curve in long format: run, label, the varying keys, epoch, split, metric, value."""
        rows = self.epochs[self.epochs["run"].isin(self.charted)]
        long = rows[["run", "epoch", *SPLIT_METRICS]].melt(
            id_vars=["run", "epoch"], var_name="column"
        )
        long = long.sort_values("run", kind="stable")
        parts = {c: c.split("_", 1) for c in SPLIT_METRICS}
        long.insert(2, "split", long["column"].map(lambda c: parts[c][0]))
        long.insert(3, "metric", long.pop("column").map(lambda c: parts[c][1]))
        return self._keyed(long.reset_index(drop=True))

    @functools.cached_property
    def layers(self) -> pd.DataFrame:
        """The per-layer diagnostics: one row per run, epoch and layer with `layer` (1, 2, ...
        then `out`), `depth_index` (1 for the first layer) and one column per measure."""
        return self._keyed(layer_rows(self.epochs[self.epochs["run"].isin(self.charted)]))

    def _keyed(self, frame: pd.DataFrame) -> pd.DataFrame:
        """`frame` (a `run` column of positions) with the run id, label and varying keys as
        `runs` holds them, as read (object dtype: an int stays an int where another run lacks
        it, a bool stays a bool)."""
        position = frame.pop("run").to_numpy(int)
        keyed = {"run": self.runs["run"].to_numpy()[position]}
        keyed["label"] = self.runs["label"].to_numpy()[position]
        for key in self.varying:
            values = np.empty(len(self.runs), dtype=object)
            values[:] = self.runs[key].tolist()
            keyed[key] = values[position]
        return pd.concat([pd.DataFrame(keyed, index=frame.index), frame], axis=1)


def layer_rows(epochs: pd.DataFrame) -> pd.DataFrame:
    """Wide epoch rows (`run`, `epoch`, `<measure>_<layer>` columns) as one row per run, epoch
    and layer that the run has, ordered by run, epoch and depth."""
    parsed = {c: parse_layer(c) for c in epochs.columns}
    parsed = {c: p for c, p in parsed.items() if p}
    measures = [m for m in LAYER_MEASURES if any(p[0] == m for p in parsed.values())]
    columns = ["run", "epoch", "layer", "depth_index", *measures]
    hidden = sorted({int(p[1]) for p in parsed.values() if p[1] != "out"})
    blocks = []
    for layer in [*map(str, hidden), "out"]:
        block = {m: epochs.get(f"{m}_{layer}") for m in measures}
        values = pd.DataFrame(
            {m: np.nan if v is None else v.to_numpy(float) for m, v in block.items()},
            index=epochs.index,
        )
        present = values.notna().any(axis=1).groupby(epochs["run"]).transform("any")
        blocks.append(
            pd.concat([epochs[["run", "epoch"]], values], axis=1)[present].assign(layer=layer)
        )
    if not blocks or not sum(len(b) for b in blocks):
        return pd.DataFrame(columns=columns)
    tidy = pd.concat(blocks)
    is_out = tidy["layer"].eq("out")
    number = pd.to_numeric(tidy["layer"].where(~is_out), errors="coerce")
    rank = number.groupby(tidy["run"]).rank(method="dense")
    deepest = rank.groupby(tidy["run"]).transform("max").fillna(0)
    tidy["depth_index"] = rank.where(~is_out, deepest + 1).astype(int)
    tidy = tidy.sort_values(["run", "epoch", "depth_index"], kind="stable")
    return tidy[columns].reset_index(drop=True)


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


def _display_paths(paths: Sequence[Path]) -> list[str]:
    """Resolved run folders as a user would type them: relative to the working directory when
    below it (`fitscope.rundir.display_path`, without resolving each again)."""
    cwd = Path.cwd().resolve()
    shown = []
    for path in paths:
        try:
            shown.append(str(path.relative_to(cwd)))
        except ValueError:
            shown.append(str(path))
    return shown


def analysis_key(settings: ReportSettings) -> str:
    """The settings a run's analysis depends on, as a short text: an index's analysis made
    with other settings is made again."""
    judged = {k: v for k, v in dataclasses.asdict(settings).items() if k not in UNJUDGED}
    judged["version"] = [INDEX_VERSION, __version__]
    return hashlib.sha256(json.dumps(judged, sort_keys=True).encode()).hexdigest()[:16]


def run_curves(sweep: Sweep) -> list[RunCurves]:
    """Each run's epoch rows as arrays, sliced from the sweep's one table."""
    epochs = sweep.epochs
    bounds = sweep.bounds()
    epoch = epochs["epoch"].to_numpy(np.int64)
    split = {m: epochs[m].to_numpy(float) if m in epochs else None for m in SPLIT_METRICS}
    others = {c: epochs[c].to_numpy(float) for c in epochs.columns if c not in ("run", "epoch")}
    others = {c: v for c, v in others.items() if c not in SPLIT_METRICS}
    curves = []
    for i in range(len(sweep.records)):
        a, b = bounds[i], bounds[i + 1]
        metrics = {
            m: (v[a:b] if v is not None else np.full(b - a, np.nan)) for m, v in split.items()
        }
        columns = {c: v[a:b] for c, v in others.items() if not np.isnan(v[a:b]).all()}
        curves.append(RunCurves(epoch[a:b], **metrics, columns=columns))
    return curves


def collect(
    paths: Iterable[str | Path],
    settings: ReportSettings | None = None,
    index_folder: Path | None = None,
) -> Report:
    """Read every run folder in or under `paths` into a `Report` (runs whose files have not
    changed since the index in `index_folder` was written are taken from it)."""
    settings = settings or ReportSettings.from_mapping()
    sweep = load_sweep(paths, index_folder, analysis_key(settings))
    records = sweep.records
    ids = _run_ids([r.path for r in records])
    flat = [{**r.choices, **flatten_config(r.config)} for r in records]
    compared = [i for i, r in enumerate(records) if not r.damage]
    configs = pd.DataFrame(  # object dtype: an int stays an int where another run lacks it
        [flat[i] for i in compared],
        index=pd.Index([ids[i] for i in compared], name="run"),
        dtype=object,
    )
    varying = varying_keys(configs)
    shown = _display_paths([r.path for r in records])
    rows, skipped, damaged = [], [], []
    for i, (run, record) in enumerate(zip(run_curves(sweep), records, strict=True)):
        if record.damage:  # its own values, where it has a config; None for the others
            config = pd.Series(flat[i], dtype=object).reindex(varying)
            damaged.append((ids[i], "; ".join(record.damage)))
        else:
            config = configs.loc[ids[i]]
            if not len(run):
                skipped.append((ids[i], "; ".join(record.problems)))
        keys = {"run": ids[i]}
        keys["label"] = run_label(config, varying, ids[i]) if record.config else ids[i]
        keys.update({k: config[k] for k in varying})
        analysis = sweep.analyses[i]
        if analysis is None:
            analysis = run_row(record, run, {}, settings)
            analysis.pop("path")
            sweep.analyses[i] = analysis
        rows.append({**keys, **analysis, "path": shown[i]})
    runs = _runs_frame(rows, varying)
    replicates = [k for k in REPLICATE_KEYS if k in varying]
    setup = [k for k in varying if k not in replicates]
    return Report(
        runs=runs,
        epochs=sweep.epochs,
        configs=configs,
        varying=varying,
        groups=aggregate_replicates(runs, varying, replicates) if replicates else None,
        replicate_keys=replicates,
        skipped=skipped,
        damaged=damaged,
        settings=settings,
        sources=shown,
        shared_config=shared_config(next((r.config for r in records if not r.damage), {}), configs),
        comparisons=compare_setups(runs, setup, replicates) if replicates else None,
        sweep=sweep,
    )


def _runs_frame(rows: list[dict[str, Any]], varying: list[str]) -> pd.DataFrame:
    runs = pd.DataFrame(rows)
    for column in INTEGER_COLUMNS:
        values = [row[column] for row in rows]
        if all(missing(v) or is_int64(v) for v in values):
            runs[column] = pd.array([None if missing(v) else int(v) for v in values], "Int64")
    for key in varying:  # as read: an int stays an int where another run has no value
        runs[key] = pd.Series([row[key] for row in rows], dtype=object)
    return runs


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
    stats = stats.join(interval_columns(done, grouped.ngroup().to_numpy(), stats.index))
    return stats.reset_index() if setup else stats.reset_index(drop=True)
