"""The report stage: run folders become two pandas frames, `runs` (one row per run) and `curves`
(long format: run, epoch, split, metric, value), and those become charts and files.

Definitions (also written into every report):
- best epoch: the epoch with the lowest validation loss;
- early-stopping epoch: where early stopping on validation loss with `patience` and `min_delta`
  would have stopped; it would restore the best epoch within that window (`restored_epoch`);
- fit diagnosis: see `diagnose`.
"""

from __future__ import annotations

import atexit
import io
import json
import logging
import math
import os
import re
import shlex
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from fitscope import FitscopeError
from fitscope.config import is_display_key
from fitscope.records import CONFIG_FILE, METRICS_FILE, SUMMARY_FILE, flatten_config, read_json
from fitscope.runner import display_path, rerun_command
from fitscope.training import best_epoch, early_stopping_epoch

log = logging.getLogger("fitscope")

RUN_MARKERS = (SUMMARY_FILE, METRICS_FILE, ".hydra")
# Keys whose values are repetitions of one setup: runs that differ only in them are aggregated.
REPLICATE_KEYS = ("trainer.seed", "data.fold")
SPLITS_METRICS = ("train_loss", "train_acc", "val_loss", "val_acc")
LAYER_COLUMN = re.compile(r"^(grad_norm|act_mean|act_std|dead|saturated)_(\d+|out)$")
LAYER_MEASURES = ("grad_norm", "act_mean", "act_std", "dead", "saturated")
SOURCES_FILE = "sources.json"
DEFAULTS_FILE = Path(__file__).resolve().parents[2] / "conf" / "report" / "default.yaml"


class ReportError(FitscopeError):
    pass


@dataclass(frozen=True)
class ReportSettings:
    """Early-stopping and fit-diagnosis settings (the `report` config group)."""

    patience: int = 5
    min_delta: float = 0.0
    overfit_rise: float = 0.05
    underfit_train_acc: float = 0.9
    converge_window: float = 0.2
    converge_tol: float = 0.01
    vanishing_ratio: float = 0.01
    exploding_norm: float = 1000.0

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> ReportSettings:
        values = values or {}
        return cls(
            **{f.name: values[f.name] for f in fields(cls) if values.get(f.name) is not None}
        )


def default_settings(sweep_dirs: Sequence[Path] = ()) -> dict[str, Any]:
    """The `report` settings a sweep ran with (its multirun.yaml), else conf/report/default.yaml."""
    for folder in sweep_dirs:
        multirun = folder / "multirun.yaml"
        try:
            section = OmegaConf.load(multirun).get("report") if multirun.is_file() else None
        except Exception:  # an unreadable multirun.yaml: fall back to the defaults
            section = None
        if section is not None:
            return OmegaConf.to_container(section)
    if DEFAULTS_FILE.is_file():
        return OmegaConf.to_container(OmegaConf.load(DEFAULTS_FILE))
    return {}


# ---------------------------------------------------------------------------- reading run folders


def _natural_key(path: Path) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def find_run_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """Every run folder in or under `paths` (a run folder holds summary.json, metrics.csv or
    .hydra/), in natural order (job 2 before job 10)."""
    found: set[Path] = set()
    for given in paths:
        path = Path(given)
        if not path.is_dir():
            raise ReportError(f"{path}: no such folder")
        if any((path / marker).exists() for marker in RUN_MARKERS):
            found.add(path.resolve())
            continue
        runs = {m.parent.resolve() for marker in RUN_MARKERS for m in path.rglob(marker)}
        if not runs:
            raise ReportError(
                f"{path}: no run folders in it (a run folder holds {', '.join(RUN_MARKERS)})"
            )
        found |= runs
    return sorted(found, key=_natural_key)


def read_config(run_dir: Path) -> dict[str, Any]:
    """A run's resolved config, as nested containers (empty if it has none)."""
    for path in (run_dir / CONFIG_FILE, run_dir / ".hydra" / "config.yaml"):
        if path.is_file():
            return OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    return {}


