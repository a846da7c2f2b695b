"""A sweep read as a study of its keys: the setups (runs that differ only in seed or fold,
averaged), the results matrix of two keys, each key's effect averaged over the others, which
keys matter (`fitscope.report.importance`) and the findings in a few sentences.

Every view here is a frame first; `fitscope.report.views` draws them and `build` writes them
beside the report (setups.csv, matrix.csv, effects.csv, importance.csv).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fitscope.config import show_value
from fitscope.report.frames import SHORT_NAMES, Report
from fitscope.report.importance import key_importance, too_few
from fitscope.report.stats import group_intervals, t_interval

# The metric a report ranks setups by (`report.metric`): its words and whether lower is better.
METRICS = {
    "best_val_loss": ("best validation loss", True),
    "best_val_acc": ("best validation accuracy", False),
    "test_acc": ("test accuracy", False),
    "test_loss": ("test loss", True),
}
MAX_FACETS = 12  # more combinations of the other keys than this: the matrix averages over them
CAPACITY_KEYS = ("model.depth", "model.width")
MARKED = ("overfit", "underfit", "not converged", "diverged", "failed", "stuck")


def is_accuracy(metric: str) -> bool:
    return metric.endswith("acc")


def format_metric(value: float, metric: str) -> str:
    """A metric as the report writes it: accuracy in percent, a loss to 3 significant digits."""
    if value is None or not np.isfinite(value):
        return "n/a"
    return f"{100 * value:.1f}%" if is_accuracy(metric) else f"{value:.3g}"


def run_verdict(runs: pd.DataFrame) -> pd.Series:
    """Each run's verdict in one word for marks and counts: `stuck` where it is stuck at chance,
    else its diagnosis (`overfit`, `good fit`, `diverged`, ...)."""
    stuck = runs["flag"].fillna("").astype(str).str.startswith("stuck")
    return runs["diagnosis"].where(~stuck, "stuck")


def verdict_mark(verdicts: pd.Series) -> str:
    """What a cell of runs says of their fit: the commonest verdict, with its count when not
    every run shares it (`overfit 2/3`); empty for `good fit` runs alone."""
    counts = verdicts.value_counts()
    if counts.empty:
        return ""
    word, count = counts.index[0], int(counts.iloc[0])
    if word == "good fit" and count == len(verdicts):
        return ""
    return word if count == len(verdicts) else f"{word} {count}/{len(verdicts)}"


def setup_name(values: dict) -> str:
    """`activation=relu model.depth=2`, as run labels write a setup's values."""
    return " ".join(f"{SHORT_NAMES.get(k, k)}={show_value(v)}" for k, v in values.items())


def key_values(values: pd.Series) -> list:
    """A key's distinct values in the order a reader expects: numbers ascending, else as the
    sweep first ran them."""
    unique = list(dict.fromkeys(values.tolist()))
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in unique):
        return sorted(unique)
    return unique


@dataclass
class Study:
    """The study views of a report, as frames."""

    metric: str
    keys: list[str]  # the setup keys: varying keys but seeds and folds
    setups: pd.DataFrame  # one row per setup
    effects: pd.DataFrame  # key, value, mean and interval of the metric averaged over the others
    importance: pd.DataFrame | None
    importance_note: str | None  # why there is no importance
    ranked: list[str]  # the setup keys, the one that matters most first
    matrix: pd.DataFrame | None = None
    matrix_axes: tuple[str, str | None, list[str], list[str]] | None = None  # row, col, facets,
    # keys averaged over
    findings: list[str] = field(default_factory=list)

    @property
    def lower_is_better(self) -> bool:
        return METRICS[self.metric][1]

    @property
    def metric_words(self) -> str:
        return METRICS[self.metric][0]


