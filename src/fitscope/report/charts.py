"""Report charts: matplotlib PNGs drawn on `matplotlib.figure.Figure` objects, so they need no
display, no backend switch and no pyplot state.

Each chart function takes the report's frames and a file path, draws one figure and returns
the path, or None when the runs give it nothing to show; `save`, `legend`, `literal_text` and the
loss scale are shared with `fitscope.report.layer_charts`.

Every text in a chart is the user's text as typed (config values, run names): no chart parses it
as mathtext, so a `$` is a dollar sign. Panels of one chart share one y scale, so that runs can be
compared, and loss charts draw the chance level, so that a run stuck there is seen as stuck.
"""

from __future__ import annotations

import functools
import math
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from fitscope.config import ACTIVATIONS, show_value
from fitscope.report.diagnose import DEFAULT_CLASSES, smooth

PALETTE = colormaps["tab10"].colors
# One colour per activation, the same in every chart of every report.
ACTIVATION_COLORS = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(ACTIVATIONS)}
DIAGNOSIS_COLORS = {
    "overfit": "#c0392b",
    "underfit": "#2471a3",
    "not converged": "#7d3c98",
    "good fit": "#1e8449",
}
TRAIN_COLOR, VAL_COLOR = "#2c3e50", "#e67e22"
SMOOTH_STYLE = {"color": VAL_COLOR, "lw": 4.0, "alpha": 0.3}  # smoothed validation loss
# Reference marks: each has a colour and a line style no curve has.
BEST_STYLE = {"color": "#9b30d9", "ls": "--", "lw": 1.2}  # best epoch: violet, dashed
STOP_STYLE = {"color": "#16a085", "ls": ":", "lw": 1.8}  # early-stopping epoch: teal, dotted
CHANCE_STYLE = {"color": "#7f8c8d", "ls": "-.", "lw": 1.0}  # chance level: grey, dash-dot
RISE_STYLE = {"color": "#c0392b", "ls": ":", "lw": 1.0}  # overfit threshold: red, dotted
LOG_RATIO = 20  # a chart's loss axis is logarithmic when its values span more than this factor
PANEL_COLUMNS = 4  # small multiples: columns of panels; a larger sweep adds rows, not columns
DPI = 110
STUCK_STATUSES = ("diverged", "failed")
LINE_STYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
ANNOTATED_LINES = 8  # capacity: up to this many lines, each point is labelled with its size

F = TypeVar("F", bound=Callable[..., Any])


def literal_text(function: F) -> F:
    """Run `function` with mathtext parsing off: every text it creates, and every tick label a
    save creates, shows `$` and `\\` as typed (config values are the user's text)."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with mpl.rc_context({"text.parse_math": False}):
            return function(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def value_colors(values: pd.Series, key: str) -> dict:
    """A colour per distinct value: the fixed activation colours when `key` is the activation."""
    unique = list(dict.fromkeys(values.map(show_value)))
    if key in ("activation", "activation.name"):
        return {v: ACTIVATION_COLORS.get(v, PALETTE[i % 10]) for i, v in enumerate(unique)}
    return {v: PALETTE[i % len(PALETTE)] for i, v in enumerate(unique)}


@literal_text
def save(fig: Figure, path: Path, dpi: int = DPI) -> Path:
    for ax in fig.axes:
        if ax.get_xlabel() == "epoch":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def _two_panels(entries: int) -> tuple[Figure, Axes, Axes]:
    """Loss and accuracy side by side, wider when a long legend will stand beside them."""
    extra = 0 if entries <= 8 else 2.4 * (1 + entries // 25)
    fig = Figure(figsize=(11 + extra, 4), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    return fig, ax_loss, ax_acc


def legend(fig: Figure, ax: Axes) -> None:
    """A legend inside the axes when short, beside the figure when long (once per figure)."""
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))  # one entry per distinct label
    handles, labels = list(unique.values()), list(unique)
    if len(labels) <= 8:
        ax.legend(handles, labels, fontsize=8)
    elif not fig.legends:
        fig.legend(
            handles, labels, loc="outside right upper", fontsize=7, ncol=1 + len(labels) // 25
        )


def figure_legend(fig: Figure, axes: Sequence[Axes], loc: str, **kwargs: Any) -> None:
    """One legend for the figure: every distinct label of `axes`, in the order first drawn."""
    entries: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    if entries:
        fig.legend(list(entries.values()), list(entries), loc=loc, **kwargs)


# Loss scales and reference levels -------------------------------------------------------------


def class_counts(runs: pd.DataFrame) -> pd.Series:
    """Each run's class count, by run: what its summary.json records, else `DEFAULT_CLASSES`."""
    counts = runs["classes"] if "classes" in runs.columns else pd.Series(np.nan, runs.index)
    return pd.Series(
        pd.to_numeric(counts, errors="coerce").fillna(DEFAULT_CLASSES).astype(int).to_numpy(),
        index=runs["run"].to_numpy(),
    )