def read_choices(run_dir: Path, summary: Mapping[str, Any] | None) -> dict[str, str]:
    """The config group options a run was composed from, e.g. {"activation": "relu"}."""
    if summary and summary.get("choices"):
        return dict(summary["choices"])
    hydra_file = run_dir / ".hydra" / "hydra.yaml"
    if hydra_file.is_file():
        choices = OmegaConf.load(hydra_file).hydra.runtime.choices
        return {k: v for k, v in choices.items() if not k.startswith("hydra/")}
    return {}


def read_overrides(run_dir: Path, summary: Mapping[str, Any] | None) -> list[str]:
    if summary and "overrides" in summary:
        return list(summary["overrides"])
    overrides = run_dir / ".hydra" / "overrides.yaml"
    return list(OmegaConf.load(overrides)) if overrides.is_file() else []


def read_metrics(path: Path) -> pd.DataFrame:
    """Epoch rows of a metrics.csv. A last line cut short (a run killed while writing it) is
    left out; a missing or empty file gives no rows."""
    empty = pd.DataFrame(columns=["epoch", *SPLITS_METRICS])
    try:
        text = path.read_text()
    except FileNotFoundError:
        return empty
    text = text[: text.rfind("\n") + 1]  # rows always end with a newline
    try:
        frame = pd.read_csv(io.StringIO(text), on_bad_lines="skip")
    except pd.errors.EmptyDataError:
        return empty
    if not {"epoch", *SPLITS_METRICS} <= set(frame.columns):
        return empty
    frame = frame.apply(pd.to_numeric, errors="coerce")
    return frame.dropna(subset=["epoch"]).astype({"epoch": int}).reset_index(drop=True)


@dataclass
class RunRecord:
    """One run folder as read from disk."""

    path: Path
    summary: dict[str, Any] | None
    metrics: pd.DataFrame
    config: dict[str, Any]
    choices: dict[str, str]
    overrides: list[str]
    problems: list[str] = field(default_factory=list)

    @property
    def command(self) -> str:
        """The command line that re-runs this run."""
        return (self.summary or {}).get("command") or rerun_command(self.overrides)

    @property
    def status(self) -> str:
        if self.summary is None:
            return "running"
        return self.summary.get("status", "running")


def read_run(path: Path) -> RunRecord:
    problems = []
    summary = None
    if (path / SUMMARY_FILE).is_file():
        try:
            summary = read_json(path / SUMMARY_FILE)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            problems.append(f"summary.json unreadable ({error})")
    else:
        problems.append("no summary.json: still running, or stopped before it was written")
    metrics = read_metrics(path / METRICS_FILE)
    if metrics.empty:
        reason = "missing" if not (path / METRICS_FILE).is_file() else "has no complete epoch"
        problems.append(f"metrics.csv {reason}")
    try:
        config = read_config(path)
    except Exception as error:  # a broken YAML file must not stop the whole report
        config, problems = {}, [*problems, f"config unreadable ({error})"]
    return RunRecord(
        path,
        summary,
        metrics,
        config,
        read_choices(path, summary),
        read_overrides(path, summary),
        problems,
    )


# ------------------------------------------------------------------------------ analysis


def _ratio(new: float, old: float) -> float:
    """new / old for losses >= 0, where a loss may be exactly 0 (an easy problem learnt)."""
    if old > 0:
        return new / old
    return 1.0 if new == old else math.inf


