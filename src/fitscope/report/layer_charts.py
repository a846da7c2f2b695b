"""Report charts of the per-layer diagnostics: gradient flow and dead or saturated units, by
layer from the input to the output (see `fitscope.report.charts`)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from fitscope.report.charts import ACTIVATION_COLORS, PALETTE, legend, literal_text, plain_log, save


def _with_layer_x(layers: pd.DataFrame) -> pd.DataFrame:
    """`layers` with an `x` column: hidden layer i at i, every run's output layer at one place
    after the deepest hidden layer, so runs of different depths share the axis."""
    hidden = layers["layer"] != "out"
    deepest = int(layers.loc[hidden, "depth_index"].max()) if hidden.any() else 0
    return layers.assign(x=layers["depth_index"].where(hidden, deepest + 1))


def _layer_axis(ax: Axes, layers: pd.DataFrame) -> None:
    """Layers from first to last on the x axis, the output layer labelled `out`."""
    ticks = layers.drop_duplicates("x").sort_values("x")
    ax.set_xticks(ticks["x"], ticks["layer"].astype(str))
    ax.set_xlabel("layer (input side → output)")
    ax.grid(alpha=0.25, which="both")


def _run_styles(runs: pd.DataFrame) -> dict[str, tuple[tuple, str]]:
    """(colour, legend label) per run: its activation's colour and name when activations
    differ, else a colour and label of its own."""
    if "activation" in runs.columns:
        return {
            r: (ACTIVATION_COLORS.get(str(a), PALETTE[0]), str(a))
            for r, a in zip(runs["run"], runs["activation"], strict=True)
        }
    return {
        r: (PALETTE[i % len(PALETTE)], label)
        for i, (r, label) in enumerate(zip(runs["run"], runs["label"], strict=True))
    }


@literal_text
def gradient_flow(runs: pd.DataFrame, layers: pd.DataFrame, path: Path) -> Path | None:
    """Mean weight-gradient norm by layer, first to last, at the first and the best epoch."""
    if layers.empty or "grad_norm" not in layers.columns or layers["depth_index"].max() < 2:
        return None
    styles = _run_styles(runs)
    layers = _with_layer_x(layers)
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, which in zip(axes, ("first", "best"), strict=True):
        for _, run in runs.iterrows():
            own = layers[layers["run"] == run["run"]]
            if own.empty:
                continue
            epoch = own["epoch"].min() if which == "first" else run["best_epoch"]
            at = own[own["epoch"] == epoch].sort_values("depth_index")
            ax.plot(
                at["x"],
                at["grad_norm"],
                "o-",
                ms=3,
                lw=1.2,
                alpha=0.85,
                color=styles[run["run"]][0],
                label=styles[run["run"]][1],
            )
        ax.set_yscale("log")
        plain_log(ax.yaxis)
        ax.set_title(f"Gradient norm by layer, {which} epoch")
        _layer_axis(ax, layers)
    axes[0].set_ylabel("mean ‖∂loss/∂W‖ per step (log scale)")
    legend(fig, axes[0])
    return save(fig, path)


@literal_text
def unit_health(runs: pd.DataFrame, layers: pd.DataFrame, path: Path) -> Path | None:
    """Dead (ReLU family) and saturated (sigmoid, tanh) shares of units by layer, best epoch."""
    measures = [m for m in ("dead", "saturated") if m in layers.columns and layers[m].notna().any()]
    if layers.empty or not measures:
        return None
    styles = _run_styles(runs)
    layers = _with_layer_x(layers)
    fig = Figure(figsize=(5.5 * len(measures) + 1, 4), layout="constrained")
    axes = fig.subplots(1, len(measures), squeeze=False)
    for ax, measure in zip(axes[0], measures, strict=True):
        for _, run in runs.iterrows():
            at = layers[(layers["run"] == run["run"]) & (layers["epoch"] == run["best_epoch"])]
            at = at[at[measure].notna()].sort_values("depth_index")
            if not at.empty:
                ax.plot(
                    at["x"],
                    100 * at[measure],
                    "o-",
                    ms=3,
                    lw=1.2,
                    color=styles[run["run"]][0],
                    label=styles[run["run"]][1],
                )
        ax.set_ylim(-2, 102)
        ax.set_ylabel(f"{measure} units (%)")
        ax.set_title(
            {
                "dead": "Dead units (pre-activation ≤ 0 on every sample)",
                "saturated": "Saturated activations (derivative < 1% of max)",
            }[measure],
            fontsize=10,
        )
        _layer_axis(ax, layers[layers["layer"] != "out"])
        legend(fig, ax)
    return save(fig, path)