def chance_levels(runs: pd.DataFrame) -> list[float]:
    """The chance-level losses (ln of the class count, nats/sample) of `runs`, distinct."""
    return sorted({math.log(c) for c in class_counts(runs) if c > 1})


def loss_scale(values: Sequence[float], levels: Sequence[float] = ()) -> tuple[str, tuple]:
    """(`linear` | `log`, y limits): one scale for every panel of a loss chart, that holds
    `values` (from the runs that did not diverge) and the reference `levels`; logarithmic when
    the positive values span more than `LOG_RATIO` (a loss of exactly 0 then lies below it)."""
    finite = np.asarray([v for v in [*values, *levels] if np.isfinite(v)], float)
    if finite.size == 0:
        return "linear", (0.0, 1.0)
    positive = finite[finite > 0]
    high = float(finite.max())
    if positive.size and high / positive.min() > LOG_RATIO:
        return "log", (positive.min() / 1.3, high * 1.3)
    low = min(float(finite.min()), 0.0)
    span = high - low or 1.0
    return "linear", (low - 0.03 * span, high + 0.05 * span)


def _count(value: float) -> str:
    """1500 -> 1.5k, 2e6 -> 2M: a parameter count, short."""
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:g}{suffix}"
    return f"{value:g}"


def plain_log(axis: Any, limits: tuple | None = None, counts: bool = False) -> None:
    """Tick labels of a log axis as plain numbers (0.01, 1, 1e+06; 20k with `counts`): the
    default ones are mathtext, which the charts do not parse. Within two decades (`limits`), a
    label at 1, 2 and 5 of each."""
    if limits is not None and limits[0] > 0 and limits[1] / limits[0] <= 100:
        axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: _count(v) if counts else f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def apply_scale(ax: Axes, scale: str, limits: tuple) -> None:
    ax.set_yscale(scale)
    ax.set_ylim(*limits)
    if scale == "log":
        plain_log(ax.yaxis, limits)


def draw_chance(ax: Axes, levels: Sequence[float]) -> None:
    """A horizontal reference line at each chance-level loss."""
    for level in levels:
        ax.axhline(level, **CHANCE_STYLE, label="chance level (ln classes)", gid="chance")


def _charted_values(runs: pd.DataFrame, curves: pd.DataFrame) -> pd.Series:
    """The curve values that set a chart's scale: those of runs that did not diverge or fail
    (their blow-up would flatten every other run), all of them if every run did."""
    stuck = runs.loc[runs["status"].isin(STUCK_STATUSES), "run"]
    kept = curves[~curves["run"].isin(stuck)]
    return (kept if not kept.empty else curves)["value"]


def panel_title(run: pd.Series, varying: Sequence[str], width: int = 44) -> str:
    """The values of the varying keys, compactly (the keys are named once, above the panels)."""
    text = " · ".join(show_value(run[k]) for k in varying if k in run.index) or str(run["run"])
    return textwrap.fill(text, width, break_long_words=True, break_on_hyphens=False)


