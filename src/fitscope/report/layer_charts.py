"""Report charts of the per-layer diagnostics: gradient flow and dead or saturated units, by
layer from the input to the output (see `fitscope.report.charts`)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from fitscope.report.charts import (
    ACTIVATION_COLORS,
    LINE_STYLES,
    PALETTE,
    legend,
    literal_text,
    plain_log,
    save,
)
from fitscope.report.diagnose import gradient_measure


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


def _run_styles(runs: pd.DataFrame) -> dict[str, dict]:
    """Line properties per run (`color`, `ls`, `label`): its activation's colour, and, when the
    other varying keys take at most 4 combinations of values, a line style for each, labelled
    with them (depth shows in a line's length, seeds and folds are replicates: neither counts);
    without an activation column, a colour and label of its own."""
    if "activation" not in runs.columns:
        return {
            r: {"color": PALETTE[i % len(PALETTE)], "ls": "-", "label": label}
            for i, (r, label) in enumerate(zip(runs["run"], runs["label"], strict=True))
        }
    skipped = ("activation=", "model.depth=", "seed=", "fold=")
    rests = {
        r: " ".join(w for w in str(label).split(" ") if not w.startswith(skipped))
        for r, label in zip(runs["run"], runs["label"], strict=True)
    }
    kinds = list(dict.fromkeys(rests.values()))
    styled = len(kinds) <= len(LINE_STYLES)
    return {
        r: {
            "color": ACTIVATION_COLORS.get(str(activation), PALETTE[0]),
            "ls": LINE_STYLES[kinds.index(rests[r])] if styled else "-",
            "label": f"{activation} {rests[r]}".strip() if styled else str(activation),
        }
        for r, activation in zip(runs["run"], runs["activation"], strict=True)
    }


def _first_epoch_name(epoch: int) -> str:
    return "epoch 0 (untrained)" if epoch == 0 else f"first epoch ({epoch})"


@literal_text
def gradient_flow(runs: pd.DataFrame, layers: pd.DataFrame, path: Path) -> Path | None:
    """Weight-gradient RMS by layer, first to last, at the first epoch (0, the untrained net,
    where recorded) and the best epoch. A run recorded before RMS shows its whole-matrix
    norms, dotted and labelled `(norm)`: the two scales differ."""
    measure = gradient_measure(layers) if not layers.empty else None
    if measure is None or layers["depth_index"].max() < 2:
        return None
    first_epochs = {int(e) for e in layers.groupby("run")["epoch"].min()}
    styles = _run_styles(runs)
    layers = _with_layer_x(layers)
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    measures = set()
    for ax, which in zip(axes, ("first", "best"), strict=True):
        for _, run in runs.iterrows():
            own = layers[layers["run"] == run["run"]]
            own_measure = gradient_measure(own) if not own.empty else None
            if own_measure is None:
                continue
            measures.add(own_measure)
            epoch = own["epoch"].min() if which == "first" else run["best_epoch"]
            at = own[own["epoch"] == epoch].sort_values("depth_index")
            style = dict(styles[run["run"]])
            if own_measure == "grad_norm" and measure == "grad_rms":  # an older run beside
                style.update(ls=":", label=f"{style['label']} (norm)")
            ax.plot(at["x"], at[own_measure], marker="o", ms=3, lw=1.2, alpha=0.85, **style)
        ax.set_yscale("log")
        if which == "best":
            name = "best epoch"
        elif len(first_epochs) == 1:
            name = _first_epoch_name(min(first_epochs))
        else:
            name = "first epoch recorded (0 where recorded)"
        ax.set_title(f"Gradient {'RMS' if measure == 'grad_rms' else 'norm'} by layer, {name}")
        _layer_axis(ax, layers)
    for ax in axes:  # tick labels that fit the range drawn
        plain_log(ax.yaxis, ax.get_ylim())
    axes[0].set_ylabel(
        "‖∂loss/∂W‖ / √(weights), mean per step (log)"
        if measures == {"grad_rms"}
        else "mean ‖∂loss/∂W‖ per step (log scale)"
        if measures == {"grad_norm"}
        else "gradient RMS (norm, dotted) per step (log)"
    )
    legend(fig, axes[0])
    return save(fig, path)


@literal_text
def unit_health(runs: pd.DataFrame, layers: pd.DataFrame, path: Path) -> Path | None:
    """Dead (ReLU family) and saturated (sigmoid, tanh) shares of units by layer, best epoch;
    `out`, where an activation follows the output layer, its dead (constant) logits."""
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
                    marker="o",
                    ms=3,
                    lw=1.2,
                    **styles[run["run"]],
                )
        ax.set_ylim(-2, 102)
        ax.set_ylabel(f"{measure} units (%)")
        ax.set_title(
            {
                "dead": "Dead units (pre-activation ≤ 0 on every sample;\n"
                "out: logits constant for every sample)",
                "saturated": "Saturated outputs (within 0.01 of the bounds)",
            }[measure],
            fontsize=10,
        )
        _layer_axis(ax, layers[layers[measure].notna()])
        legend(fig, ax)
    return save(fig, path)


@literal_text
def forward_signal(runs: pd.DataFrame, layers: pd.DataFrame, path: Path) -> Path | None:
    """Each hidden layer's activation mean, std and signal (per-unit std across samples, RMS
    over units) at the first epoch recorded (epoch 0: the network as initialized), on a fixed
    validation batch. A signal that shrinks layer by layer is a collapsing forward signal; SELU
    with LeCun init keeps mean 0 and std 1."""
    if layers.empty or "act_std" not in layers.columns:
        return None
    hidden = layers[(layers["layer"] != "out") & layers["act_std"].notna()]
    if hidden.empty or hidden["depth_index"].max() < 2:
        return None
    measures = [
        m for m in ("act_mean", "act_std", "signal") if m in hidden and hidden[m].notna().any()
    ]
    first_epoch = int(hidden["epoch"].min())
    styles = _run_styles(runs)
    hidden = _with_layer_x(hidden)
    fig = Figure(figsize=(5 * len(measures) + 1, 4.2), layout="constrained")
    axes = dict(zip(measures, fig.subplots(1, len(measures), sharex=True), strict=True))
    for _, run in runs.iterrows():
        own = hidden[hidden["run"] == run["run"]]
        if own.empty:
            continue
        at = own[own["epoch"] == own["epoch"].min()].sort_values("depth_index")
        for measure, ax in axes.items():
            ax.plot(
                at["x"], at[measure], marker="o", ms=3, lw=1.2, alpha=0.85, **styles[run["run"]]
            )
    reference = {"act_mean": 0.0, "act_std": 1.0}  # SELU's fixed point: mean 0, std 1
    for measure, value in reference.items():
        if measure in axes:
            axes[measure].axhline(value, color="#7f8c8d", ls="-.", lw=1.0)
    for measure in ("act_std", "signal"):
        values = hidden[measure][hidden[measure] > 0] if measure in axes else []
        if len(values) and values.max() / values.min() > 20:
            axes[measure].set_yscale("log")
            plain_log(axes[measure].yaxis)
    titles = {
        "act_mean": ("mean activation", "Activation mean"),
        "act_std": ("activation std (units and samples)", "Activation std"),
        "signal": ("per-unit std across samples (RMS)", "Signal: std across samples"),
    }
    name = _first_epoch_name(first_epoch)
    for measure, ax in axes.items():
        ylabel, title = titles[measure]
        ax.set(ylabel=ylabel, title=f"{title}, {name}")
        _layer_axis(ax, hidden)
        ax.set_xlabel("hidden layer (input side → output)")
    legend(fig, axes[measures[-1]])
    return save(fig, path)
