"""A `fitscope.report.spec.Chart` drawn with matplotlib as a PNG for report.md: on `Figure`
objects (no pyplot, no display), text as typed (mathtext off)."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib as mpl
import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize, to_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullLocator

from fitscope.report.spec import (
    Axis,
    Bars,
    Chart,
    Heatmap,
    Line,
    Panel,
    Parallel,
    Rule,
    Text,
)

DPI = 100
LINE_STYLES = {"solid": "-", "dash": "--", "dot": ":", "dashdot": "-."}
MARKER_SHAPES = {
    "circle": "o",
    "square": "s",
    "triangle-up": "^",
    "diamond": "D",
    "triangle-down": "v",
    "x": "x",
    "star": "*",
    "cross": "P",
}
COLORMAP = "viridis"


def _count(value: float) -> str:
    """1500 -> 1.5k, 2e6 -> 2M: a number on a log axis, short."""
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:g}{suffix}"
    return f"{value:g}"


def _axis(ax: Axes, which: str, spec: Axis) -> None:
    axis = ax.xaxis if which == "x" else ax.yaxis
    (ax.set_xlabel if which == "x" else ax.set_ylabel)(spec.title, fontsize=8)
    if spec.log:
        (ax.set_xscale if which == "x" else ax.set_yscale)("log")
        axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(FuncFormatter(lambda v, _: _count(v)))
        axis.set_minor_locator(NullLocator())  # minor ticks cost more to draw than they say
    if spec.range is not None:
        (ax.set_xlim if which == "x" else ax.set_ylim)(*spec.range)
    if spec.percent:
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{100 * v:.{_digits(ax, which)}f}%"))
    if spec.ticks is not None:
        positions = [p for p, _ in spec.ticks]
        (ax.set_xticks if which == "x" else ax.set_yticks)(positions, [t for _, t in spec.ticks])
    elif spec.integer:
        axis.set_major_locator(MaxNLocator(integer=True))


def _digits(ax: Axes, which: str) -> int:
    """Decimals of a percent axis: 1 when it spans less than 10 points, else 0."""
    low, high = ax.get_xlim() if which == "x" else ax.get_ylim()
    return 1 if abs(high - low) < 0.1 else 0


def _marker_every(item: Line) -> Any:
    return None if item.mode == "markers" else item.marker_every


def _line(ax: Axes, item: Line, legend: dict[str, Any]) -> None:
    x, y = np.asarray(item.x, float), np.asarray(item.y, float)
    if item.band is not None:
        ax.fill_between(
            x, item.band[0], item.band[1], color=item.color, alpha=item.band_opacity, lw=0
        )
    style = {
        "color": item.color,
        "alpha": item.opacity,
        "lw": item.width if "lines" in item.mode else 0,
        "ls": LINE_STYLES[item.dash] if "lines" in item.mode else "none",
        "marker": MARKER_SHAPES[item.marker] if "markers" in item.mode else None,
        "ms": item.size * 0.8,
        "markevery": _marker_every(item),
        "mfc": "white" if item.hollow else item.color,
    }
    if item.error is not None or item.xerror is not None:
        drawn = ax.errorbar(
            x, y, yerr=_spans(y, item.error), xerr=_spans(x, item.xerror), capsize=2.5,
            elinewidth=1.0, **style,
        ).lines[0]  # fmt: skip
    else:
        (drawn,) = ax.plot(x, y, **style)
    if item.name and item.name not in legend:
        legend[item.name] = drawn
        if item.legend_color:
            style = {**_handle_style(drawn), "color": item.legend_color}
            legend[item.name] = Line2D([], [], **{**style, "mfc": item.legend_color})
    if item.end_label and len(x):
        finite = np.flatnonzero(np.isfinite(y))
        if len(finite):
            last = finite[-1]
            ax.annotate(
                item.end_label,
                (x[last], y[last]),
                xytext=(4, 0),
                textcoords="offset points",
                fontsize=7,
                color=item.color,
                va="center",
            )


def _spans(values: np.ndarray, ends: tuple | None) -> list | None:
    """Error bar lengths below and above `values`, from their ends (None: no bars)."""
    if ends is None:
        return None
    low, high = np.asarray(ends[0], float), np.asarray(ends[1], float)
    return [np.nan_to_num(values - low), np.nan_to_num(high - values)]


def _rule(ax: Axes, item: Rule, legend: dict[str, Any]) -> None:
    style = {"color": item.color, "ls": LINE_STYLES[item.dash], "lw": item.width}
    drawn = ax.axvline(item.value, **style) if item.axis == "x" else ax.axhline(item.value, **style)
    if item.name:
        legend.setdefault(item.name, drawn)


def _heatmap(fig: Figure, ax: Axes, item: Heatmap) -> Any:
    cmap = colormaps[COLORMAP + ("_r" if item.reverse else "")]
    z = np.asarray(item.z, float)
    image = ax.imshow(
        np.ma.masked_invalid(z), cmap=cmap, vmin=item.zmin, vmax=item.zmax, aspect="auto"
    )
    norm = Normalize(item.zmin, item.zmax)
    for r, row in enumerate(item.text):
        for c, text in enumerate(row):
            value = z[r, c]
            dark = np.isfinite(value) and sum(to_rgb(cmap(norm(value)))) < 1.6
            ax.text(
                c,
                r,
                text,
                ha="center",
                va="center",
                fontsize=7.5,
                color="white" if dark else "#222222",
            )
    ax.set_xticks(range(len(item.columns)), item.columns, fontsize=8)
    ax.set_yticks(range(len(item.rows)), item.rows, fontsize=8)
    return image


def _bars(ax: Axes, item: Bars) -> None:
    positions = np.arange(len(item.labels))[::-1]
    values = np.asarray(item.values, float)
    low, high = np.asarray(item.low, float), np.asarray(item.high, float)
    errors = [np.nan_to_num(values - low), np.nan_to_num(high - values)]
    ax.barh(positions, values, color=item.colors, xerr=errors, capsize=3, alpha=0.85)
    ax.set_yticks(positions, item.labels, fontsize=8)
    ax.axvline(0, color="#555555", lw=0.8)
    for position, note, top in zip(positions, item.notes, np.fmax(high, values), strict=False):
        if note:
            ax.annotate(
                note, (top, position), xytext=(4, 0), textcoords="offset points",
                fontsize=7, va="center", color="#333333",
            )  # fmt: skip


def _parallel(fig: Figure, ax: Axes, item: Parallel) -> Any:
    """Each dimension scaled to [0, 1] on its own vertical axis; one line per row."""
    count = len(item.dimensions)
    scaled = []
    for dim in item.dimensions:
        values = np.asarray(dim.values, float)
        low, high = np.nanmin(values), np.nanmax(values)
        scaled.append((values - low) / (high - low) if high > low else np.full(len(values), 0.5))
        labels = dim.ticks or [(v, f"{v:.3g}") for v in np.linspace(low, high, 5)]
        for position, text in labels:
            where = (position - low) / (high - low) if high > low else 0.5
            ax.text(len(scaled) - 1 - 0.03, where, text, ha="right", va="center", fontsize=6.5)
    points = np.column_stack(scaled) if scaled else np.zeros((0, 0))
    segments = [np.column_stack([np.arange(count), row]) for row in points]
    cmap = colormaps[COLORMAP + ("_r" if item.reverse else "")]
    lines = LineCollection(segments, cmap=cmap, linewidths=0.8, alpha=0.55)
    lines.set_array(np.asarray(item.color, float))
    ax.add_collection(lines)
    ax.set_xlim(-0.35, count - 0.8)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xticks(range(count), [d.label for d in item.dimensions], fontsize=8)
    ax.set_yticks([])
    for i in range(count):
        ax.axvline(i, color="#555555", lw=0.8)
    return lines


def _text(ax: Axes, item: Text) -> None:
    ax.text(item.x, item.y, item.text, color=item.color, fontsize=item.size, ha=item.align,
            va="center")  # fmt: skip


def _panel(fig: Figure, ax: Axes, panel: Panel, legend: dict[str, Any]) -> Any:
    """Draws a panel's items; returns what a colour bar reads, if any."""
    mappable = None
    for item in panel.items:
        if isinstance(item, Line):
            _line(ax, item, legend)
        elif isinstance(item, Rule):
            _rule(ax, item, legend)
        elif isinstance(item, Heatmap):
            mappable = _heatmap(fig, ax, item)
        elif isinstance(item, Bars):
            _bars(ax, item)
        elif isinstance(item, Parallel):
            mappable = _parallel(fig, ax, item)
        elif isinstance(item, Text):
            _text(ax, item)
    if not any(isinstance(i, (Heatmap, Parallel, Bars)) for i in panel.items):
        _axis(ax, "x", panel.x)
        _axis(ax, "y", panel.y)
        ax.grid(alpha=0.25)
    elif isinstance(panel.items[0], Bars):
        _axis(ax, "x", panel.x)
        ax.grid(alpha=0.25, axis="x")
    ax.set_title(panel.title, fontsize=8.5, color=panel.title_color or "#222222")
    ax.tick_params(labelsize=7.5)
    return mappable