# Train and validation loss, one panel per run ---------------------------------------------------


def _rise(val: np.ndarray, low: float) -> np.ndarray:
    """Validation loss above `low` (the smoothed curve's minimum), in percent of it (NaN where
    that is 0)."""
    if not low > 0:
        return np.where(val == low, 0.0, np.nan)
    return 100 * (val / low - 1)


def _rise_limits(rises: list[tuple[np.ndarray, int | None]], threshold: float) -> tuple:
    """One y range for every rise panel: the largest rise from a best epoch on (`rises`: each
    run's rise over its smoothed minimum and the best epoch's position in it), between twice
    and five times the overfit threshold (a larger rise runs off the top; its panel says how
    far); at the bottom, the best epochs' own dips below the smoothed minimum (at most one
    threshold down)."""
    after = [r[best:] for r, best in rises if best is not None and np.isfinite(r[best:]).any()]
    top = min(max([1.3 * float(np.nanmax(a)) for a in after] + [2 * threshold]), 5 * threshold)
    lowest = min([float(np.nanmin(a)) for a in after] + [0.0])
    return max(1.2 * lowest, -threshold) - 0.08 * top, top


def _mark_epochs(ax: Axes, run: pd.Series) -> None:
    if pd.notna(run["best_epoch"]):
        ax.axvline(run["best_epoch"], **BEST_STYLE, label="best epoch", gid="best-epoch")
    if pd.notna(run["early_stopping_epoch"]):
        ax.axvline(
            run["early_stopping_epoch"],
            **STOP_STYLE,
            label="early-stopping epoch",
            gid="early-stopping",
        )


def _bottom_panels_show_epochs(axes: list[tuple[Axes, int]]) -> None:
    """Epoch tick labels and the axis label on the lowest panel of each column, none above."""
    lowest: dict[int, Axes] = {}
    for ax, column in axes:
        lowest[column] = ax  # drawn top to bottom: the last one is the lowest
    for ax, _ in axes:
        ax.tick_params(labelbottom=ax in lowest.values())
    for ax in lowest.values():
        ax.set_xlabel("epoch", fontsize=8)


