"""The per-layer diagnostics as charts (`fitscope.report.spec`): gradient flow at epoch 0 and at
the best epoch, the forward signal of the network as initialized, dead and saturated units.

A line runs over the layers its net has and no further: x is the layer's place from the input
(1 = the first hidden layer), and each line's last point, a diamond, is its own output layer.
Up to `PER_RUN` runs, a line per run; beyond, a line per group and depth, the median over its
runs, so that the chart's cost follows the groups, not the runs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from fitscope.config import show_value
from fitscope.report.frames import Report, layer_rows
from fitscope.report.scales import NEUTRAL, Colors
from fitscope.report.spec import DASHES, Axis, Chart, Line, Panel
from fitscope.report.study import key_values

PER_RUN = 24


def _at_epochs(report: Report, which: str) -> pd.DataFrame:
    """Per-layer rows of each charted run at one epoch: `first` (epoch 0, the untrained net),
    `best` or `last`."""
    runs = report.runs.iloc[report.charted]
    epochs = report.epochs[report.epochs["run"].isin(report.charted)]
    if which == "first":
        at = epochs.groupby("run")["epoch"].transform("min")
    elif which == "last":
        at = epochs.groupby("run")["epoch"].transform("max")
    else:
        best = pd.Series(pd.to_numeric(runs["best_epoch"], errors="coerce").to_numpy(),
                         index=report.charted)  # fmt: skip
        at = epochs["run"].map(best)
    return layer_rows(epochs[epochs["epoch"] == at])


def _lines(
    report: Report, layers: pd.DataFrame, measure: str, colors: Colors, hidden: bool = False
) -> list[Line]:
    """One line per run (few runs) or per group and depth (median), over `measure` by layer."""
    if measure not in layers or layers[measure].isna().all():
        return []
    if hidden:
        layers = layers[layers["layer"] != "out"]
    runs = report.runs
    group = runs[colors.key].map(show_value) if colors.key in runs else pd.Series("", runs.index)
    layers = layers.assign(group=group.to_numpy()[layers["run"].to_numpy()])
    hidden_rows = (layers["layer"] != "out").astype(int)
    layers = layers.assign(depth=hidden_rows.groupby(layers["run"]).transform("sum"))
    per_run = layers["run"].nunique() <= PER_RUN
    keys = ["run"] if per_run else ["group", "depth"]
    depths = sorted(layers["depth"].unique())
    parts = list(layers.groupby(keys, sort=True))
    if not per_run and colors.key in runs:  # groups in the key's order (16, 64, 256, 1024)
        order = {show_value(v): i for i, v in enumerate(key_values(runs[colors.key]))}
        parts.sort(key=lambda part: (order.get(part[0][0], len(order)), part[0][1]))
    lines = []
    for key, part in parts:
        if per_run:
            run = runs.iloc[int(key[0] if isinstance(key, tuple) else key)]
            value, name, hover = group.iloc[run.name], str(run["label"]), str(run["label"])
            depth_value = None
        else:
            value, depth_value = key
            count = part["run"].nunique()
            name = (f"{colors.key}={value}, " if colors.key else "") + f"depth {depth_value}"
            hover = f"{name}: median of {count} runs"
        line = part.groupby("depth_index")[measure].median().dropna()
        out = part.groupby("depth_index")["layer"].first().reindex(line.index) == "out"
        dash = colors.dash(value) if per_run else DASHES[depths.index(depth_value) % len(DASHES)]
        lines.append(
            Line(line.index.astype(float), line.to_numpy(float), mode="lines+markers",
                 color=colors.color(value), dash=dash, marker=colors.marker(value), size=4,
                 name=name, group=str(value), hover=hover)
        )  # fmt: skip
        if out.any():
            lines.append(
                Line(line.index[out.to_numpy()].astype(float), line[out.to_numpy()],
                     mode="markers", marker="diamond", size=8, color=colors.color(value),
                     hover=f"{hover}: output layer", name="output layer", legend_color=NEUTRAL)
            )  # fmt: skip
    return lines


def _log_range(lines: list[Line]) -> tuple[float, float] | None:
    values = np.concatenate([line.y for line in lines])
    values = values[np.isfinite(values) & (values > 0)]
    return (values.min() / 1.5, values.max() * 1.5) if values.size else None


def _layer_axis(layers: pd.DataFrame) -> Axis:
    deepest = int(layers["depth_index"].max()) if len(layers) else 1
    ticks = [(float(i), str(i)) for i in range(1, deepest + 1)]
    return Axis("layer from the input (diamond: the net's output layer)", ticks=ticks)


def gradient_chart(report: Report, colors: Colors) -> Chart | None:
    """Gradient RMS by layer at epoch 0 and at the best epoch, on one log scale."""
    drawn = []
    for which, title in (("first", "epoch 0 (as initialized)"), ("best", "best epoch")):
        layers = _at_epochs(report, which)
        has_rms = "grad_rms" in layers and layers["grad_rms"].notna().any()
        measure = "grad_rms" if has_rms else "grad_norm"
        lines = _lines(report, layers, measure, colors)
        if lines:
            drawn.append((lines, title, layers, measure))
    if not drawn:
        return None
    # one range over both panels: the scale is shared, so a range from one panel alone would
    # cut the other's lines off (trained gradients are often far smaller than initial ones)
    shared = _log_range([line for lines, *_ in drawn for line in lines])
    panels = [
        Panel(lines, title=title, x=_layer_axis(layers),
              y=Axis(f"{measure.replace('_', ' ')} (log)", log=True, range=shared))
        for lines, title, layers, measure in drawn
    ]  # fmt: skip
    return Chart(
        name="gradient_flow",
        title="Gradient flow: each layer's weight-gradient RMS, from the input to the output",
        caption=(
            "RMS of each layer's weight gradient (per weight, so that layers of different "
            "sizes compare), mean per step. A line falling steeply toward the input means "
            "vanishing gradients: the first layers barely learn. "
            + _per_line(report)
            + " Per-layer values: layers.csv."
        ),
        alt="gradient RMS by layer",
        panels=panels,
        columns=2,
        panel_size=(5.5, 3.6),
        share_y=True,
    )


def _per_line(report: Report) -> str:
    if len(report.charted) <= PER_RUN:
        return "One line per run."
    return "One line per group and depth: the median over its runs."


def signal_chart(report: Report, colors: Colors) -> Chart | None:
    """Each hidden layer's activation mean, std and signal for the network as initialized."""
    layers = _at_epochs(report, "first")
    panels = []
    for measure, title in (("act_mean", "activation mean"), ("act_std", "activation std"),
                           ("signal", "signal (std across samples)")):  # fmt: skip
        lines = _lines(report, layers, measure, colors, hidden=True)
        if lines:
            x = _layer_axis(layers[layers["layer"] != "out"])
            panels.append(Panel(lines, title=title, x=x, y=Axis(title)))
    if not panels:
        return None
    return Chart(
        name="forward_signal",
        title="Forward signal at epoch 0, by hidden layer",
        caption=(
            "For the network as initialized, on a fixed validation batch: each hidden layer's "
            "activation mean and std, and its signal, each unit's std across the samples (RMS "
            "over units). A signal that shrinks layer by layer is a collapsing forward signal: "
            "the deep layers give nearly the same output for every input. " + _per_line(report)
        ),
        alt="forward signal by layer at epoch 0",
        panels=panels,
        columns=3,
        panel_size=(4.2, 3.2),
    )