def _colorbar_title(chart: Chart) -> str:
    for panel in chart.panels:
        for item in panel.items:
            if isinstance(item, (Heatmap, Parallel)):
                return item.colorbar
    return ""


@dataclass(frozen=True)
class _Layout:
    """Where a chart's panels go, in inches: margins around the grid and gaps between panels,
    made to fit its tick labels, titles, legend and colour bar (a fixed layout costs a fraction
    of matplotlib's constrained one)."""

    left: float
    right: float
    top: float
    bottom: float
    gap_x: float
    gap_y: float
    width: float
    height: float


def _label_chars(chart: Chart) -> int:
    """The longest category label on a panel's y axis (matrix rows, bars, setups)."""
    longest = 0
    for panel in chart.panels:
        labels = [t for _, t in panel.y.ticks or []]
        for item in panel.items:
            if isinstance(item, Heatmap):
                labels += item.rows
            elif isinstance(item, Bars):
                labels += item.labels
        longest = max([longest, *(len(str(label)) for label in labels)])
    return longest


def _layout(chart: Chart, entries: int) -> _Layout:
    width, height = chart.panel_size
    heights = chart.heights()
    title_lines = max([1, *(p.title.count("\n") + 1 for p in chart.panels if p.title)])
    left = 0.75 + 0.062 * max(0, _label_chars(chart) - 4)
    has_bar = any(isinstance(i, (Heatmap, Parallel)) for p in chart.panels for i in p.items)
    right = 0.25 + (2.9 if chart.legend == "right" and entries else 0) + (1.2 if has_bar else 0)
    legend_rows = -(-entries // 4) if chart.legend == "bottom" else 0
    bottom = 0.55 + (0.2 * legend_rows + 0.15 if legend_rows else 0)
    top = 0.5 + 0.17 * title_lines
    gap_y = 0.62 + 0.17 * title_lines
    total_w = left + chart.columns * width + (chart.columns - 1) * left + right
    total_h = top + sum(heights) * height + (chart.rows - 1) * gap_y + bottom
    return _Layout(left, right, top, bottom, left, gap_y, total_w, total_h)


def figure(chart: Chart) -> Figure:
    """The chart as a matplotlib Figure."""
    width, height = chart.panel_size
    heights = chart.heights()
    names = {
        i.name for p in chart.panels for i in p.items if isinstance(i, (Line, Rule)) and i.name
    }
    box = _layout(chart, len(names))
    with mpl.rc_context({"text.parse_math": False}):
        fig = Figure(figsize=(box.width, box.height))
        grid = fig.add_gridspec(
            chart.rows,
            chart.columns,
            height_ratios=heights,
            left=box.left / box.width,
            right=1 - box.right / box.width,
            top=1 - box.top / box.height,
            bottom=box.bottom / box.height,
            wspace=box.gap_x / width,
            hspace=box.gap_y / (height * sum(heights) / len(heights)),
        )
        legend: dict[str, Any] = {}
        axes, mappable, first = [], None, None
        for i, panel in enumerate(chart.panels):
            row, column = divmod(i, chart.columns)
            share = {"sharex": first if chart.share_x else None}
            share["sharey"] = first if chart.share_y else None
            ax = fig.add_subplot(grid[row, column], **share)
            if not panel.visible:
                ax.set_visible(False)
                continue
            first = first or ax
            mappable = _panel(fig, ax, panel, legend) or mappable
            axes.append(ax)
        if mappable is not None:
            frame = [1 - (box.right - 0.3) / box.width, box.bottom / box.height]
            cax = fig.add_axes([*frame, 0.16 / box.width, 1 - (box.top + box.bottom) / box.height])
            fig.colorbar(mappable, cax=cax, label=_colorbar_title(chart))
        _legend(fig, legend, chart.legend, box)
        title = textwrap.fill(chart.title, int(box.width * 11))
        fig.suptitle(title, fontsize=10.5, y=1 - 0.12 / box.height, va="top")
    return fig


def _legend(fig: Figure, entries: dict[str, Any], where: str, box: _Layout) -> None:
    if not entries or where == "none":
        return
    handles = [Line2D([], [], **_handle_style(h)) for h in entries.values()]
    if where == "bottom":
        fig.legend(handles, list(entries), loc="lower center", fontsize=7.5, ncol=4,
                   bbox_to_anchor=(0.5, 0.02 / box.height), frameon=False)  # fmt: skip
    else:
        columns = 1 + len(entries) // 30
        anchor = (1 - 0.05 / box.width, 1 - box.top / box.height)
        fig.legend(handles, list(entries), loc="upper right", fontsize=7.5, ncol=columns,
                   bbox_to_anchor=anchor, frameon=False)  # fmt: skip


def _handle_style(handle: Any) -> dict[str, Any]:
    return {
        "color": handle.get_color(),
        "ls": handle.get_linestyle(),
        "lw": max(handle.get_linewidth(), 1.0) if handle.get_linestyle() != "None" else 0,
        "marker": handle.get_marker(),
        "mfc": handle.get_markerfacecolor(),
        "alpha": handle.get_alpha(),
    }


def save_png(chart: Chart, folder: Path) -> Path:
    """The chart as `<folder>/<chart.name>.png`."""
    path = folder / f"{chart.name}.png"
    with mpl.rc_context({"text.parse_math": False}):
        figure(chart).savefig(path, dpi=DPI)
    return path