@literal_text
def loss_figure(
    runs: pd.DataFrame,
    curves: pd.DataFrame,
    varying: Sequence[str] = (),
    overfit_rise: float = 0.05,
) -> Figure | None:
    """Train and validation loss of every run from epoch 0 (the untrained network), one panel
    each on one shared scale with the chance level and the validation loss smoothed as its
    verdict was (`val_window`, by run), and under
    each the validation loss's rise above its smoothed minimum (in %, on one shared scale, with
    the overfit threshold); best and early-stopping epochs marked, the diagnosis in the
    title."""
    shown = runs[runs["run"].isin(curves["run"].unique())]
    if shown.empty:
        return None
    n = len(shown)
    cols = min(n, PANEL_COLUMNS)
    rows = math.ceil(n / cols)
    levels = chance_levels(shown)
    loss = curves[curves["metric"] == "loss"]
    scale, limits = loss_scale(_charted_values(shown, loss), levels)
    threshold = 100 * overfit_rise

    fig = Figure(figsize=(3.6 * cols, 3.7 * rows + 1.2), layout="constrained")
    grid = fig.add_gridspec(2 * rows, cols, height_ratios=[2.5, 1.0] * rows)
    first: Axes | None = None
    loss_axes, rise_axes, panels = [], [], []
    rises = []
    for i, (_, run) in enumerate(shown.iterrows()):
        row, col = divmod(i, cols)
        ax = fig.add_subplot(grid[2 * row, col], sharex=first)
        first = first or ax
        ax_rise = fig.add_subplot(grid[2 * row + 1, col], sharex=first)
        own = loss[loss["run"] == run["run"]]
        for split, color in (("train", TRAIN_COLOR), ("val", VAL_COLOR)):
            part = own[own["split"] == split].sort_values("epoch")
            ax.plot(part["epoch"], part["value"], color=color, lw=1.4, label=f"{split} loss")
        val = own[own["split"] == "val"].sort_values("epoch")
        val = val[val["epoch"] >= 1]  # the trained epochs: what the verdict judges
        window = run.get("val_window", np.nan)
        window = int(window) if pd.notna(window) else 1
        smoothed = smooth(val["value"].to_numpy(float), window)
        low = np.nanmin(smoothed) if np.isfinite(smoothed).any() else np.nan
        if window > 1:
            ax.plot(val["epoch"], smoothed, **SMOOTH_STYLE, label="val loss, smoothed")
            ax_rise.plot(val["epoch"], _rise(smoothed, low), **SMOOTH_STYLE)
        rise = _rise(val["value"].to_numpy(float), low)
        at_best = (
            np.flatnonzero(val["epoch"].to_numpy() == run["best_epoch"])
            if pd.notna(run["best_epoch"])
            else []
        )
        best = int(at_best[0]) if len(at_best) else None
        rises.append((rise, best))
        ax_rise.plot(val["epoch"], rise, color=VAL_COLOR, lw=1.4, label="val loss")
        ax_rise.axhline(
            threshold, **RISE_STYLE, label=f"overfit threshold (+{threshold:g}%)", gid="threshold"
        )
        if best is not None:
            best_val = val.loc[val["epoch"] == run["best_epoch"], "value"]
            ax.plot(
                [run["best_epoch"]] * len(best_val),
                best_val,
                marker="D",
                ms=4,
                ls="none",
                color=BEST_STYLE["color"],
            )
            last_rise = run.get("val_rise", np.nan)
            if pd.notna(last_rise) and np.isfinite(last_rise):
                last = "last epoch" if window == 1 else f"last {window} epochs"
                ax_rise.text(
                    0.98,
                    0.92,
                    f"{last} {100 * last_rise:+.1f}%",
                    transform=ax_rise.transAxes,
                    ha="right",
                    va="top",
                    fontsize=6.5,
                    color="#333333",
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8},
                )
        for target in (ax, ax_rise):
            _mark_epochs(target, run)
            target.tick_params(labelsize=7, labelleft=col == 0)
            target.grid(alpha=0.25)
        draw_chance(ax, levels)
        flag = str(run.get("flag") or "").split(" (")[0]  # the flag without its cause
        ax.set_title(
            panel_title(run, varying) + f"\n{run['diagnosis']}" + (f" · {flag}" if flag else ""),
            fontsize=8.5,
            color=DIAGNOSIS_COLORS.get(run["diagnosis"], "dimgray"),
        )
        loss_axes.append(ax)
        rise_axes.append(ax_rise)
        panels += [(ax, col), (ax_rise, col)]
    for ax in loss_axes:
        apply_scale(ax, scale, limits)
    rise_limits = _rise_limits(rises, threshold)
    for ax in rise_axes:
        ax.set_ylim(*rise_limits)
    _bottom_panels_show_epochs(panels)
    for ax, ax_rise in zip(loss_axes[::cols], rise_axes[::cols], strict=True):
        ax.set_ylabel(f"loss (nats/sample{', log' if scale == 'log' else ''})", fontsize=8)
        ax_rise.set_ylabel("val loss over its\nsmoothed min (%)", fontsize=7.5)
    figure_legend(fig, [*loss_axes, *rise_axes], loc="outside lower center", ncol=6, fontsize=8)
    keys = " · ".join(varying) if varying else "run"
    fig.suptitle(
        "Train vs validation loss per run from epoch 0 (every panel on one scale); below each: "
        "validation loss over its smoothed minimum\n"
        + textwrap.fill(f"panel titles: {keys}", 40 * cols),
        fontsize=10,
    )
    return fig


