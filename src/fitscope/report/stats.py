"""Seed statistics: how sure the report can be of a difference between setups.

A *setup* is one combination of the varying keys other than the replicate keys (`trainer.seed`,
`data.fold`); its completed runs are its replicates. Per setup, `interval_columns` gives a 95%
Student-t confidence interval of the mean of `best_val_loss`, `test_acc` and `best_epoch`
(mean ± t(0.975, n-1) · s/√n over the runs that have the value). `compare_setups` compares, for
each varying key, every pair of its values (a, b) at equal values of the other keys: the
difference b − a of the means, its 95% interval and a two-sided t-test p-value, paired by seed
(`scipy.stats.ttest_rel`) when both sides ran the same seeds, else Welch's unequal-variance test
(`scipy.stats.ttest_ind(equal_var=False)`); `holm` adjusts the p-values of all comparisons of one
metric for their number. Pure pandas, numpy and scipy: no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import special

from fitscope.config import show_value

CONFIDENCE = 0.95
ALPHA = 0.05  # significant: Holm-adjusted p below this
INTERVAL_METRICS = ("best_val_loss", "test_acc", "best_epoch")
COMPARED_METRICS = ("test_acc", "best_val_loss")
METRIC_WORDS = {"test_acc": "test accuracy", "best_val_loss": "best validation loss"}
REPLICATE_WORDS = {"trainer.seed": "seed", "data.fold": "fold"}
COMPARISON_COLUMNS = [
    "key",
    "a",
    "b",
    "at",
    "metric",
    "n_a",
    "n_b",
    "paired",
    "n_pairs",
    "diff",
    "ci_low",
    "ci_high",
    "p",
    "p_holm",
    "significant",
    "verdict",
]


def _finite(values: Any) -> np.ndarray:
    array = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(float)
    return array[np.isfinite(array)]


def _no_spread(values: np.ndarray) -> bool:
    """True when every value is the same (to rounding): a t statistic is then undefined."""
    scale = max(1.0, float(np.max(np.abs(values))))
    return bool(np.ptp(values) <= 1e-12 * scale)


def t_interval(values: Any, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Student-t confidence interval of the mean of the finite `values`: mean ± t · s/√n,
    t the (1 + confidence)/2 quantile with n - 1 degrees of freedom, s the sample std. (nan,
    nan) for fewer than 2 values; (mean, mean) when they are all equal. scipy's `t.interval`,
    computed with its quantile function directly (a thousand setups in milliseconds)."""
    x = _finite(values)
    if len(x) < 2:
        return np.nan, np.nan
    mean = float(np.mean(x))
    if _no_spread(x):
        return mean, mean
    scale = float(np.std(x, ddof=1) / np.sqrt(len(x)))
    low, high = special.stdtrit(len(x) - 1, [(1 - confidence) / 2, (1 + confidence) / 2])
    return mean + float(low) * scale, mean + float(high) * scale


def group_intervals(
    values: pd.Series, groups: np.ndarray, confidence: float = CONFIDENCE
) -> pd.DataFrame:
    """`t_interval` for each group of `values` at once (`groups`: a code per value, 0, 1, ...):
    columns `n`, `mean`, `std`, `ci_low`, `ci_high`, one row per code."""
    x = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").astype(float)
    x = x.where(np.isfinite(x.to_numpy()))
    table = x.groupby(np.asarray(groups)).agg(["count", "mean", "std", "min", "max"])
    n, mean, std = table["count"].to_numpy(float), table["mean"].to_numpy(), table["std"].to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = std / np.sqrt(n)
        low = mean + special.stdtrit(n - 1, (1 - confidence) / 2) * scale
        high = mean + special.stdtrit(n - 1, (1 + confidence) / 2) * scale
    size = np.maximum(1.0, np.fmax(table["max"].abs(), table["min"].abs()).to_numpy())
    flat = (table["max"] - table["min"]).to_numpy() <= 1e-12 * size
    low, high = np.where(flat, mean, low), np.where(flat, mean, high)
    few = n < 2
    return pd.DataFrame(
        {
            "n": n.astype(int),
            "mean": mean,
            "std": std,
            "ci_low": np.where(few, np.nan, low),
            "ci_high": np.where(few, np.nan, high),
        },
        index=table.index,
    )


def interval_columns(
    runs: pd.DataFrame,
    groups: np.ndarray,
    index: pd.Index,
    metrics: Sequence[str] = INTERVAL_METRICS,
) -> pd.DataFrame:
    """Per group of `runs` (`groups`: each run's group number, the groups in `index`'s order):
    `<metric>_n` (runs with a value), `<metric>_ci_low` and `<metric>_ci_high` (`t_interval`),
    for each of `metrics`."""
    columns = {}
    for metric in metrics:
        found = group_intervals(runs[metric], groups).reindex(range(len(index)))
        columns[f"{metric}_n"] = found["n"].fillna(0).astype(int).to_numpy()
        columns[f"{metric}_ci_low"] = found["ci_low"].to_numpy()
        columns[f"{metric}_ci_high"] = found["ci_high"].to_numpy()
    return pd.DataFrame(columns, index=index)


