"""Curves as charts (`fitscope.report.spec`): the group means overlaid, a panel per group with its
band, early stopping and its best and worst runs, and the per-run panels of small sweeps and
flagged runs (train and validation loss, and validation loss over its smoothed minimum)."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence

import numpy as np
import pandas as pd

from fitscope.config import show_value
from fitscope.report.diagnose import DEFAULT_CLASSES, smooth
from fitscope.report.frames import Report
from fitscope.report.scales import NEUTRAL, Colors, metric_axis
from fitscope.report.spec import Axis, Chart, Line, Panel, Rule, Text

TRAIN_COLOR, VAL_COLOR = "#2c3e50", "#e67e22"
DIAGNOSIS_COLORS = {
    "overfit": "#c0392b",
    "underfit": "#2471a3",
    "not converged": "#7d3c98",
    "good fit": "#1e8449",
}
BEST_RULE = {"color": "#9b30d9", "dash": "dash", "width": 1.2}  # best epoch: violet, dashed
STOP_RULE = {"color": "#16a085", "dash": "dot", "width": 1.8}  # early stopping: teal, dotted
CHANCE_RULE = {"color": "#7f8c8d", "dash": "dashdot", "width": 1.0}
RISE_RULE = {"color": "#c0392b", "dash": "dot", "width": 1.0}
PANEL_COLUMNS = 4


def chance_levels(runs: pd.DataFrame) -> list[float]:
    """The chance-level losses (ln of the class count) of `runs`, distinct."""
    counts = pd.to_numeric(runs.get("classes"), errors="coerce").fillna(DEFAULT_CLASSES)
    return sorted({math.log(c) for c in counts if c > 1})


def _chance(levels: Sequence[float]) -> list[Rule]:
    return [
        Rule("y", level, **CHANCE_RULE, name="chance level (ln classes)", hover="chance level")
        for level in levels
    ]


def group_overlay_chart(
    curves: pd.DataFrame, colors: Colors, order: list[str], levels: Sequence[float]
) -> Chart | None:
    """Validation loss and accuracy: each group's mean with its band, a colour, dash and marker
    of its own and its name at the line's end, so that overlapping lines stay apart."""
    if curves.empty:
        return None
    panels = []
    for column, title in (("val_loss", "validation loss"), ("val_acc", "validation accuracy")):
        mine = curves[curves["column"] == column]
        items = []
        for group in order:
            part = mine[mine["group"] == group]
            if part.empty:
                continue
            name = f"{colors.key}={group}" if colors.key else group
            items.append(
                Line(part["epoch"], part["mean"], band=(part["low"], part["high"]), name=name,
                     group=group, color=colors.color(group), dash=colors.dash(group),
                     marker=colors.marker(group), mode="lines+markers",
                     marker_every=max(1, len(part) // 8),
                     end_label=group if len(order) <= 6 else "",
                     hover=[f"{name}: mean of {n} runs" for n in part["runs"]])
            )  # fmt: skip
        values = [*mine["mean"], *mine["low"], *mine["high"]]
        metric = "acc" if column.endswith("acc") else "loss"
        y = metric_axis(values, metric, title)
        if column == "val_loss":
            items += _chance([v for v in levels if y.range and y.range[0] <= v <= y.range[1]])
        panels.append(Panel(items, title=title, x=Axis("epoch", integer=True), y=y))
    by = f" by {colors.key}" if colors.key else ""
    return Chart(
        name="curves",
        title=f"Validation curves{by}: the mean of each group",
        caption=(
            f"One line per value of {colors.key or 'the sweep'}: the mean over its runs at "
            "each epoch, the band from the 10th to the 90th percentile of them. Diverged and "
            "failed runs are left out (see the run table). Click a legend entry to show that "
            "group alone. Numbers: group_curves.csv."
        ),
        alt="validation curves by group",
        panels=panels,
        columns=2,
        panel_size=(6.0, 3.8),
    )


def group_panels_chart(
    report: Report,
    curves: pd.DataFrame,
    picked: pd.DataFrame,
    stops: pd.DataFrame,
    colors: Colors,
    order: list[str],
) -> Chart | None:
    """A panel per group: mean train (dashed) and validation (solid) loss with the validation
    band, the median early-stopping epoch, and the group's best and worst runs drawn alone."""
    if curves.empty:
        return None
    loss = curves[curves["column"].isin(["train_loss", "val_loss"])]
    levels = chance_levels(report.runs)
    first, last = float(loss["epoch"].min()), float(loss["epoch"].max())
    # room right of the last epoch for the names at the best and worst runs' ends
    room = 0.2 * (last - first) if len(picked) else 0.02 * (last - first)
    epochs = Axis("epoch", integer=True, range=(first - 0.02 * (last - first), last + room))
    panels = []
    for group in order:
        part = loss[loss["group"] == group]
        if part.empty:
            continue
        items = _group_items(report, part, picked, group, colors)
        items += _stop_rule(stops, group)
        items += _chance(levels)
        title = f"{colors.key}={group}" if colors.key else group
        panels.append(Panel(items, title=title, x=epochs))
    values = [*loss["low"], *loss["high"], *loss["mean"]]
    y = metric_axis(values, "loss", "loss (nats/sample)")
    for panel in panels:
        panel.y = y
    k = picked["rank"].str.startswith("best").sum() // max(1, len(panels)) if len(picked) else 0
    return Chart(
        name="group_curves",
        title="Train and validation loss per group, with its best and worst runs",
        caption=(
            "Per group: the mean validation loss (solid) with its band (10th to 90th "
            "percentile of the runs) and the mean training loss (dashed); the teal dotted line "
            "is the group's median early-stopping epoch"
            + (
                f"; thin lines, its {k} best and {k} worst runs by the report's metric, named "
                "at their end and by hovering"
                if k
                else ""
            )
            + ". Every panel on one scale, with the chance level."
        ),  # fmt: skip
        alt="loss per group",
        panels=panels,
        columns=min(3, len(panels)),
        panel_size=(4.6, 3.2),
        share_x=True,
        legend="bottom",
    )


def _group_items(
    report: Report, part: pd.DataFrame, picked: pd.DataFrame, group: str, colors: Colors
) -> list:
    color = colors.color(group)
    val, train = part[part["column"] == "val_loss"], part[part["column"] == "train_loss"]
    items = [
        Line(val["epoch"], val["mean"], band=(val["low"], val["high"]), color=color, width=2.2,
             name="validation loss, mean and band", legend_color=NEUTRAL,
             hover=[f"{group}: validation mean of {n} runs" for n in val["runs"]]),
        Line(train["epoch"], train["mean"], color=color, dash="dash", width=1.6,
             name="training loss, mean", legend_color=NEUTRAL,
             hover=[f"{group}: training mean of {n} runs" for n in train["runs"]]),
    ]  # fmt: skip
    if picked.empty:
        return items
    epochs = report.epochs
    for _, run in picked[picked["group"] == group].iterrows():
        rows = epochs[epochs["run"] == run["position"]]
        best = str(run["rank"]).startswith("best")
        items.append(
            Line(rows["epoch"], rows["val_loss"], color=color, width=0.9, opacity=0.9,
                 dash="dot" if best else "dashdot", mode="lines+markers",
                 marker="triangle-down" if best else "triangle-up", size=5,
                 marker_every=max(1, len(rows) // 5), legend_color=NEUTRAL,
                 end_label=str(run["rank"]) if str(run["rank"]).endswith(" 1") else "",
                 name="best runs (validation)" if best else "worst runs (validation)",
                 hover=f"{run['rank']}: {run['label']} ({run['run']})")
        )  # fmt: skip
    return items


def _stop_rule(stops: pd.DataFrame, group: str) -> list[Rule]:
    row = stops[stops["group"] == group]
    if row.empty or not np.isfinite(row["median"].iloc[0]):
        return []
    row = row.iloc[0]
    hover = (
        f"early stopping: median epoch {row['median']:g} (from {row['first']:g} to "
        f"{row['last']:g}); {row['never']} of {row['runs']} runs never stop"
    )
    return [Rule("x", row["median"], **STOP_RULE, name="median early-stopping epoch", hover=hover)]


# Per-run panels ------------------------------------------------------------------------------


def _rise(values: np.ndarray, low: float) -> np.ndarray:
    """Validation loss above `low` (the smoothed minimum), in percent of it."""
    if not low > 0:
        return np.where(values == low, 0.0, np.nan)
    return 100 * (values / low - 1)


def _run_panels(report: Report, run: pd.Series, position: int, threshold: float) -> tuple:
    """(loss panel, rise panel) of one run."""
    rows = report.epochs[report.epochs["run"] == position]
    epoch = rows["epoch"].to_numpy()
    trained = epoch >= 1
    val = rows["val_loss"].to_numpy(float)
    window = int(run["val_window"]) if pd.notna(run.get("val_window")) else 1
    smoothed = smooth(val[trained], window)
    low = np.nanmin(smoothed) if np.isfinite(smoothed).any() else np.nan
    hover = f"{run['label']} ({run['run']})"
    loss = [
        Line(epoch, rows["train_loss"], color=TRAIN_COLOR, name="train loss", hover=hover),
        Line(epoch, val, color=VAL_COLOR, name="val loss", hover=hover),
    ]
    rise = [
        Line(epoch[trained], _rise(val[trained], low), color=VAL_COLOR, hover=hover),
        Rule("y", threshold, **RISE_RULE, name=f"overfit threshold (+{threshold:g}%)"),
    ]
    if window > 1:
        loss.append(Line(epoch[trained], smoothed, color=VAL_COLOR, width=4.0, opacity=0.3,
                         name="val loss, smoothed", hover=hover))  # fmt: skip
        rise.append(Line(epoch[trained], _rise(smoothed, low), color=VAL_COLOR, width=4.0,
                         opacity=0.3))  # fmt: skip
    for items in (loss, rise):
        if pd.notna(run["best_epoch"]):
            items.append(Rule("x", run["best_epoch"], **BEST_RULE, name="best epoch"))
        if pd.notna(run["early_stopping_epoch"]):
            items.append(
                Rule("x", run["early_stopping_epoch"], **STOP_RULE, name="early-stopping epoch")
            )
    if pd.notna(run["best_epoch"]):
        at = val[epoch == run["best_epoch"]]
        loss.append(Line([run["best_epoch"]] * len(at), at, mode="markers", marker="diamond",
                         size=6, color=BEST_RULE["color"], hover=hover))  # fmt: skip
    if np.isfinite(run.get("val_rise", np.nan)) and len(epoch):
        last = "last epoch" if window == 1 else f"last {window} epochs"
        rise.append(Text(float(epoch[-1]), threshold * 4, f"{last} {100 * run['val_rise']:+.1f}%",
                         size=6.5, align="right"))  # fmt: skip
    flag = str(run.get("flag") or "").split(" (")[0]
    title = textwrap.fill(_panel_title(run, report.varying), 44)
    title += f"\n{run['diagnosis']}" + (f" · {flag}" if flag else "")
    color = DIAGNOSIS_COLORS.get(run["diagnosis"], "dimgray")
    return (
        Panel(loss, title=title, title_color=color, x=Axis(integer=True)),
        Panel(rise, x=Axis("epoch", integer=True)),
    )


def _panel_title(run: pd.Series, varying: Sequence[str]) -> str:
    return " · ".join(show_value(run[k]) for k in varying if k in run.index) or str(run["run"])


def run_panels_chart(
    report: Report, positions: Sequence[int], heading: str, of: int | None = None
) -> Chart | None:
    """Train and validation loss of each run at `positions` from epoch 0, on one scale with the
    chance level, and under each (`heading` "runs": a small sweep's every run) the validation
    loss over its smoothed minimum (in %, one scale, with the overfit threshold): best and
    early-stopping epochs marked, the verdict in the title. A large sweep's flagged runs get the
    loss panels alone: they are flagged for what the loss shows."""
    charted = [p for p in positions if p in set(report.epochs["run"])]
    if not charted:
        return None
    threshold = 100 * report.settings.overfit_rise
    runs = report.runs
    pairs = [_run_panels(report, runs.iloc[p], p, threshold) for p in charted]
    shown = runs.iloc[charted]
    kept = shown[~shown["status"].isin(["diverged", "failed"])]
    values = report.epochs[report.epochs["run"].isin(kept.index if len(kept) else charted)]
    levels = chance_levels(shown)
    y = metric_axis([*values["train_loss"], *values["val_loss"], *levels], "loss",
                    "loss (nats/sample)")  # fmt: skip
    rise = Axis("val loss over its smoothed min (%)", range=(-threshold, 5 * threshold))
    for loss_panel, rise_panel in pairs:
        loss_panel.y = y
        loss_panel.items += _chance(levels)
        rise_panel.y = rise
    columns = min(PANEL_COLUMNS, len(pairs))
    rise_rows = heading == "runs"
    panels = []
    for start in range(0, len(pairs), columns):
        row = pairs[start : start + columns]
        blank = [Panel(visible=False) for _ in range(columns - len(row))]
        panels += [p[0] for p in row] + blank
        panels += [p[1] for p in row] + blank if rise_rows else []
    keys = " · ".join(report.varying) or "run"
    below = "; below each, validation loss over its smoothed minimum" if rise_rows else ""
    rise_text = (
        " Under each, validation loss in percent above the minimum of its smoothed curve, with "
        "the overfit threshold (report.overfit_rise): the rise after the best epoch, whatever "
        "training loss does."
        if rise_rows
        else ""
    )
    flagged = ""
    if not rise_rows and (of or 0) > len(pairs):
        flagged = (
            f"{len(pairs)} of the {of} runs the diagnostics flag: a run of each kind of flag "
            "and each setup before a setup's other seeds (all in the table above and runs.csv). "
        )
    elif not rise_rows:
        flagged = f"The {len(pairs)} runs the diagnostics flag. "
    return Chart(
        name="runs" if rise_rows else "flagged_runs",
        title=f"Train vs validation loss per run from epoch 0{below} (panel titles: {keys})",
        caption=(
            f"{flagged}One panel per run, every panel on one scale, with the chance level (ln "
            f"of the class count).{rise_text} Violet dashed line and diamond: best epoch; teal "
            "dotted line: early-stopping epoch (none where it never stops). Thick pale orange "
            "line: validation loss smoothed as the verdict smooths it. Title colour: red "
            "overfit, blue underfit, purple not converged, green good fit."
        ),
        alt="train and validation loss per run",
        panels=panels,
        columns=columns,
        panel_size=(3.6, 1.9 if rise_rows else 3.0),
        row_heights=[2.4, 1.0] if rise_rows else None,
        share_x=False,
        legend="bottom",
    )