def loss_small_multiples(
    runs: pd.DataFrame,
    curves: pd.DataFrame,
    path: Path,
    varying: Sequence[str] = (),
    overfit_rise: float = 0.05,
) -> Path | None:
    """`loss_figure` as a PNG."""
    fig = loss_figure(runs, curves, varying, overfit_rise)
    return None if fig is None else save(fig, path)


# Validation curves coloured by one key, a panel pair per value of the other keys ----------------


def _facets(runs: pd.DataFrame, others: Sequence[str]) -> list[tuple[str, pd.DataFrame]]:
    """(title, runs) per combination of the values of `others`, in the runs' order."""
    if not others:
        return [("", runs)]
    text = runs[list(others)].map(show_value)
    keys = text.apply(tuple, axis=1)
    return [
        (
            " · ".join(f"{k}={v}" for k, v in zip(others, values, strict=True)),
            runs[keys.map(values.__eq__)],
        )
        for values in dict.fromkeys(keys)
    ]


@literal_text
def validation_figure(
    runs: pd.DataFrame,
    curves: pd.DataFrame,
    key: str,
    varying: Sequence[str] = (),
    replicates: Sequence[str] = (),
) -> Figure | None:
    """Validation loss and accuracy coloured by the value of `key`: one pair of panels per
    combination of the other varying keys, so that each line is one value of `key`; runs that
    differ only in a replicate key (seed, fold) are one line, their mean, with a ± std band."""
    if curves.empty or key not in curves.columns:
        return None
    val = curves[curves["split"] == "val"]
    shown = runs[runs["run"].isin(val["run"].unique())]
    if shown.empty:
        return None
    others = [k for k in varying if k not in (key, *replicates) and k in shown.columns]
    facets = _facets(shown, others)
    colors = value_colors(shown[key], key)
    # the curves set the scale (many facets of low losses would flatten against the chance
    # level); the chance level is drawn where it falls inside
    scale, limits = loss_scale(_charted_values(shown, val[val["metric"] == "loss"]))
    levels = [level for level in chance_levels(shown) if limits[0] <= level <= limits[1]]
    acc = 100 * val.loc[val["metric"] == "acc", "value"]
    acc_limits = (max(0.0, acc.min() - 3), min(100.0, acc.max() + 3)) if len(acc) else (0, 100)

    fcols = 1 if len(facets) == 1 else 2
    frows = math.ceil(len(facets) / fcols)
    fig = Figure(figsize=(8 * fcols + 2.5, 3.4 * frows + 0.6), layout="constrained")
    subfigs = np.atleast_1d(fig.subfigures(frows, fcols, squeeze=False)).ravel()
    axes = []
    for subfig, (title, members) in zip(subfigs, facets, strict=False):
        ax_loss, ax_acc = subfig.subplots(1, 2, sharex=True)
        for value, group in members.groupby(members[key].map(show_value), sort=False):
            part = val[val["run"].isin(group["run"])]
            n = group["run"].nunique()
            label = f"{key}={value}" + (f" (mean ± std of {n} runs)" if n > 1 else "")
            for ax, metric, factor in ((ax_loss, "loss", 1), (ax_acc, "acc", 100)):
                stats = (
                    part[part["metric"] == metric].groupby("epoch")["value"].agg(["mean", "std"])
                )
                ax.plot(
                    stats.index, factor * stats["mean"], color=colors[value], lw=1.4, label=label
                )
                if n > 1:
                    spread = factor * stats["std"].fillna(0)
                    ax.fill_between(
                        stats.index,
                        factor * stats["mean"] - spread,
                        factor * stats["mean"] + spread,
                        color=colors[value],
                        alpha=0.2,
                    )
        draw_chance(ax_loss, levels)
        apply_scale(ax_loss, scale, limits)
        ax_acc.set_ylim(*acc_limits)
        ax_loss.set(xlabel="epoch", ylabel="validation loss (nats/sample)")
        ax_acc.set(xlabel="epoch", ylabel="validation accuracy (%)")
        for ax in (ax_loss, ax_acc):
            ax.grid(alpha=0.25)
            ax.tick_params(labelsize=8)
        if title:
            subfig.suptitle(title, fontsize=9.5)
        axes += [ax_loss, ax_acc]
    for subfig in subfigs[len(facets) :]:
        subfig.set_visible(False)
    figure_legend(fig, axes, loc="outside right upper", fontsize=8)
    fig.suptitle(
        f"Validation loss and accuracy by {key}"
        + (f", one pair of panels per {' · '.join(others)}" if others else "")
        + " (every panel on one scale)",
        fontsize=11,
    )
    return fig