def interval_column_names(metrics: Sequence[str] = INTERVAL_METRICS) -> list[str]:
    """The columns `interval_columns` adds to groups.csv."""
    return [f"{m}_{part}" for m in metrics for part in ("n", "ci_low", "ci_high")]


def holm(pvalues: Any) -> np.ndarray:
    """Holm's step-down adjusted p-values (Holm 1979), in the input's order: sorted ascending,
    the i-th smallest (from 0) of m is multiplied by m - i, then made non-decreasing (each at
    least the one before it) and capped at 1. NaN stays NaN and does not count in m. Rejecting
    where the adjusted p is below alpha rejects exactly what Holm's procedure rejects."""
    p = np.asarray(pvalues, float)
    adjusted = np.full(p.shape, np.nan)
    tested = np.flatnonzero(np.isfinite(p))
    m = len(tested)
    if m == 0:
        return adjusted
    order = tested[np.argsort(p[tested], kind="stable")]
    steps = (m - np.arange(m)) * p[order]
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(steps))
    return adjusted


def compare_samples(a: Any, b: Any, paired: bool, confidence: float = CONFIDENCE) -> dict:
    """b − a: the mean difference, its confidence interval and the two-sided p-value. Paired
    (`a[i]` and `b[i]` from one seed; pairs with a missing value are dropped): a one-sample t-test
    of the differences (`scipy.stats.ttest_rel`). Unpaired: Welch's t-test of the two means
    (`scipy.stats.ttest_ind(equal_var=False)`). `status`: `tested`, `untested` (fewer than 2
    values, or pairs, on a side) or `no spread` (every difference, or every value on both
    sides, the same: t is undefined)."""
    a_values = a if isinstance(a, np.ndarray) and a.dtype == float else _numbers(a)
    b_values = b if isinstance(b, np.ndarray) and b.dtype == float else _numbers(b)
    if paired:
        both = np.isfinite(a_values) & np.isfinite(b_values)
        a_values, b_values = a_values[both], b_values[both]
    else:
        a_values, b_values = _finite(a_values), _finite(b_values)
    out = {
        "n_a": len(a_values),
        "n_b": len(b_values),
        "n_pairs": len(a_values) if paired else None,
        "diff": np.nan,
        "ci_low": np.nan,
        "ci_high": np.nan,
        "p": np.nan,
        "status": "untested",
    }
    if len(a_values) and len(b_values):
        out["diff"] = float(np.mean(b_values) - np.mean(a_values))
    if min(len(a_values), len(b_values)) < 2:
        return out
    if _no_spread(b_values - a_values) if paired else _no_spread(a_values) and _no_spread(b_values):
        return {**out, "status": "no spread"}
    diff, scale, df = _t_statistic(a_values, b_values, paired)
    t = diff / scale
    quantile = float(special.stdtrit(df, (1 + confidence) / 2))
    return {
        **out,
        "ci_low": float(diff - quantile * scale),
        "ci_high": float(diff + quantile * scale),
        "p": float(2 * special.stdtr(df, -abs(t))),
        "status": "tested",
    }


def _t_statistic(a: np.ndarray, b: np.ndarray, paired: bool) -> tuple[float, float, float]:
    """(mean difference b - a, its standard error, degrees of freedom) of the paired t-test
    (scipy's `ttest_rel`) or Welch's (`ttest_ind(equal_var=False)`): the same formulas, so
    that their p-values and intervals agree with scipy's to rounding."""
    if paired:
        d = b - a
        return float(np.mean(d)), float(np.std(d, ddof=1) / np.sqrt(len(d))), len(d) - 1
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    df = 1.0 if np.isnan(df) else float(df)
    return float(np.mean(b) - np.mean(a)), float(np.sqrt(va + vb)), df


def _text(runs: pd.DataFrame, keys: Sequence[str]) -> pd.Series:
    """Each run's values of `keys`, as the command line writes them, as a tuple."""
    if not keys:
        return pd.Series([()] * len(runs), index=runs.index, dtype=object)
    columns = [runs[k].map(show_value).tolist() for k in keys]
    return pd.Series(list(zip(*columns, strict=True)), index=runs.index, dtype=object)


def _replicate_word(replicates: Sequence[str], n: int) -> str:
    word = REPLICATE_WORDS.get(replicates[0], "replicate") if len(replicates) == 1 else "run"
    return word if n == 1 else word + "s"


def _number(value: float, metric: str, sign: bool = True) -> str:
    """A difference as the verdict writes it: accuracy in percentage points, loss to 4 places."""
    plus = "+" if sign else ""
    if metric.endswith("acc"):
        return f"{100 * value:{plus}.2f}"
    return f"{value:{plus}.4f}"


def p_text(p: float) -> str:
    return "" if not np.isfinite(p) else "<0.001" if p < 0.001 else f"{p:.2g}"