def diagnose(metrics: pd.DataFrame, settings: ReportSettings) -> tuple[str, str]:
    """(`underfit` | `overfit` | `good fit`, the reason in words) for a run's epoch rows.

    - underfit: last train accuracy below `underfit_train_acc`; or validation loss still fell
      by more than `converge_tol` over the last `converge_window` of the epochs (not converged);
    - overfit: last validation loss at least `overfit_rise` above its minimum, reached before the
      last epoch, while training loss kept falling after that minimum;
    - good fit: otherwise.
    """
    val = metrics["val_loss"].to_numpy(float)
    train = metrics["train_loss"].to_numpy(float)
    train_acc = metrics["train_acc"].to_numpy(float)
    epochs = len(val)
    best_at = best_epoch(list(val))
    if best_at is None:
        return "no data", "no finite validation loss"
    best = best_at - 1  # index of the best epoch
    if train_acc[-1] < settings.underfit_train_acc:
        return "underfit", (
            f"train acc {train_acc[-1]:.1%} < {settings.underfit_train_acc:.0%} after {epochs} "
            f"epochs (val acc {metrics['val_acc'].iloc[-1]:.1%})"
        )
    rise = _ratio(val[-1], val[best]) - 1
    if best < epochs - 1 and rise >= settings.overfit_rise and train[-1] < train[best]:
        return "overfit", (
            f"val loss +{rise:.0%} after epoch {best + 1} while train loss fell "
            f"{1 - train[-1] / train[best]:.0%}"
        )
    if epochs < 3:
        return "underfit", f"only {epochs} epoch(s): too few to have converged"
    window = max(2, math.ceil(epochs * settings.converge_window))
    start = max(0, epochs - 1 - window)
    fall = 1 - _ratio(val[-1], val[start])
    if fall > settings.converge_tol:
        return "underfit", (
            f"not converged: val loss still fell {fall:.1%} over the last {epochs - 1 - start} "
            "epochs (train longer)"
        )
    return "good fit", (
        f"val loss {rise:+.1%} from its minimum at epoch {best + 1}; "
        f"train acc {train_acc[-1]:.1%}, val acc {metrics['val_acc'].iloc[-1]:.1%}"
    )


def layer_frame(metrics: pd.DataFrame) -> pd.DataFrame:
    """The per-layer diagnostics of `metrics.csv` in tidy form: one row per (epoch, layer) with
    `layer` (1, 2, ... then `out`), `depth_index` (1 for the first layer) and one column per
    measure (`grad_norm`, `act_mean`, `act_std`, `dead`, `saturated`, where measured)."""
    matches = [(c, LAYER_COLUMN.match(c)) for c in metrics.columns]
    columns = [(c, m.group(1), m.group(2)) for c, m in matches if m]
    if not columns:
        return pd.DataFrame(columns=["epoch", "layer", "depth_index", *LAYER_MEASURES])
    long = metrics.melt(id_vars="epoch", value_vars=[c for c, _, _ in columns])
    lookup = {c: (measure, layer) for c, measure, layer in columns}
    long["measure"] = long["variable"].map(lambda c: lookup[c][0])
    long["layer"] = long["variable"].map(lambda c: lookup[c][1])
    tidy = long.pivot_table(
        index=["epoch", "layer"], columns="measure", values="value", dropna=False
    ).reset_index()
    hidden = sorted({int(layer) for layer in tidy["layer"] if layer != "out"})
    order = {str(i): i for i in hidden} | {"out": len(hidden) + 1}
    tidy["depth_index"] = tidy["layer"].map(order)
    tidy.columns.name = None
    measures = [m for m in LAYER_MEASURES if m in tidy.columns]
    return tidy.sort_values(["epoch", "depth_index"])[["epoch", "layer", "depth_index", *measures]]


def gradient_flags(
    metrics: pd.DataFrame, layers: pd.DataFrame, best: int | None, settings: ReportSettings
) -> dict[str, Any]:
    """First-to-last layer gradient-norm ratios at the first and best epochs, the largest global
    norm and clip fraction, and a flag: `vanishing gradients`, `exploding gradients` or ``."""
    flags: dict[str, Any] = {
        "grad_ratio_first": np.nan,
        "grad_ratio_best": np.nan,
        "max_grad_norm": np.nan,
        "max_clip_fraction": np.nan,
        "gradient_flag": "",
    }
    if layers.empty or "grad_norm" not in layers.columns:
        return flags

    def ratio(epoch: int | None) -> float:
        at = layers[layers["epoch"] == epoch].set_index("depth_index")["grad_norm"]
        if len(at) < 2:  # a linear classifier has one layer: no flow to measure
            return np.nan
        return float(at.iloc[0] / at.iloc[-1]) if at.iloc[-1] > 0 else np.nan

    flags["grad_ratio_first"] = ratio(int(metrics["epoch"].iloc[0]))
    flags["grad_ratio_best"] = ratio(best)
    if "grad_norm_total" in metrics.columns:
        flags["max_grad_norm"] = float(metrics["grad_norm_total"].max())
        flags["max_clip_fraction"] = float(metrics["clip_fraction"].max())
    smallest = np.nanmin([flags["grad_ratio_first"], flags["grad_ratio_best"], np.inf])
    if smallest < settings.vanishing_ratio:
        flags["gradient_flag"] = "vanishing gradients"
    elif flags["max_grad_norm"] > settings.exploding_norm or flags["max_clip_fraction"] > 0.5:
        flags["gradient_flag"] = "exploding gradients"
    return flags


