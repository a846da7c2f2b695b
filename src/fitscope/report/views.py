"""The study's views as charts (`fitscope.report.spec`): the results matrix, the key effects,
the importance of each key, capacity, parallel coordinates and each setup's interval over
seeds. Each takes the frames of `fitscope.report.study` and returns a `Chart`, or None when the
runs give it nothing to show. Colours mean the same value of a key in every chart (`Colors`)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from fitscope.config import show_value
from fitscope.report.scales import NEUTRAL, Colors, metric_axis
from fitscope.report.spec import (
    DASHES,
    Axis,
    Bars,
    Chart,
    Dimension,
    Heatmap,
    Line,
    Panel,
    Parallel,
)
from fitscope.report.study import Study, format_metric, key_values

MAX_INTERVAL_ROWS = 30  # the intervals chart: beyond this many setups, the best and worst 15


def _cell_text(mean: float, verdict: str, metric: str) -> str:
    text = format_metric(mean, metric) if np.isfinite(mean) else "-"
    return f"{text}\n{verdict}" if verdict else text


def matrix_chart(found: Study) -> Chart | None:
    """The results matrix: the two keys that matter most (or `report.matrix`) as rows and
    columns, further keys as facets; each cell the mean over its runs, marked with its verdict."""
    if found.matrix is None or found.matrix.empty or found.matrix_axes is None:
        return None
    row_key, col_key, facets, averaged = found.matrix_axes
    cells = found.matrix
    setups = found.setups
    rows = [show_value(v) for v in key_values(setups[row_key])]
    columns = [show_value(v) for v in key_values(setups[col_key])] if col_key else [""]
    values = cells["mean"].to_numpy(float)
    # cells stuck at chance or diverged would stretch the scale until every other cell has one
    # colour: the scale spans the others, and those cells take its worst end
    failing = cells["verdict"].fillna("").astype(str).str.startswith(("stuck", "diverged"))
    healthy = values[np.isfinite(values) & ~failing.to_numpy()]
    finite = healthy if healthy.size >= 2 else values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    clipped = finite.size < np.isfinite(values).sum()
    panels = []
    for facet, group in cells.groupby("facet", sort=False):
        table = {(str(r), str(c)): cell for (r, c), cell in zip(
            zip(group["row"], group["column"], strict=True), group.to_dict("records"), strict=True
        )}  # fmt: skip
        z, text, hover = [], [], []
        for r in rows:
            z.append([table.get((r, c), {}).get("mean", math.nan) for c in columns])
            text.append([_cell_text(*_cell(table.get((r, c)), found.metric)) for c in columns])
            hover.append([_cell_hover(table.get((r, c)), row_key, col_key, found) for c in columns])
        heat = Heatmap(z, text, rows, columns, hover, low, high, found.lower_is_better,
                       colorbar=found.metric_words)  # fmt: skip
        panels.append(Panel([heat], title=str(facet), x=Axis(col_key or ""), y=Axis(row_key)))
    note = f" Averaged over {', '.join(averaged)} (too many to facet)." if averaged else ""
    per_facet = " One panel per value of " + ", ".join(facets) + "." if facets else ""
    width = max(3.0, 0.9 * len(columns) + 1.5)
    return Chart(
        name="matrix",
        title=f"{found.metric_words} by {row_key}" + (f" and {col_key}" if col_key else ""),
        caption=(
            f"Each cell: the mean {found.metric_words} over the cell's completed runs (seeds and "
            f"folds are averaged, never an axis), brighter is better, with the verdict of its "
            f"runs where it is not a good fit for all (overfit 2/3: two of its three runs). "
            + (
                "The colours span the other cells; cells stuck at chance or diverged take the "
                "worst colour, their numbers written in them. "
                if clipped
                else ""
            )
            + f"Numbers and intervals: matrix.csv.{per_facet}{note}"
        ),
        alt="results matrix",
        panels=panels,
        columns=min(len(panels), 3),
        panel_size=(width, max(2.2, 0.45 * len(rows) + 1.2)),
        legend="none",
    )


def _cell(cell: dict | None, metric: str) -> tuple[float, str, str]:
    if cell is None:
        return math.nan, "", metric
    return cell["mean"], cell["verdict"], metric


def _cell_hover(cell: dict | None, row_key: str, col_key: str | None, found: Study) -> str:
    if cell is None:
        return "no runs"
    where = f"{row_key}={cell['row']}" + (f" {col_key}={cell['column']}" if col_key else "")
    if cell["facet"]:
        where = f"{cell['facet']} {where}"
    text = f"{where}<br>{found.metric_words} {format_metric(cell['mean'], found.metric)}"
    if np.isfinite(cell["ci_low"]):
        low, high = (format_metric(cell[k], found.metric) for k in ("ci_low", "ci_high"))
        text += f" [{low}, {high}]"
    return (
        text
        + f"<br>{cell['n']} of {cell['runs']} runs completed"
        + (f"<br>{cell['verdict']}" if cell["verdict"] else "")
    )


def effects_chart(found: Study, colors: Colors) -> Chart | None:
    """Each key's effect: the metric against the key's values, averaged over the other keys,
    with the 95% interval, and each setup's mean as a faint dot; one scale for every key, so
    that the key that moves the metric most shows it."""
    effects = found.effects
    if effects.empty:
        return None
    setups = found.setups
    ends = [*effects["ci_low"], *effects["ci_high"]]
    y = metric_axis([*effects["mean"], *setups["mean"]], found.metric, found.metric_words, ends)
    panels = []
    for key in found.ranked:
        mine = effects[effects["key"] == key].reset_index(drop=True)
        positions = np.arange(len(mine), dtype=float)
        ticks = list(zip(positions, mine["value"], strict=True))
        items = []
        text = setups[key].map(show_value)
        for i, value in enumerate(mine["value"]):
            dots = setups[text == value]
            jitter = np.linspace(-0.18, 0.18, len(dots)) if len(dots) > 1 else np.zeros(len(dots))
            items.append(
                Line(i + jitter, dots["mean"], mode="markers", color="#95a5a6", size=4,
                     opacity=0.6, hover=list(dots["setup"]), name="a setup (mean over seeds)")
            )  # fmt: skip
        color = [colors.color(v) if key == colors.key else NEUTRAL for v in mine["value"]]
        for i, row in mine.iterrows():
            items.append(
                Line([positions[i]], [row["mean"]], mode="markers", marker="diamond", size=9,
                     color=color[i], error=([row["ci_low"]], [row["ci_high"]]),
                     hover=_effect_hover(row, found), name="mean, 95% interval")
            )  # fmt: skip
        panels.append(Panel(items, title=key, x=Axis(key, ticks=ticks), y=y))
    return Chart(
        name="effects",
        title=f"What each key does to {found.metric_words}",
        caption=(
            "Per key, most important first: the mean over the setups with each value (each "
            "setup averaged over its seeds), with its 95% interval over those setups (over the "
            "seeds where one setup has the value; none for a single run); faint dots, each "
            "setup. Every panel on one scale. Numbers: effects.csv."
        ),
        alt="key effects",
        panels=panels,
        columns=min(len(panels), 3),
        panel_size=(4.2, 3.3),
        share_y=True,
        legend="bottom",
    )


def _effect_hover(row: pd.Series, found: Study) -> str:
    text = f"{row['key']}={row['value']}: {format_metric(row['mean'], found.metric)}"
    if np.isfinite(row["ci_low"]):
        low, high = (format_metric(row[k], found.metric) for k in ("ci_low", "ci_high"))
        text += f" [{low}, {high}] over {row['setups']} {row['interval_over']}"
    return text + f"<br>{row['runs']} runs"


def importance_chart(found: Study) -> Chart | None:
    """Each key's permutation importance with its 95% bootstrap interval, the most important at
    the top, and the rank correlation of numeric keys beside."""
    table = found.importance
    if table is None or table.empty:
        return None
    notes = [
        f"rho {row['rank_correlation']:+.2f}" if row["numeric"] and np.isfinite(
            row["rank_correlation"]) else ""
        for _, row in table.iterrows()
    ]  # fmt: skip
    hover = [
        f"{row['key']}: importance {row['importance']:.3g} [{row['importance_low']:.3g}, "
        f"{row['importance_high']:.3g}], {row['values']} values" + (f"; {note}" if note else "")
        for (_, row), note in zip(table.iterrows(), notes, strict=True)
    ]
    bars = Bars(
        list(table["key"]),
        list(table["importance"]),
        list(table["importance_low"]),
        list(table["importance_high"]),
        [NEUTRAL] * len(table),
        hover,
        notes,
    )
    return Chart(
        name="importance",
        title=f"Which keys explain {found.metric_words}",
        caption=(
            f"Permutation importance over {int(table['setups'].iloc[0])} setups: how much a "
            f"random forest's squared error in predicting {found.metric_words} from the keys "
            "grows when a key's values are shuffled, as a share of the metric's variance "
            "across setups (0: the key explains nothing), with its 95% bootstrap interval over "
            "the setups. rho: Spearman's rank correlation of a numeric key with the metric "
            "(its sign: which way the metric moves as the key grows). Numbers: importance.csv."
        ),
        alt="parameter importance",
        panels=[Panel([bars], x=Axis("importance (share of the metric's variance)"))],
        panel_size=(7.0, 0.5 * len(table) + 1.2),
        legend="none",
    )


def parallel_chart(found: Study) -> Chart | None:
    """Parallel coordinates from the keys to the results, one line per setup."""
    setups = found.setups[found.setups["mean"].notna()]
    if len(setups) < 2 or not found.keys:
        return None
    dimensions = []
    for key in found.ranked:
        order = [show_value(v) for v in key_values(setups[key])]
        codes = setups[key].map(show_value).map({v: i for i, v in enumerate(order)})
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in setups[key])
        if numeric and len(order) > 12:
            dimensions.append(Dimension(key, list(setups[key].astype(float))))
        else:
            dimensions.append(Dimension(key, list(codes.astype(float)), list(enumerate(order))))
    for column, label in (("mean", found.metric_words), ("test_acc", "test accuracy"),
                          ("early_stopping_epoch", "early-stopping epoch")):  # fmt: skip
        if column != found.metric and setups[column].notna().any():
            dimensions.append(_result_dimension(label, setups[column].astype(float)))
    return Chart(
        name="parallel",
        title=f"From keys to results: one line per setup, coloured by {found.metric_words}",
        caption=(
            "Each line is a setup (the mean over its seeds); drag along an axis of the HTML "
            "page to keep only the lines that pass there."
        ),
        alt="parallel coordinates",
        panels=[
            Panel(
                [
                    Parallel(
                        dimensions, list(setups["mean"]), found.metric_words, found.lower_is_better
                    )
                ]
            )
        ],  # fmt: skip
        panel_size=(10.0, 4.2),
        legend="none",
    )


def _result_dimension(label: str, values: pd.Series) -> Dimension:
    """A result's axis; setups without a value (early stopping that never happens, no test
    split) at their own tick above the others, not dropped off the axis's end."""
    if values.notna().all():
        return Dimension(label, list(values))
    low, high = float(values.min()), float(values.max())
    missing = high + 0.15 * ((high - low) or max(abs(high), 1.0))
    epochs = "epoch" in label
    spaced = np.linspace(low, high, 5)
    ticks = [(float(v), f"{v:.3g}") for v in np.unique(np.round(spaced, 0 if epochs else 3))]
    word = "never" if epochs else "none"
    return Dimension(label, list(values.fillna(missing)), [*ticks, (missing, word)])


