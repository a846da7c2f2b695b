"""Curves that scale: per group of runs (one value of `report.group_by`), the mean train and
validation curves with a band over the group's runs, its early-stopping epochs, and the best and
worst runs by the study's metric, drawn alone. The cost grows with the groups and epochs, not
the runs: each group is one array of runs x epochs."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from fitscope.config import show_value
from fitscope.report.frames import Report
from fitscope.report.study import key_values

BAND = (0.1, 0.9)  # the band: from the 10th to the 90th percentile of the group's runs
LEFT_OUT = ("diverged", "failed", "damaged")  # their blow-up would swamp the means
COLUMNS = ("train_loss", "val_loss", "train_acc", "val_acc")
GROUP_CURVE_COLUMNS = ["group", "column", "epoch", "mean", "low", "high", "runs"]


def group_of(report: Report, key: str | None) -> pd.Series:
    """Each run's group: its value of `key` as the command line writes it, or `all runs`."""
    if key is None:
        return pd.Series("all runs", index=report.runs.index)
    return report.runs[key].map(show_value)


def group_order(report: Report, key: str | None) -> list[str]:
    if key is None:
        return ["all runs"]
    runs = report.runs[report.runs["status"] != "damaged"]
    return [show_value(v) for v in key_values(runs[key])]


def flagged_spread(report: Report) -> list[int]:
    """The positions of the flagged runs, each kind of flag and each setup before any repeats:
    the first dozen then show every kind of trouble the sweep has, not one setup's seeds."""
    runs = report.runs
    flags = runs["flag"].fillna("").astype(str)
    flagged = runs[flags != ""]
    if flagged.empty:
        return []
    keys = [k for k in report.varying if k not in report.replicate_keys and k in runs]
    setup = flagged[keys].map(show_value).agg(" ".join, axis=1) if keys else ""
    kind = flags[flagged.index].str.split(" (", n=1, regex=False).str[0]
    positions = [runs.index.get_loc(i) for i in flagged.index]
    frame = pd.DataFrame({"kind": kind, "setup": setup, "position": positions})
    # the first run of each kind's first setup, then of each kind's second setup, ...; a
    # setup's further runs (its other seeds) only after every setup has had one
    frame["repeat"] = frame.groupby(["kind", "setup"], sort=False).cumcount()
    first_seen = frame.groupby("kind", sort=False)["setup"].transform(lambda s: s.factorize()[0])
    frame["setup_rank"] = first_seen
    frame["kind_rank"] = frame["kind"].factorize()[0]
    order = frame.sort_values(["repeat", "setup_rank", "kind_rank"], kind="stable")
    return [int(p) for p in order["position"]]


def _table(epochs: pd.DataFrame, column: str, runs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(epochs, values[runs x epochs]) of `column` for the runs at positions `runs`."""
    rows = epochs[epochs["run"].isin(runs)]
    epoch_values, epoch_codes = np.unique(rows["epoch"].to_numpy(), return_inverse=True)
    run_codes = np.searchsorted(np.sort(runs), rows["run"].to_numpy())
    table = np.full((len(runs), len(epoch_values)), np.nan)
    table[run_codes, epoch_codes] = rows[column].to_numpy(float)
    return epoch_values, table


def group_curves(report: Report, key: str | None) -> pd.DataFrame:
    """`GROUP_CURVE_COLUMNS`: per group, metrics.csv column and epoch, the mean over the group's
    runs (`LEFT_OUT` runs aside), the band's ends and how many runs have the epoch; up to the
    last epoch that at least half of the group's runs reached."""
    groups = group_of(report, key)
    status = report.runs["status"]
    frames = []
    for group in group_order(report, key):
        runs = np.flatnonzero((groups == group).to_numpy() & ~status.isin(LEFT_OUT).to_numpy())
        if not len(runs):
            continue
        for column in COLUMNS:
            if column not in report.epochs:
                continue
            epochs, table = _table(report.epochs, column, runs)
            count = np.isfinite(table).sum(axis=0)
            keep = count >= max(1, len(runs) / 2)
            if not keep.any():
                continue
            with warnings.catch_warnings():  # an epoch no run has: NaN, no warning
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(table, axis=0)
                low, high = np.nanquantile(table, BAND, axis=0)
            frames.append(
                pd.DataFrame(
                    {
                        "group": group,
                        "column": column,
                        "epoch": epochs[keep],
                        "mean": mean[keep],
                        "low": low[keep],
                        "high": high[keep],
                        "runs": count[keep],
                    }
                )
            )
    if not frames:
        return pd.DataFrame(columns=GROUP_CURVE_COLUMNS)
    return pd.concat(frames, ignore_index=True)[GROUP_CURVE_COLUMNS]


def extremes(report: Report, key: str | None, metric: str, lower: bool, k: int) -> pd.DataFrame:
    """Per group, its best and worst `k` completed runs by `metric`: their rows of `runs` with
    `group`, `rank` (`best 1`, ..., `worst 1`, ...) and `position`."""
    groups = group_of(report, key)
    runs = report.runs.assign(group=groups, position=np.arange(len(report.runs)))
    scores = pd.to_numeric(runs[metric], errors="coerce")
    scored = runs[(runs["status"] == "completed") & scores.notna()]
    picked = []
    for group in group_order(report, key):
        mine = scored[scored["group"] == group].sort_values(metric, ascending=lower, kind="stable")
        if len(mine) <= 2 * k:
            continue  # a small group: every run is one of its best or worst
        for i in range(k):
            picked.append(mine.iloc[i].to_dict() | {"rank": f"best {i + 1}"})
            picked.append(mine.iloc[-1 - i].to_dict() | {"rank": f"worst {i + 1}"})
    return pd.DataFrame(picked)


def stopping(report: Report, key: str | None) -> pd.DataFrame:
    """Per group: the early-stopping epochs' median, range and how many runs never stop."""
    groups = group_of(report, key)
    runs = report.runs[report.runs["best_epoch"].notna()].assign(group=groups)
    rows = []
    for group in group_order(report, key):
        mine = runs[runs["group"] == group]
        stops = pd.to_numeric(mine["early_stopping_epoch"], errors="coerce").dropna()
        rows.append(
            {
                "group": group,
                "median": stops.median() if len(stops) else np.nan,
                "first": stops.min() if len(stops) else np.nan,
                "last": stops.max() if len(stops) else np.nan,
                "never": len(mine) - len(stops),
                "runs": len(mine),
            }
        )
    return pd.DataFrame(rows)
