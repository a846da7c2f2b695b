"""The seed-statistics chart: per setup, the mean of test accuracy and of best validation loss
with its 95% confidence interval, and each seed's (fold's) value as a faint dot. Drawn like every
report chart (`fitscope.report.charts`): a `Figure`, no pyplot, text as typed."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from fitscope.config import show_value
from fitscope.report.charts import PALETTE, literal_text, save, value_colors
from fitscope.report.stats import CONFIDENCE, REPLICATE_WORDS, t_interval

PANELS = (  # metric, axis label, factor
    ("test_acc", "test accuracy (%)", 100.0),
    ("best_val_loss", "best validation loss (nats/sample)", 1.0),
)
LABEL_WIDTH = 44  # a setup's label wraps beyond this many characters
DOTS, BAR = -0.2, 0.1  # within a setup's row (1 high): the runs' strip above, the mean below


def setup_label(named: dict, n: int) -> str:
    """`relu · depth=2 · width=64 (n=3)`: a setup's values, the activation bare, other keys by
    their last part (as the capacity chart names them), wrapped between values where long."""
    parts = [
        show_value(v)
        if k in ("activation", "activation.name")
        else f"{k.split('.')[-1]}={show_value(v)}"
        for k, v in named.items()
    ]
    text = " · ".join(parts) or "all runs"
    return textwrap.fill(f"{text} (n={n})", LABEL_WIDTH, break_on_hyphens=False)


def _limits(values: np.ndarray, lows: np.ndarray, highs: np.ndarray, bounds: tuple) -> tuple:
    """An axis range that holds every value and as much of the intervals as stays within the
    values' own span on either side (an interval of 2 runs can be wide enough to flatten the
    others: it runs off the edge instead) and within `bounds`."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return None
    low, high = float(finite.min()), float(finite.max())
    span = max(high - low, 1e-3 * max(1.0, abs(high)))
    ends = [*lows[np.isfinite(lows)], low], [*highs[np.isfinite(highs)], high]
    low = max(min(ends[0]), low - span, bounds[0])
    high = min(max(ends[1]), high + span, bounds[1])
    pad = 0.04 * (high - low or 1.0)
    return low - pad, high + pad


def _draw_panel(ax: Axes, rows: list[dict], metric: str, factor: float, bounds: tuple) -> None:
    """One metric: per row (setup) its runs' values as faint dots, the mean and its interval;
    where fewer runs have the value than the setup has runs, how many do, at the right."""
    values = np.concatenate([factor * r["values"][metric] for r in rows] or [np.empty(0)])
    intervals = np.array([[factor * b for b in r["ci"][metric]] for r in rows]).reshape(-1, 2)
    for i, row in enumerate(rows):
        x = factor * row["values"][metric]
        offsets = DOTS + np.linspace(-0.06, 0.06, len(x)) if len(x) > 1 else DOTS
        ax.scatter(x, i + offsets, s=14, color=row["color"], alpha=0.35, lw=0)
        if len(x) < row["n"]:
            ax.annotate(
                f"{len(x)} of {row['n']} runs",
                (1, i - 0.5),
                xycoords=("axes fraction", "data"),
                xytext=(-3, -1),
                textcoords="offset points",
                ha="right",
                va="top",
                fontsize=7,
                color="#555555",
            )
        if len(x) == 0:
            continue
        mean = float(np.mean(x))
        low, high = intervals[i]
        if np.isfinite(low):
            ax.errorbar(
                mean,
                i + BAR,
                xerr=[[mean - low], [high - mean]],
                fmt="D",
                ms=5.5,
                color=row["color"],
                ecolor=row["color"],
                elinewidth=2,
                capsize=4,
            )
        else:  # one run (or no spread): its value, hollow, no interval
            ax.plot(mean, i + BAR, "D", ms=5.5, mfc="white", color=row["color"])
    limits = _limits(values, intervals[:, 0], intervals[:, 1], bounds)
    if limits is None:
        return
    ax.set_xlim(*limits)
    for i, (low, high) in enumerate(intervals):  # an interval past the edge: an arrowhead there
        if np.isfinite(low) and low < limits[0]:
            ax.plot(limits[0], i + BAR, "<", ms=6, color=rows[i]["color"], clip_on=False)
        if np.isfinite(high) and high > limits[1]:
            ax.plot(limits[1], i + BAR, ">", ms=6, color=rows[i]["color"], clip_on=False)