def capacity_chart(found: Study, colors: Colors) -> Chart | None:
    """The metric and the final training loss against parameter count, one line per value of
    the colour key (and depth, when width varies too: the line joins the widths), the mean over
    its setups at each size, each setup a faint dot; each panel on its own scale."""
    setups = found.setups[np.isfinite(found.setups["params"]) & (found.setups["params"] > 0)]
    if setups["params"].nunique() < 2 or not any(
        k in found.keys for k in ("model.depth", "model.width")
    ):
        return None
    both = "model.depth" in found.keys and "model.width" in found.keys
    lines = _capacity_lines(setups, colors, both)
    # setups stuck at chance or diverged run off the top rather than squeeze the others
    healthy = setups[~setups["verdict"].str.startswith(("stuck", "diverged"))]
    params = setups["params"].astype(float)
    x = Axis("parameters (log)", log=True, range=(params.min() / 1.25, params.max() * 1.25))
    panels = []
    for column, title in (("mean", found.metric_words), ("last_train_loss", "final training loss")):
        items = []
        for (value, depth), group in lines:
            line = group.groupby("params")[column].mean().sort_index()
            name = (f"{colors.key}={value}" if colors.key else str(value)) + (
                f", depth {depth}" if both else ""
            )
            label = f"{value}" + (f" d{depth}" if both else "") if len(lines) <= 6 else ""
            items.append(
                Line(line.index, line.to_numpy(float), mode="lines+markers",
                     color=colors.color(value), dash=_depth_dash(setups, depth) if both else
                     colors.dash(value), marker=colors.marker(value), group=str(value),
                     end_label=label, name=name, hover=f"{name}: mean over its setups of each size")
            )  # fmt: skip
            items.append(
                Line(group["params"], group[column], mode="markers", size=4, opacity=0.35,
                     color=colors.color(value), hover=list(group["setup"]), group=str(value))
            )  # fmt: skip
        metric = "loss" if column == "last_train_loss" else found.metric
        axis = metric_axis((healthy if len(healthy) else setups)[column], metric, title)
        panels.append(Panel(items, title=title, x=x, y=axis))
    return Chart(
        name="capacity",
        title="Capacity: results against parameter count",
        caption=(
            f"{found.metric_words.capitalize()} (left) and final training loss (right) against "
            "the parameter count: a line per value of "
            f"{colors.key or 'the sweep'} (and depth, by dash, where width varies too), the mean "
            "over its setups of that size, each setup a faint dot. Training loss keeps falling "
            "with capacity; where the validation side "
            "turns up, larger models overfit. Each panel has its own scale; setups stuck at "
            "chance or diverged run off its top."
        ),
        alt="capacity chart",
        panels=panels,
        columns=2,
        panel_size=(5.5, 3.8),
    )