def _short(key: str) -> str:
    return {"trainer.seed": "seed", "data.fold": "fold"}.get(key, key)


def value_text(value: Any) -> str:
    """A config value as the command line writes it: `null` for a missing or null value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "null"
    return str(value)


def _as_text(configs: pd.DataFrame) -> pd.DataFrame:
    """Every value as its text, missing ones included, so that they compare."""
    return configs.map(value_text)


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


def _run_ids(paths: Sequence[Path]) -> list[str]:
    """Short unique names: each run folder's path below the folders' common parent."""
    if len(paths) == 1:
        return [paths[0].name]
    common = os.path.commonpath(paths)
    return [str(p.relative_to(common)) for p in paths]


def _metric_at(metrics: pd.DataFrame, epoch: int | None, prefix: str) -> dict[str, float]:
    if epoch is None:
        return {f"{prefix}_{m}": np.nan for m in SPLITS_METRICS}
    row = metrics.loc[metrics["epoch"] == epoch].iloc[0]
    return {f"{prefix}_{m}": float(row[m]) for m in SPLITS_METRICS}


@dataclass
class Report:
    """Everything a report shows, as frames; `write_report` turns it into files."""

    runs: pd.DataFrame  # one row per run
    curves: pd.DataFrame  # run, epoch, split, metric, value (+ varying keys, label)
    layers: pd.DataFrame  # run, epoch, layer, grad_norm, act_mean, act_std, dead, saturated
    configs: pd.DataFrame  # run x every flattened config key and group choice
    varying: list[str]
    groups: pd.DataFrame | None  # mean/std over replicate keys, when one varies
    replicate_keys: list[str]
    skipped: list[tuple[str, str]]  # (run, why) for runs left out of the charts
    settings: ReportSettings
    sources: list[str]
    shared_config: dict[str, Any]  # the config keys every run has in common, nested


def collect(paths: Iterable[str | Path], settings: ReportSettings | None = None) -> Report:
    """Read every run folder in or under `paths` into a `Report`."""
    settings = settings or ReportSettings()
    run_dirs = find_run_dirs(paths)
    records = [read_run(p) for p in run_dirs]
    ids = _run_ids(run_dirs)
    configs = pd.DataFrame(
        [{**r.choices, **flatten_config(r.config)} for r in records],
        index=pd.Index(ids, name="run"),
    )
    varying = varying_keys(configs)
    rows, curves, layers, skipped = [], [], [], []
    for run_id, record in zip(ids, records, strict=True):
        run_layers = layer_frame(record.metrics)
        row = _run_row(run_id, record, configs.loc[run_id], varying, settings, run_layers)
        rows.append(row)
        if record.metrics.empty:
            skipped.append((run_id, "; ".join(record.problems)))
            continue
        keys = {"run": run_id, "label": row["label"], **{k: row[k] for k in varying}}
        long = record.metrics.melt(id_vars="epoch", value_vars=list(SPLITS_METRICS))
        long[["split", "metric"]] = long.pop("variable").str.split("_", n=1, expand=True)
        curves.append(long.assign(**keys))
        if not run_layers.empty:
            layers.append(run_layers.assign(**keys))
    runs = pd.DataFrame(rows)
    curve_columns = ["run", "label", *varying, "epoch", "split", "metric", "value"]
    curves_frame = (
        pd.concat(curves, ignore_index=True)[curve_columns]
        if curves
        else pd.DataFrame(columns=curve_columns)
    )
    layer_columns = ["run", "label", *varying, "epoch", "layer", "depth_index", *LAYER_MEASURES]
    layers_frame = (
        pd.concat(layers, ignore_index=True) if layers else pd.DataFrame(columns=layer_columns)
    )
    layers_frame = layers_frame[[c for c in layer_columns if c in layers_frame.columns]]
    replicates = [k for k in REPLICATE_KEYS if k in varying]
    groups = aggregate_replicates(runs, varying, replicates) if replicates else None
    shared = shared_config(records[0].config, configs)
    return Report(
        runs,
        curves_frame,
        layers_frame,
        configs,
        varying,
        groups,
        replicates,
        skipped,
        settings,
        [display_path(p) for p in run_dirs],
        shared,
    )


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


def _run_row(
    run_id: str,
    record: RunRecord,
    config: pd.Series,
    varying: list[str],
    settings: ReportSettings,
    layers: pd.DataFrame,
) -> dict[str, Any]:
    summary = record.summary or {}
    metrics = record.metrics
    label = " ".join(f"{_short(k)}={value_text(config[k])}" for k in varying) or run_id
    row: dict[str, Any] = {"run": run_id, "label": label, **{k: config[k] for k in varying}}
    row["status"] = record.status
    if record.status in ("diverged", "failed"):
        row["diagnosis"] = record.status
        row["reason"] = summary.get("error") or record.status
    elif metrics.empty:
        row["diagnosis"] = "no data"
        row["reason"] = "; ".join(record.problems)
    else:
        row["diagnosis"], row["reason"] = diagnose(metrics, settings)
        if record.status == "running":
            row["reason"] += (
                " (unfinished: " + "; ".join(record.problems or ["status running"]) + ")"
            )
    losses, epochs = list(metrics["val_loss"]), list(metrics["epoch"])

    def epoch_at(index: int | None) -> int | None:  # 1-based row index -> epoch number
        return None if index is None else int(epochs[index - 1])

    stop_index = early_stopping_epoch(losses, settings.patience, settings.min_delta) or None
    best = epoch_at(best_epoch(losses))
    row.update(
        best_epoch=best,
        early_stopping_epoch=epoch_at(stop_index),
        restored_epoch=epoch_at(best_epoch(losses[:stop_index])),
        epochs_run=len(metrics),
    )
    last = epochs[-1] if epochs else None
    row.update(_metric_at(metrics, best, "best"))
    row.update(_metric_at(metrics, last, "last"))
    row.update(gradient_flags(metrics, layers, best, settings))
    test_best, test_last = summary.get("test_best") or {}, summary.get("test_last") or {}
    row.update(
        test_loss=test_best.get("loss", np.nan),
        test_acc=test_best.get("acc", np.nan),
        last_test_loss=test_last.get("loss", np.nan),
        last_test_acc=test_last.get("acc", np.nan),
        gap_loss=row["best_val_loss"] - row["best_train_loss"],
        gap_acc=row["best_train_acc"] - row["best_val_acc"],
        params=summary.get("params", np.nan),
        wall_time_s=summary.get("wall_time_s", np.nan),
        samples_per_s=summary.get("samples_per_s", np.nan),
        command=record.command,
        path=display_path(record.path),
    )
    return row


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


def aggregate_replicates(
    runs: pd.DataFrame, varying: list[str], replicates: list[str]
) -> pd.DataFrame:
    """Mean and std of the main results over the replicate keys (seeds, folds), per setup."""
    setup = [k for k in varying if k not in replicates]
    done = runs[runs["status"] == "completed"]
    grouped = (
        done.groupby(setup, dropna=False, sort=False) if setup else done.groupby(lambda _: "all")
    )
    stats = grouped[list(AGGREGATED)].agg(["mean", "std"])
    stats.columns = [f"{metric}_{stat}" for metric, stat in stats.columns]
    stats.insert(0, "n", grouped.size())
    return stats.reset_index() if setup else stats.reset_index(drop=True)


# -------------------------------------------------------------------------------- diff


def diff_runs(run_a: str | Path, run_b: str | Path) -> str:
    """The config keys that differ between two runs (group choices with the leaves under them),
    and the command that re-runs each."""
    records = [read_run(Path(p)) for p in (run_a, run_b)]
    for path, record in zip((run_a, run_b), records, strict=True):
        if not record.config:
            raise ReportError(f"{path}: no config.yaml or .hydra/config.yaml: not a run folder")
    flats = [flatten_config(r.config) for r in records]
    choices = [r.choices for r in records]
    absent = "(absent)"

    def changed(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
        return sorted(
            k
            for k in set(a) | set(b)
            if not is_display_key(k) and a.get(k, absent) != b.get(k, absent)
        )

    def arrow(key: str, a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
        return f"{key}: {a.get(key, absent)} → {b.get(key, absent)}"

    lines = []
    leaves = changed(*flats)
    for group in changed(*choices):
        lines.append(arrow(group, *choices))
        lines += ["  " + arrow(k, *flats) for k in leaves if k.split(".")[0] == group]
        leaves = [k for k in leaves if k.split(".")[0] != group]
    lines += [arrow(k, *flats) for k in leaves]
    if not lines:
        lines.append("the resolved configs are identical")
    for name, path, record in zip("AB", (run_a, run_b), records, strict=True):
        lines.append(f"re-run {name} ({path}): {record.command}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- the report folder


def default_report_name(paths: Sequence[str | Path]) -> str:
    """The first folder's name, with its date folder when it sits in one: 2026-11-26_14-03-12.1"""
    first = Path(paths[0]).resolve()
    name = first.name
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", first.parent.name):
        name = f"{first.parent.name}_{name}"
    elif first.name.isdigit() and re.fullmatch(r"[\d.-]+", first.parent.name):  # a run folder
        name = f"{first.parent.parent.name}_{first.parent.name}_{name}"
    return name + (f"_and_{len(paths) - 1}_more" if len(paths) > 1 else "")


