"""What a sweep found, in a few generated sentences: the best setup with its interval over
seeds, the key that matters most, who over- or underfits and at what capacity, and where early
stopping would stop."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fitscope.config import show_value
from fitscope.report.frames import Report
from fitscope.report.stats import REPLICATE_WORDS
from fitscope.report.study import (
    CAPACITY_KEYS,
    Study,
    format_metric,
    key_values,
    run_verdict,
)

FIT_WORDS = (  # verdict, how a sentence names it, what it adds
    ("overfit", "Overfit", ""),
    ("underfit", "Underfit", ""),
    ("not converged", "Not converged", " (still improving at the last epoch: train longer)"),
    ("stuck", "Stuck at chance", ""),
    ("diverged", "Diverged", ""),
    ("failed", "Failed", ""),
)


def _interval(row: pd.Series, metric: str, word: str) -> str:
    """`0.191 (95% interval 0.185 to 0.197 over 3 seeds)`, or why there is no interval."""
    value = format_metric(row["mean"], metric)
    if not np.isfinite(row["ci_low"]):
        return f"{value} ({'one run: no interval' if row['n'] <= 1 else 'no interval'})"
    low, high = format_metric(row["ci_low"], metric), format_metric(row["ci_high"], metric)
    return f"{value} (95% interval {low} to {high} over {row['n']} {word}s)"


def best_setup(report: Report, found: Study) -> str | None:
    """The best setup by the study's metric, with its interval, and whether the runner-up's
    interval overlaps it."""
    scored = found.setups[found.setups["mean"].notna()]
    if scored.empty:
        return None
    order = scored.sort_values("mean", ascending=found.lower_is_better, kind="stable")
    best = order.iloc[0]
    word = REPLICATE_WORDS.get(report.replicate_keys[0], "run") if report.replicate_keys else "run"
    if not found.keys:
        return (
            f"All runs share one setup: {found.metric_words} {_interval(best, found.metric, word)}."
        )
    interval = _interval(best, found.metric, word)
    text = f"Best setup by {found.metric_words}: {best['setup']}, {interval}"
    if np.isfinite(best["test_acc"]) and found.metric != "test_acc":
        text += f"; test accuracy {format_metric(best['test_acc'], 'test_acc')}"
    if len(order) > 1:
        second = order.iloc[1]
        text += f". Next: {second['setup']}, {_interval(second, found.metric, word)}"
        if np.isfinite(best["ci_high"]) and np.isfinite(second["ci_low"]):
            overlap = best["ci_low"] <= second["ci_high"] and second["ci_low"] <= best["ci_high"]
            if overlap:
                text += "; the two intervals overlap, so this sweep does not separate them"
    return text + "."


def _importance_text(row: pd.Series) -> str:
    return f"{row['importance']:.2g} [{row['importance_low']:.2g}, {row['importance_high']:.2g}]"


def what_matters(found: Study) -> str | None:
    """The key that matters most, by importance where it was estimated, else by the spread of
    its effects."""
    if not found.keys:
        return None
    if found.importance is None or found.importance.empty:
        spread = found.effects[found.effects["key"] == found.ranked[0]]["mean"].dropna()
        if spread.empty:
            return None
        low, high = (format_metric(v, found.metric) for v in (spread.min(), spread.max()))
        note = (
            f"Importance not estimated: {found.importance_note}. " if found.importance_note else ""
        )
        if len(found.keys) == 1:
            return note + f"{found.keys[0]} moves {found.metric_words} from {low} to {high}."
        return (
            note + f"By the key effects, {found.ranked[0]} moves {found.metric_words} the most: "
            f"from {low} to {high} across its values, averaged over the other keys."
        )
    table = found.importance
    first = table.iloc[0]
    text = (
        f"{first['key']} matters most for {found.metric_words} (permutation importance "
        f"{_importance_text(first)}, over {first['setups']} setups)"
    )
    rest = [f"{row['key']} {_importance_text(row)}" for _, row in table.iloc[1:].iterrows()]
    if rest:
        text += "; then " + ", ".join(rest)
    nothing = table[(table["importance_low"] <= 0) & (table["importance_high"] >= 0)]
    if len(nothing):
        names = ", ".join(nothing["key"])
        text += f". The interval of {names} covers 0: no effect this sweep can tell from noise"
    return text + "."


def _breakdown(runs: pd.DataFrame, mine: pd.Series, key: str) -> str:
    """`model.depth 1: 0 of 9, 2: 4 of 9, 4: 8 of 9`."""
    text = runs[key].map(show_value)
    parts = []
    for value in key_values(runs[key]):
        here = text == show_value(value)
        parts.append(f"{show_value(value)}: {int((mine & here).sum())} of {int(here.sum())}")
    return f"{key} " + ", ".join(parts)


def fit_sentences(report: Report, found: Study) -> list[str]:
    """Who over- or underfits, is stuck, diverged or failed, and at what capacity (by depth and
    width where they vary, else by the key that matters most)."""
    runs = report.runs[report.runs["status"] != "damaged"]
    if runs.empty:
        return []
    verdicts = run_verdict(runs)
    capacity = [k for k in CAPACITY_KEYS if k in found.keys] or found.ranked[:1]
    sentences = []
    for verdict, name, tail in FIT_WORDS:
        mine = verdicts == verdict
        count = int(mine.sum())
        if not count:
            continue
        text = f"{name}: {count} of {len(runs)} runs{tail}"
        if capacity and count < len(runs):
            text += "; by " + "; by ".join(_breakdown(runs, mine, k) for k in capacity)
        sentences.append(text + ".")
    good = int((verdicts == "good fit").sum())
    if good:
        sentences.append(f"Good fit: {good} of {len(runs)} runs.")
    return sentences


def stopping_sentence(report: Report) -> str | None:
    """The range of early-stopping epochs, and how many runs early stopping would never stop."""
    runs = report.runs[report.runs["best_epoch"].notna()]
    if runs.empty:
        return None
    stops = pd.to_numeric(runs["early_stopping_epoch"], errors="coerce").dropna()
    never = len(runs) - len(stops)
    patience = report.settings.patience
    if stops.empty:
        return f"Early stopping (patience {patience}) would stop none of the {len(runs)} runs."
    text = f"Early stopping (patience {patience}) would stop {len(stops)} of {len(runs)} runs "
    if stops.min() == stops.max():
        text += f"at epoch {int(stops.min())}"
    else:
        low, high, median = int(stops.min()), int(stops.max()), stops.median()
        text += f"between epoch {low} and {high} (median {median:g})"
    if never:
        text += f"; {never} never within their epochs"
    return text + "."


def findings(report: Report, found: Study) -> list[str]:
    """The findings section's sentences, in order."""
    sentences = [best_setup(report, found), what_matters(found)]
    sentences += fit_sentences(report, found)
    sentences.append(stopping_sentence(report))
    return [s for s in sentences if s]
