"""Report charts: matplotlib PNGs drawn on `matplotlib.figure.Figure` objects, so they need no
display, no backend switch and no pyplot state.

Each chart function takes the report's frames and a file path, draws one figure and returns
the path, or None when the runs give it nothing to show; `save` and `legend` are shared with
`fitscope.report.layer_charts`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import matplotlib as mpl
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from fitscope.config import ACTIVATIONS, show_value

PALETTE = colormaps["tab10"].colors
# One colour per activation, the same in every chart of every report.
ACTIVATION_COLORS = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(ACTIVATIONS)}
DIAGNOSIS_COLORS = {"overfit": "#c0392b", "underfit": "#2471a3", "good fit": "#1e8449"}
TRAIN_COLOR, VAL_COLOR = "#2c3e50", "#e67e22"

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
def save(fig: Figure, path: Path, dpi: int = 110) -> Path:
    for ax in fig.axes:
        if ax.get_xlabel() == "epoch":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


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


@literal_text
def loss_small_multiples(runs: pd.DataFrame, curves: pd.DataFrame, path: Path) -> Path | None:
    """Train and validation loss of every run, one panel each, best and early-stopping epochs
    marked, the diagnosis in the title."""
    shown = runs[runs["run"].isin(curves["run"].unique())]
    if shown.empty:
        return None
    n = len(shown)
    cols = min(n, 4 if n <= 16 else math.ceil(math.sqrt(n)))
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(3.6 * cols, 2.9 * rows + 0.8), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True)
    for ax, (_, run) in zip(axes.flat, shown.iterrows(), strict=False):
        loss = curves[(curves["run"] == run["run"]) & (curves["metric"] == "loss")]
        for split, color in (("train", TRAIN_COLOR), ("val", VAL_COLOR)):
            part = loss[loss["split"] == split].sort_values("epoch")
            ax.plot(part["epoch"], part["value"], color=color, lw=1.4, label=f"{split} loss")
        if pd.notna(run["best_epoch"]):
            ax.axvline(run["best_epoch"], color="black", lw=0.9, label="best epoch")
        if pd.notna(run["early_stopping_epoch"]):
            ax.axvline(
                run["early_stopping_epoch"],
                color="black",
                lw=0.9,
                ls=":",
                label="early-stopping epoch",
            )
        positive = loss["value"][loss["value"] > 0]
        if not positive.empty and positive.max() / positive.min() > 20:
            ax.set_yscale("log")
            plain_log(ax.yaxis)
        ax.set_title(
            f"{run['label']}\n{run['diagnosis']}",
            fontsize=8.5,
            color=DIAGNOSIS_COLORS.get(run["diagnosis"], "dimgray"),
        )
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.25)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("epoch", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("cross-entropy (nats/sample)", fontsize=8)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=4, fontsize=8)
    fig.suptitle("Train vs validation loss per run", fontsize=11)
    return save(fig, path, dpi=110 if n <= 16 else 70)


@literal_text
def validation_by_key(
    runs: pd.DataFrame, curves: pd.DataFrame, key: str, path: Path
) -> Path | None:
    """Validation loss and accuracy of every run, coloured by its value of `key`."""
    if curves.empty or key not in curves.columns:
        return None
    colors = value_colors(runs[key], key)
    fig, ax_loss, ax_acc = _two_panels(len(colors))
    seen = set()
    for _, group in curves[curves["split"] == "val"].groupby("run", sort=False):
        value = show_value(group[key].iloc[0])
        label = None if value in seen else f"{key}={value}"
        seen.add(value)
        for ax, metric in ((ax_loss, "loss"), (ax_acc, "acc")):
            part = group[group["metric"] == metric].sort_values("epoch")
            scale = 100 if metric == "acc" else 1
            ax.plot(
                part["epoch"],
                part["value"] * scale,
                color=colors[value],
                lw=1.3,
                alpha=0.85,
                label=label if metric == "loss" else None,
            )
    ax_loss.set(
        xlabel="epoch", ylabel="validation loss (nats/sample)", title=f"Validation loss by {key}"
    )
    ax_acc.set(
        xlabel="epoch", ylabel="validation accuracy (%)", title=f"Validation accuracy by {key}"
    )
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.25)
    legend(fig, ax_loss)
    return save(fig, path)


@literal_text
def capacity(runs: pd.DataFrame, path: Path) -> Path | None:
    """Best validation loss and final training loss against parameter count, one line per
    activation: the underfit-to-overfit U."""
    done = runs[(runs["status"] == "completed") & runs["params"].notna()]
    if done["params"].nunique() < 2:
        return None
    by = "activation" if "activation" in done.columns else None
    fig = Figure(figsize=(7.5, 4.5))
    ax = fig.subplots()
    groups = done.groupby(by, sort=False) if by else [("all runs", done)]
    for name, group in groups:
        name = name[0] if isinstance(name, tuple) else name
        color = ACTIVATION_COLORS.get(str(name), PALETTE[0])
        mean = group.groupby("params")[["best_val_loss", "last_train_loss"]].mean().sort_index()
        ax.plot(
            mean.index, mean["best_val_loss"], "o-", color=color, label=f"{name}: best val loss"
        )
        ax.plot(
            mean.index,
            mean["last_train_loss"],
            "s--",
            color=color,
            alpha=0.7,
            label=f"{name}: final train loss",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    plain_log(ax.xaxis, counts=True)
    plain_log(ax.yaxis)
    ax.set(
        xlabel="parameters (count, log scale)",
        ylabel="loss (nats/sample, log scale)",
        title="Capacity: best validation loss and final training loss",
    )
    ax.grid(alpha=0.25, which="both")
    ax.legend(fontsize=7.5, ncol=2)
    fig.tight_layout()
    return save(fig, path)


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