def validation_by_key(
    runs: pd.DataFrame,
    curves: pd.DataFrame,
    key: str,
    path: Path,
    varying: Sequence[str] = (),
    replicates: Sequence[str] = (),
) -> Path | None:
    """`validation_figure` as a PNG."""
    fig = validation_figure(runs, curves, key, varying or [key], replicates)
    return None if fig is None else save(fig, path)


# Capacity -------------------------------------------------------------------------------------


def _short(key: str, value: Any) -> str:
    return show_value(value) if key == "activation" else f"{key.split('.')[-1]}={show_value(value)}"


@literal_text
def capacity_figure(
    runs: pd.DataFrame, varying: Sequence[str] = (), replicates: Sequence[str] = ()
) -> Figure | None:
    """Best validation loss and final training loss against parameter count: one line per
    setup, joining the runs that differ only in model.width (in model.depth when the width
    does not vary), the mean where seeds or folds vary; the underfit-to-overfit U."""
    # a log axis shows positive, finite parameter counts (a damaged summary.json may say -inf)
    params = pd.to_numeric(runs["params"], errors="coerce")
    done = runs[(runs["status"] == "completed") & np.isfinite(params) & (params > 0)]
    if done["params"].nunique() < 2:
        return None
    size = next((k for k in ("model.width", "model.depth") if k in varying), None)
    setup = [k for k in varying if k not in (size, *replicates) and k in done.columns]
    if not setup and "activation" in done.columns:
        setup = ["activation"]
    text = done[setup].map(show_value) if setup else pd.DataFrame(index=done.index)
    keys = text.apply(tuple, axis=1) if setup else pd.Series([()] * len(done), done.index)
    levels = chance_levels(done)
    fig = Figure(figsize=(12.5, 4.8), layout="constrained")
    ax_val, ax_train = fig.subplots(1, 2, sharex=True)
    styles: dict[str, int] = {}
    setups = list(dict.fromkeys(keys))
    for i, values in enumerate(setups):
        group = done[keys.map(values.__eq__)]
        named = dict(zip(setup, group[setup].iloc[0], strict=True)) if setup else {}
        name = " ".join(_short(k, v) for k, v in named.items()) or "all runs"
        rest = " ".join(_short(k, v) for k, v in named.items() if k != "activation")
        if "activation" in named:
            color = ACTIVATION_COLORS.get(show_value(named["activation"]), PALETTE[i % 10])
            style = styles.setdefault(rest, len(styles))
        else:
            color, style = PALETTE[i % 10], 0
        mean = group.groupby("params")[["best_val_loss", "last_train_loss"]].mean().sort_index()
        for ax, column in ((ax_val, "best_val_loss"), (ax_train, "last_train_loss")):
            ax.plot(
                mean.index,
                mean[column],
                marker=MARKERS[style % len(MARKERS)],
                ls=LINE_STYLES[style % len(LINE_STYLES)] if size else "none",
                ms=5,
                lw=1.3,
                color=color,
                label=name,
            )
            if size and len(setups) <= ANNOTATED_LINES:  # few lines: each point says its size
                sizes = group.groupby("params")[size].first().map(show_value)
                for x, y in mean[column].items():
                    ax.annotate(
                        _short(size, sizes[x]),
                        (x, y),
                        xytext=(4, 3),
                        textcoords="offset points",
                        fontsize=6.5,
                        color=color,
                    )
    params = done["params"].astype(float)
    x_limits = (params.min() / 1.25, params.max() * 1.25)
    values = [*done["best_val_loss"], *done["last_train_loss"]]
    _, limits = loss_scale(values, levels)
    positive = [v for v in [*values, *levels] if np.isfinite(v) and v > 0]
    for ax in (ax_val, ax_train):
        ax.set_xscale("log")
        plain_log(ax.xaxis, x_limits, counts=True)
        if positive:
            apply_scale(ax, "log", (min(positive) / 1.3, max(positive) * 1.3))
        else:
            apply_scale(ax, "linear", limits)
        draw_chance(ax, levels)
        ax.set_xlim(*x_limits)
        ax.grid(alpha=0.25, which="both")
        ax.set_xlabel("parameters (count, log scale)")
    ax_val.set(ylabel="loss (nats/sample, log scale)", title="Best validation loss")
    ax_train.set(title="Final training loss")
    figure_legend(fig, [ax_val, ax_train], loc="outside right upper", fontsize=8)
    joined = f"lines join runs that differ only in {size}" if size else "one point per setup"
    fig.suptitle(f"Capacity: loss against parameter count ({joined})", fontsize=11)
    return fig