@literal_text
def intervals_figure(
    runs: pd.DataFrame, setup: Sequence[str], replicates: Sequence[str]
) -> Figure | None:
    """Test accuracy (left) and best validation loss (right) per setup, one row each in the runs'
    order: the mean with its 95% t-interval as an error bar, each completed run as a faint dot
    (n=1: a hollow marker, no bar). Colours: the activation's, else one per value of the first
    setup key. None when no completed run has either value."""
    done = runs[runs["status"] == "completed"]
    metrics = [m for m, _, _ in PANELS]
    if done.empty or not np.isfinite(done[metrics].to_numpy(float)).any():
        return None
    setup = [k for k in setup if k in done.columns]
    keys = (
        done[setup].map(show_value).apply(tuple, axis=1)
        if setup
        else pd.Series([()] * len(done), index=done.index)
    )
    color_key = next((k for k in setup if k in ("activation", "activation.name")), None)
    color_key = color_key or (setup[0] if setup else None)
    colors = value_colors(done[color_key], color_key) if color_key else {}
    rows = []
    for values in dict.fromkeys(keys):
        group = done[keys.map(values.__eq__)]
        named = dict(zip(setup, group[setup].iloc[0], strict=True))
        color = colors.get(show_value(named[color_key]), PALETTE[0]) if color_key else PALETTE[0]
        numbers = {m: pd.to_numeric(group[m], errors="coerce").to_numpy(float) for m in metrics}
        numbers = {m: v[np.isfinite(v)] for m, v in numbers.items()}
        rows.append(
            {
                "label": setup_label(named, len(group)),
                "n": len(group),
                "color": color,
                "values": numbers,
                "ci": {m: t_interval(v) for m, v in numbers.items()},
            }
        )
    lines = sum(r["label"].count("\n") + 1 for r in rows)
    fig = Figure(figsize=(12.5, 1.6 + 0.3 * max(lines, 4)), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, (metric, axis_label, factor) in zip(axes, PANELS, strict=True):
        bounds = (0.0, 100.0) if metric == "test_acc" else (0.0, np.inf)
        _draw_panel(ax, rows, metric, factor, bounds)
        for i in range(0, len(rows), 2):  # every other row shaded, to follow a row across
            ax.axhspan(i - 0.5, i + 0.5, color="#f2f2f2", zorder=0, lw=0)
        ax.set_xlabel(axis_label)
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(labelsize=8)
    axes[0].set_yticks(range(len(rows)), [r["label"] for r in rows], fontsize=8)
    axes[0].set_ylim(len(rows) - 0.5, -0.5)  # the first setup on top
    for ax in axes:
        ax.tick_params(axis="y", length=0)
    word = REPLICATE_WORDS.get(replicates[0], "replicate") if len(replicates) == 1 else "run"
    handles = [
        Line2D([], [], marker="o", ls="none", color="gray", alpha=0.45, label=f"each {word}"),
        Line2D([], [], marker="D", color="gray", lw=2, label=f"mean, {CONFIDENCE:.0%} interval"),
    ]
    if any(not np.isfinite(r["ci"][m][0]) and len(r["values"][m]) for r in rows for m in metrics):
        hollow = {"marker": "D", "ls": "none", "mfc": "white", "color": "gray"}
        handles.append(Line2D([], [], **hollow, label="one run: no interval"))
    fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    over = ", ".join(REPLICATE_WORDS.get(k, k) + "s" for k in replicates) or "runs"
    fig.suptitle(
        f"Per setup: mean and {CONFIDENCE:.0%} confidence interval (Student's t) over {over}; "
        f"faint dots: each {word}",
        fontsize=10.5,
    )
    return fig


def setup_intervals(
    runs: pd.DataFrame, path: Path, setup: Sequence[str], replicates: Sequence[str]
) -> Path | None:
    """`intervals_figure` as a PNG."""
    fig = intervals_figure(runs, setup, replicates)
    return None if fig is None else save(fig, path)