def build_report(
    paths: Sequence[str | Path],
    out_dir: str | Path = "reports",
    name: str | None = None,
    settings: ReportSettings | Mapping[str, Any] | None = None,
    force: bool = False,
) -> Path:
    """Collect the runs in `paths` and write the report to `out_dir/name`; return that folder.

    Refuses to overwrite a report of other runs unless `force`.
    """
    from fitscope.render import write_report  # matplotlib is imported only to draw

    if not paths:
        raise ReportError("no folders given: pass sweep folders or run folders")
    if not isinstance(settings, ReportSettings):
        settings = ReportSettings.from_mapping(settings)
    report = collect(paths, settings)
    folder = Path(out_dir) / (name or default_report_name(paths))
    sources_file = folder / SOURCES_FILE
    if sources_file.is_file() and not force:
        previous = read_json(sources_file).get("runs", [])
        if previous and not set(previous) <= set(report.sources):
            raise ReportError(
                f"{folder} holds a report of other runs; choose another name (--name, or "
                "report.name=) or pass --force to replace it"
            )
    folder.mkdir(parents=True, exist_ok=True)
    write_report(report, folder)
    sources_file.write_text(json.dumps({"runs": report.sources}, indent=2) + "\n")
    return folder


def report_command(sweep_dir: str | Path) -> str:
    return f"python src/report.py {shlex.quote(str(sweep_dir))}"