def capacity(
    runs: pd.DataFrame,
    path: Path,
    varying: Sequence[str] = (),
    replicates: Sequence[str] = (),
) -> Path | None:
    """`capacity_figure` as a PNG."""
    fig = capacity_figure(runs, varying, replicates)
    return None if fig is None else save(fig, path)


@literal_text
def replicate_bands(
    runs: pd.DataFrame, curves: pd.DataFrame, setup: list[str], replicates: list[str], path: Path
) -> Path | None:
    """Mean ± std of validation loss and accuracy over seeds (or folds), one band per setup."""
    val = curves[curves["split"] == "val"]
    if val.empty:
        return None
    key_name = ", ".join(replicates)
    grouping = (
        list(val.groupby(setup, sort=False, dropna=False)) if setup else [(("all runs",), val)]
    )
    fig, ax_loss, ax_acc = _two_panels(len(grouping))
    for i, (values, group) in enumerate(grouping):
        name = " ".join(
            show_value(v) if k in ("activation", "all") else f"{k.split('.')[-1]}={show_value(v)}"
            for k, v in zip(setup or ["all"], values, strict=True)
        )
        color = (
            ACTIVATION_COLORS.get(str(group["activation"].iloc[0]), PALETTE[i % 10])
            if "activation" in setup
            else PALETTE[i % 10]
        )
        n = group["run"].nunique()
        for ax, metric in ((ax_loss, "loss"), (ax_acc, "acc")):
            stats = group[group["metric"] == metric].groupby("epoch")["value"].agg(["mean", "std"])
            scale = 100 if metric == "acc" else 1
            ax.plot(
                stats.index,
                stats["mean"] * scale,
                color=color,
                label=f"{name} (n={n})" if metric == "loss" else None,
            )
            ax.fill_between(
                stats.index,
                (stats["mean"] - stats["std"].fillna(0)) * scale,
                (stats["mean"] + stats["std"].fillna(0)) * scale,
                color=color,
                alpha=0.2,
            )
    ax_loss.set(
        xlabel="epoch",
        ylabel="validation loss (nats/sample)",
        title=f"Val loss, mean ± std over {key_name}",
    )
    ax_acc.set(
        xlabel="epoch",
        ylabel="validation accuracy (%)",
        title=f"Val accuracy, mean ± std over {key_name}",
    )
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.25)
    legend(fig, ax_loss)
    return save(fig, path)