def verdict(row: dict, replicates: Sequence[str]) -> str:
    """One plain sentence: `relu vs selu: +0.40 pp test accuracy [-0.10, +0.90], not
    significant over 5 seeds (paired, Holm p=0.62)`."""
    metric = row["metric"]
    unit = " pp" if metric.endswith("acc") else ""
    at = f" at {row['at']}" if row["at"] else ""
    head = f"{row['a']} vs {row['b']}{at}: "
    words = METRIC_WORDS.get(metric, metric)
    diff = f"{_number(row['diff'], metric)}{unit} {words}" if np.isfinite(row["diff"]) else words
    if row["status"] == "untested":
        n = row["n_pairs"] if row["paired"] else min(row["n_a"], row["n_b"])
        return head + f"{diff}, untested (n={n})"
    if row["status"] == "no spread":
        seed = _replicate_word(replicates, 1)
        same = (
            f"every {seed} gives the same difference"
            if row["paired"]
            else (f"each side's {_replicate_word(replicates, 2)} give identical values")
        )
        return head + f"{diff}, untested: no spread ({same}, so t is undefined)"
    interval = f"[{_number(row['ci_low'], metric)}, {_number(row['ci_high'], metric)}]"
    outcome = "significant" if row["significant"] else "not significant"
    if row["paired"]:
        over = f"{row['n_pairs']} {_replicate_word(replicates, row['n_pairs'])} (paired"
    else:
        over = f"{row['n_a']} and {row['n_b']} {_replicate_word(replicates, 2)} (Welch"
    return head + f"{diff} {interval}, {outcome} over {over}, Holm p={p_text(row['p_holm'])})"


def _pairs(values: list[str]) -> list[tuple[str, str]]:
    return [(a, b) for i, a in enumerate(values) for b in values[i + 1 :]]


def _same_replicates(ids_a: np.ndarray, ids_b: np.ndarray) -> bool:
    """Both sides ran the same seeds (folds), each once: their runs match one to one."""
    unique_a, unique_b = set(ids_a), set(ids_b)
    return len(unique_a) == len(ids_a) and len(unique_b) == len(ids_b) and unique_a == unique_b


def _numbers(values: pd.Series) -> np.ndarray:
    """A column as floats, anything that is not a number NaN."""
    return pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(float)


def compare_setups(
    runs: pd.DataFrame,
    setup: Sequence[str],
    replicates: Sequence[str],
    metrics: Sequence[str] = COMPARED_METRICS,
) -> pd.DataFrame:
    """Every comparison of two values (a before b, in the runs' order) of each key in `setup` at
    equal values of the other setup keys (`at`), for each of `metrics`, over the completed runs:
    one row each, `COMPARISON_COLUMNS`. diff = mean(b) − mean(a), in the metric's unit (test_acc
    a fraction; the verdict writes percentage points); `p_holm` adjusts `p` over every tested row
    of the same metric; `significant`: p_holm < `ALPHA` (empty where untested)."""
    done = runs[runs["status"] == "completed"]
    rows = []
    replicate_ids = _text(done, replicates).map("|".join).to_numpy()
    values = {m: _numbers(done[m]) for m in metrics}
    for key in setup:
        others = [k for k in setup if k != key]
        own = done[key].map(show_value).to_numpy()
        for at, here in (
            _text(done, others).groupby(_text(done, others), sort=False).indices.items()
        ):
            at_text = " ".join(f"{k}={v}" for k, v in zip(others, at, strict=True))
            for a, b in _pairs(list(dict.fromkeys(own[here]))):
                side_a, side_b = here[own[here] == a], here[own[here] == b]
                ids_a, ids_b = replicate_ids[side_a], replicate_ids[side_b]
                paired = _same_replicates(ids_a, ids_b)
                if paired:  # b's runs in the order of a's seeds
                    order = {seed: i for i, seed in enumerate(ids_b)}
                    side_b = side_b[[order[seed] for seed in ids_a]]
                for metric in metrics:
                    result = compare_samples(values[metric][side_a], values[metric][side_b], paired)
                    rows.append(
                        {"key": key, "a": a, "b": b, "at": at_text, "metric": metric}
                        | {"paired": paired}
                        | result
                    )
    table = pd.DataFrame(rows, columns=[*COMPARISON_COLUMNS, "status"])
    table["p_holm"] = np.nan
    for metric in table["metric"].unique():
        mine = table["metric"] == metric
        table.loc[mine, "p_holm"] = holm(table.loc[mine, "p"].to_numpy(float))
    tested = table["status"] == "tested"
    table["significant"] = pd.array(
        [bool(p < ALPHA) if t else None for p, t in zip(table["p_holm"], tested, strict=True)],
        dtype="boolean",
    )
    for column in ("n_a", "n_b", "n_pairs"):
        table[column] = pd.array(
            [None if v is None or v != v else int(v) for v in table[column]], dtype="Int64"
        )
    table["paired"] = table["paired"].astype(bool)
    table["verdict"] = [verdict(row, replicates) for row in table.to_dict("records")]
    return table[COMPARISON_COLUMNS]