class ReportCallback(Callback):
    """Builds `reports/<sweep name>/` when a multirun ends (`report.enabled`).

    Hydra skips `on_multirun_end` when a job raised; the callback then prints, as the process
    exits, the command that builds the report from the folders on disk.
    """

    def __init__(self) -> None:
        self._announced = False
        self._started = time.time()

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        self._started = time.time()

    def on_job_end(self, config: Any, job_return: Any, **kwargs: Any) -> None:
        from hydra.core.utils import JobStatus
        from hydra.types import RunMode

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
        kept = sum(1 for s in summaries if s.stat().st_mtime < self._started)
        if kept:  # a resumed sweep: their summary.json files were not touched by this sweep
            print(
                f"resume: {kept} of {len(summaries)} runs were already completed with the same "
                "config and were skipped"
            )
        report_cfg = config.get("report") or {}
        if not report_cfg.get("enabled", True):
            return
        try:
            folder = build_report(
                [sweep_dir], report_cfg.get("dir", "reports"), report_cfg.get("name"), report_cfg
            )
        except Exception as error:  # the runs are done: a report problem must not hide them
            log.error(f"report not built ({error}); build it with: {report_command(sweep_dir)}")
            return
        print(f"report: {folder / 'report.html'} (and report.md, runs.csv, curves.csv)")