def units_chart(report: Report, colors: Colors) -> Chart | None:
    """The share of dead (ReLU family) and saturated (sigmoid, tanh) units by hidden layer at
    the best epoch."""
    layers = _at_epochs(report, "best")
    panels = []
    for measure, title in (("dead", "dead units"), ("saturated", "saturated outputs")):
        lines = _lines(report, layers, measure, colors, hidden=True)
        if lines:
            x = _layer_axis(layers[layers["layer"] != "out"])
            y = Axis("share", percent=True, range=(-0.03, 1.03))
            panels.append(Panel(lines, title=title, x=x, y=y))
    if not panels:
        return None
    return Chart(
        name="units",
        title="Dead and saturated units by hidden layer, at the best epoch",
        caption=(
            "Dead unit (ReLU family): its pre-activation is at most 0 for every sample of a "
            "fixed validation batch. Saturated output (sigmoid, tanh): within 0.01 of the "
            "activation's bounds. " + _per_line(report)
        ),
        alt="dead and saturated units by layer",
        panels=panels,
        columns=2,
        panel_size=(5.0, 3.2),
    )


def layer_charts(report: Report, colors: Colors) -> Sequence[Chart]:
    """The diagnostics' charts that the runs' columns give."""
    charts = [view(report, colors) for view in (gradient_chart, signal_chart, units_chart)]
    return [c for c in charts if c is not None]