def _codes(runs: pd.DataFrame, keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """A code per run for its values of `keys` (0 for the first combination met, ...), and the
    position of each code's first run."""
    if not keys:
        return np.zeros(len(runs), int), np.zeros(1 if len(runs) else 0, int)
    text = list(zip(*(runs[k].map(show_value).tolist() for k in keys), strict=True))
    codes, uniques = pd.factorize(pd.Series(text, dtype=object))
    first = pd.Series(np.arange(len(runs))).groupby(codes).first().to_numpy()
    return codes, first


def _analysed(report: Report) -> pd.DataFrame:
    """The runs a study reads (damaged ones aside), with each one's one-word verdict."""
    runs = report.runs[report.runs["status"] != "damaged"].reset_index(drop=True)
    return runs.assign(_verdict=run_verdict(runs), _done=runs["status"].eq("completed"))


def setups_frame(report: Report, metric: str) -> pd.DataFrame:
    """One row per setup (the runs that differ only in seed or fold): its keys, `setup` (its
    name), `runs`, `completed`, the mean, std and 95% interval of `metric` over its completed
    runs (`n` of them), the means of the other results, `verdict` (`verdict_mark`) and
    `run_ids`."""
    keys = [k for k in report.varying if k not in report.replicate_keys]
    runs = _analysed(report)
    codes, first = _codes(runs, keys)
    done = runs["_done"]
    grouped = group_intervals(runs[metric].where(done), codes)
    frame = runs[keys].iloc[first].reset_index(drop=True)
    frame.insert(0, "setup", [setup_name(r) or "all runs" for r in frame.to_dict("records")])
    counts = pd.Series(codes).value_counts().sort_index()
    frame["runs"] = counts.to_numpy()
    frame["completed"] = done.groupby(codes).sum().to_numpy()
    for column in ("mean", "std", "ci_low", "ci_high", "n"):
        frame[column] = grouped[column].to_numpy()
    for other in ("best_val_loss", "best_val_acc", "test_acc", "last_train_loss", "params"):
        values = pd.to_numeric(runs[other], errors="coerce").where(done)
        frame[other] = values.groupby(codes).mean().to_numpy()
    stops = pd.to_numeric(runs["early_stopping_epoch"], errors="coerce").where(done)
    frame["early_stopping_epoch"] = stops.groupby(codes).median().to_numpy()
    frame["verdict"] = runs["_verdict"].groupby(codes).agg(verdict_mark).to_numpy()
    frame["run_ids"] = runs["run"].astype(str).groupby(codes).agg(" ".join).to_numpy()
    return frame[[*keys, *[c for c in frame.columns if c not in keys]]]


def effects_frame(setups: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Per key and value: the metric's mean over the setups with that value (each averaged over
    its seeds), and its 95% interval over those setups, or over the runs where one setup has
    the value (`interval_over`)."""
    rows = []
    for key in keys:
        text = setups[key].map(show_value)
        for value in key_values(setups[key]):
            mine = setups[text == show_value(value)]
            means = mine["mean"].dropna()
            if len(means) >= 2:
                low, high, over = *t_interval(means), "setups"
            elif len(mine) == 1 and mine["n"].iloc[0] >= 2:
                low, high, over = mine["ci_low"].iloc[0], mine["ci_high"].iloc[0], "seeds"
            else:
                low, high, over = math.nan, math.nan, ""
            rows.append(
                {
                    "key": key,
                    "value": show_value(value),
                    "setups": len(mine),
                    "runs": int(mine["runs"].sum()),
                    "mean": means.mean() if len(means) else math.nan,
                    "ci_low": low,
                    "ci_high": high,
                    "interval_over": over,
                }
            )
    return pd.DataFrame(
        rows,
        columns=["key", "value", "setups", "runs", "mean", "ci_low", "ci_high", "interval_over"],
    )


def rank_keys(effects: pd.DataFrame, importance: pd.DataFrame | None, keys: list[str]) -> list:
    """The setup keys, the one that matters most first: by importance where it was estimated,
    else by how far apart the key's effects lie."""
    if importance is not None and len(importance):
        return importance["key"].tolist()
    spread = {
        key: np.ptp(means) if len(means := group["mean"].dropna()) else 0.0
        for key, group in effects.groupby("key", sort=False)
    }
    return sorted(keys, key=lambda k: -float(spread.get(k, 0.0)))


def matrix_axes(
    ranked: list[str], setups: pd.DataFrame, chosen: Sequence[str] | None
) -> tuple[str, str | None, list[str], list[str]] | None:
    """(row key, column key, facet keys, keys averaged over): `chosen` (`report.matrix`) or the
    two keys that matter most; further keys are facets unless they make more than
    `MAX_FACETS` panels, when the matrix averages over them."""
    axes = list(chosen) if chosen else ranked[:2]
    if not axes:
        return None
    rest = [k for k in ranked if k not in axes]
    combinations = len(setups[rest].map(show_value).drop_duplicates()) if rest else 1
    facets, averaged = (rest, []) if combinations <= MAX_FACETS else ([], rest)
    return axes[0], (axes[1] if len(axes) > 1 else None), facets, averaged


def matrix_frame(report: Report, setups: pd.DataFrame, axes: tuple, metric: str) -> pd.DataFrame:
    """One row per cell: facet (`key=value ...`), row and column values, the metric's mean over
    the cell's completed runs, its 95% interval (over the runs' seeds where the cell is one
    setup, over its setups where it averages several), `n` runs, and the verdict mark."""
    row_key, col_key, facets, _ = axes
    runs = _analysed(report)
    parts = [k for k in (*facets, row_key, col_key) if k]
    codes, first = _codes(runs, parts)
    over_runs = group_intervals(runs[metric].where(runs["_done"]), codes)
    setup_codes = _codes_like(setups, parts, runs, first)
    over_setups = group_intervals(setups["mean"], setup_codes).reindex(range(len(first)))
    several = pd.Series(setup_codes).value_counts().reindex(range(len(first))).fillna(0) > 1
    use = np.where(several.to_numpy(), "setups", "runs")
    text = runs[parts].iloc[first].map(show_value).reset_index(drop=True)
    return pd.DataFrame(
        {
            "facet": [" ".join(f"{k}={row[k]}" for k in facets) for row in text.to_dict("records")],
            "row": text[row_key],
            "column": text[col_key] if col_key else "",
            "mean": over_runs["mean"].to_numpy(),
            "ci_low": np.where(use == "setups", over_setups["ci_low"], over_runs["ci_low"]),
            "ci_high": np.where(use == "setups", over_setups["ci_high"], over_runs["ci_high"]),
            "n": over_runs["n"].to_numpy(),
            "runs": pd.Series(codes).value_counts().sort_index().to_numpy(),
            "verdict": runs["_verdict"].groupby(codes).agg(verdict_mark).to_numpy(),
        }
    )


def _codes_like(
    setups: pd.DataFrame, parts: list[str], runs: pd.DataFrame, first: np.ndarray
) -> np.ndarray:
    """Each setup's cell code, as `_codes` numbered the cells of `runs`."""
    cells = {
        tuple(row): i
        for i, row in enumerate(runs[parts].iloc[first].map(show_value).itertuples(index=False))
    }
    text = setups[parts].map(show_value).itertuples(index=False)
    return np.array([cells.get(tuple(row), -1) for row in text], int)


def study(report: Report, metric: str, matrix: Sequence[str] | None = None) -> Study:
    """The study views of `report`, ranked by `metric` (`METRICS`); `matrix`: the results
    matrix's two keys (`report.matrix`), by default the two that matter most."""
    keys = [k for k in report.varying if k not in report.replicate_keys]
    setups = setups_frame(report, metric)
    effects = effects_frame(setups, keys)
    scored = setups["mean"].dropna()
    note = too_few(len(scored), len(keys), float(np.var(scored)) if len(scored) else 0.0)
    importance = None if note else key_importance(setups, keys, "mean")
    ranked = rank_keys(effects, importance, keys)
    result = Study(metric, keys, setups, effects, importance, note, ranked)
    result.matrix_axes = matrix_axes(ranked, setups, matrix)
    if result.matrix_axes:
        result.matrix = matrix_frame(report, setups, result.matrix_axes, metric)
    return result