def _capacity_lines(setups: pd.DataFrame, colors: Colors, by_depth: bool) -> list:
    """((colour value, depth), setups) per line of the capacity chart: the setups that differ
    only in width share a line when depth varies too."""
    value = setups[colors.key].map(show_value) if colors.key in setups else "all setups"
    keys = pd.DataFrame({"value": value, "depth": setups["model.depth"] if by_depth else 0})
    order = {v: i for i, v in enumerate(colors.values)}
    groups = list(setups.groupby([keys["value"], keys["depth"]], sort=False))
    return sorted(groups, key=lambda g: (order.get(g[0][0], len(order)), g[0][1]))


def _depth_dash(setups: pd.DataFrame, depth: object) -> str:
    depths = sorted(setups["model.depth"].unique())
    return DASHES[depths.index(depth) % len(DASHES)]


def intervals_chart(found: Study, word: str) -> Chart | None:
    """Per setup, the metric's mean and 95% interval over its seeds, best first; the best and
    worst setups only when there are many."""
    setups = found.setups[found.setups["mean"].notna()]
    if setups.empty or setups["n"].max() < 2:
        return None
    order = setups.sort_values("mean", ascending=found.lower_is_better, kind="stable")
    shown = order
    if len(order) > MAX_INTERVAL_ROWS:
        half = MAX_INTERVAL_ROWS // 2
        shown = pd.concat([order.iloc[:half], order.iloc[-half:]])
    positions = -np.arange(len(shown), dtype=float)
    items = [
        Line(shown["mean"], positions, mode="markers", marker="diamond", size=8, color=NEUTRAL,
             xerror=(shown["ci_low"], shown["ci_high"]), name=f"mean, 95% interval over {word}s",
             hover=[f"{s}: {format_metric(m, found.metric)} (n={n})" for s, m, n in zip(
                 shown["setup"], shown["mean"], shown["n"], strict=True)])
    ]  # fmt: skip
    ticks = list(zip(positions, shown["setup"], strict=True))
    healthy = shown[~shown["verdict"].str.startswith(("stuck", "diverged"))]
    scaled = healthy if len(healthy) else shown
    ends = [*scaled["ci_low"], *scaled["ci_high"]]
    x = metric_axis(scaled["mean"], found.metric, found.metric_words, ends)
    more = len(order) - len(shown)
    return Chart(
        name="intervals",
        title=f"Each setup's {found.metric_words}, mean and 95% interval over {word}s",
        caption=(
            f"Best at the top. The interval is mean ± t·s/√n over the setup's {word}s; two "
            "setups whose intervals overlap are not told apart by this sweep (comparisons.csv "
            "tests each pair)."
            + (
                f" Shown: the best and worst {len(shown) // 2} of {len(order)} setups."
                if more
                else ""
            )
        ),
        alt="intervals per setup",
        panels=[Panel(items, x=x, y=Axis(ticks=ticks))],
        panel_size=(7.5, 0.28 * len(shown) + 1.0),
        legend="bottom",
    )
