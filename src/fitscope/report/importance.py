"""Which config keys explain a metric, and how sure that is: W&B's parameter importance (a random
forest that predicts the metric from the keys, and a signed rank correlation), with permutation
importance instead of the forest's impurity importance, which favours keys with many values.

It is fitted on the *setups* (each the mean over its seeds and folds), not on runs, so that seed
noise is not mistaken for an effect. The importance of a key is how much the forest's squared
error grows when that key's values are shuffled, as a share of the metric's variance over the
setups, measured on the setups a forest did not train on (out of bag). A bootstrap over the
setups gives each number its 95% interval: a key that does nothing has an interval around 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

MIN_SETUPS = 8  # fewer setups than this: no importance (a forest would fit noise)
BOOTSTRAPS = 20
TREES = 16
SEED = 0  # the bootstrap and the forests are seeded: the same runs give the same importance
IMPORTANCE_COLUMNS = [
    "key",
    "importance",
    "importance_low",
    "importance_high",
    "rank_correlation",
    "rank_correlation_low",
    "rank_correlation_high",
    "numeric",
    "values",
    "setups",
]


def encode(values: pd.Series) -> tuple[np.ndarray, bool]:
    """A key's values as numbers for the forest: themselves when every one is a number (not a
    boolean), else their order of first appearance; and whether they were numbers (only then
    has the rank correlation a sign to read)."""
    items = list(values)
    if all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in items):
        return np.asarray(items, float), True
    codes = {v: i for i, v in enumerate(dict.fromkeys(map(str, items)))}
    return np.array([codes[str(v)] for v in items], float), False


def too_few(setups: int, keys: int, spread: float = 1.0) -> str | None:
    """Why importance is not estimated, or None; `spread`: the metric's variance over the
    setups."""
    if keys == 0:
        return "no key varies but seeds or folds"
    if not spread > 0:
        return "every setup has the same value of the metric: no key explains a difference"
    if setups < MIN_SETUPS:
        return (
            f"only {setups} setups: too few for a forest to tell which key explains the metric "
            f"(it needs {MIN_SETUPS} or more); read the key effects instead"
        )
    return None


def _oob_importance(
    x: np.ndarray, y: np.ndarray, sample: np.ndarray, rng: np.random.Generator, seed: int
) -> np.ndarray | None:
    """Per key, the growth of the squared error on the setups left out of `sample` when the key
    is shuffled among them, over the metric's variance; None when too few are left out."""
    from sklearn.ensemble import RandomForestRegressor  # a second or two to import

    left = np.setdiff1d(np.arange(len(y)), sample)
    if len(left) < 2:
        return None
    forest = RandomForestRegressor(n_estimators=TREES, random_state=seed, n_jobs=1)
    forest.fit(x[sample], y[sample])
    held = x[left]
    shuffled = [held]
    for key in range(x.shape[1]):
        copy = held.copy()
        copy[:, key] = rng.permutation(copy[:, key])
        shuffled.append(copy)
    predicted = forest.predict(np.vstack(shuffled)).reshape(len(shuffled), len(left))
    errors = ((predicted - y[left]) ** 2).mean(axis=1)
    return (errors[1:] - errors[0]) / np.var(y)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho: the correlation of the ranks (ties share their mean rank), as
    `scipy.stats.spearmanr` computes it; NaN when either side is constant."""
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    ranks_a = pd.Series(a).rank().to_numpy()
    ranks_b = pd.Series(b).rank().to_numpy()
    return float(np.corrcoef(ranks_a, ranks_b)[0, 1])


def key_importance(setups: pd.DataFrame, keys: Sequence[str], metric: str) -> pd.DataFrame:
    """`IMPORTANCE_COLUMNS` per key, most important first: importance (median over the
    bootstraps) and its 95% interval, the rank correlation of the metric with the key (numeric
    keys) and its interval, over the setups that have the metric."""
    rows = setups[np.isfinite(pd.to_numeric(setups[metric], errors="coerce"))]
    y = rows[metric].to_numpy(float)
    encoded = [encode(rows[k]) for k in keys]
    x = np.column_stack([e for e, _ in encoded]) if keys else np.zeros((len(y), 0))
    rng = np.random.default_rng(SEED)
    draws, correlations = [], []
    for b in range(BOOTSTRAPS):
        sample = rng.integers(0, len(y), len(y))
        found = _oob_importance(x, y, sample, rng, SEED + b)
        if found is not None:
            draws.append(found)
        correlations.append([_spearman(x[sample, j], y[sample]) for j in range(len(keys))])
    draws = np.array(draws).reshape(-1, len(keys))
    correlations = np.array(correlations)
    table = []
    for j, key in enumerate(keys):
        numeric = encoded[j][1]
        whole = _spearman(x[:, j], y) if numeric else math.nan
        spread = correlations[:, j][np.isfinite(correlations[:, j])] if numeric else []
        table.append(
            {
                "key": key,
                "importance": float(np.median(draws[:, j])) if len(draws) else math.nan,
                "importance_low": _quantile(draws[:, j], 0.025),
                "importance_high": _quantile(draws[:, j], 0.975),
                "rank_correlation": whole,
                "rank_correlation_low": _quantile(spread, 0.025),
                "rank_correlation_high": _quantile(spread, 0.975),
                "numeric": numeric,
                "values": int(rows[key].map(str).nunique()),
                "setups": len(y),
            }
        )
    frame = pd.DataFrame(table, columns=IMPORTANCE_COLUMNS)
    return frame.sort_values("importance", ascending=False, kind="stable").reset_index(drop=True)


def _quantile(values: Sequence[float], q: float) -> float:
    values = np.asarray(values, float)
    return float(np.quantile(values, q)) if len(values) else math.nan
