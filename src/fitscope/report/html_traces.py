"""A chart's items (`fitscope.report.spec`) as plotly traces: lines with their bands, error
bars and end labels, reference rules, heatmaps, bars, parallel coordinates and text, every
number JSON can hold (NaN a gap) and every hover text the run's or group's name."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from fitscope.report.spec import Bars, Heatmap, Line, Parallel, Rule, Text

COLORSCALE = "Viridis"
SYMBOLS = {
    "circle": "circle",
    "square": "square",
    "triangle-up": "triangle-up",
    "diamond": "diamond",
    "triangle-down": "triangle-down",
    "x": "x",
    "star": "star",
    "cross": "cross",
}


def numbers(values: Sequence[float] | np.ndarray) -> list[float | None]:
    """Numbers for JSON: NaN and infinities as null (a gap in the line)."""
    array = np.asarray(values, float)
    return [float(v) if math.isfinite(v) else None for v in array]


def _hover(item: Line) -> dict[str, Any]:
    if item.hover is None:
        return {"hoverinfo": "x+y+name" if item.name else "x+y"}
    texts = [item.hover] * len(item.x) if isinstance(item.hover, str) else list(item.hover)
    return {"hovertext": texts, "hovertemplate": "%{hovertext}<br>%{x}, %{y:.4g}<extra></extra>"}


def _band(item: Line, group: str, axes: dict[str, str]) -> list[dict[str, Any]]:
    """A line's band: its lower and upper edges, the space between them filled."""
    return [
        {
            "type": "scatter",
            "x": numbers(item.x),
            "y": numbers(edge),
            "mode": "lines",
            "line": {"width": 0, "color": item.color},
            "fill": "tonexty" if i else None,
            "fillcolor": _rgba(item.color, item.band_opacity),
            "hoverinfo": "skip",
            "showlegend": False,
            "legendgroup": group,
            **axes,
        }
        for i, edge in enumerate(item.band or ())
    ]


def _error_bars(item: Line, at: np.ndarray, ends: tuple) -> dict[str, Any]:
    low, high = np.asarray(ends[0], float), np.asarray(ends[1], float)
    return {
        "type": "data",
        "symmetric": False,
        "array": numbers(high - at),
        "arrayminus": numbers(at - low),
        "color": item.color,
        "thickness": 1.2,
        "width": 3,
    }


def line_traces(item: Line, shown: set, axes: dict[str, str]) -> list[dict[str, Any]]:
    """A line (its band first, its end label after it); `shown`: the (name, group) pairs that
    have a legend entry already (each gets one)."""
    group = item.group or item.name
    trace = {
        "type": "scatter",
        "x": numbers(item.x),
        "y": numbers(item.y),
        "mode": item.mode,
        "name": item.name,
        "legendgroup": group,
        "showlegend": bool(item.name) and (item.name, group) not in shown,
        "opacity": item.opacity,
        "line": {"color": item.color, "width": item.width, "dash": item.dash},
        **_hover(item),
        **axes,
    }
    if "markers" in item.mode:
        trace["marker"] = {
            "symbol": SYMBOLS[item.marker] + ("-open" if item.hollow else ""),
            "size": item.size,
            "color": item.color,
            "maxdisplayed": _markers_shown(item),
        }
    if item.error is not None:
        trace["error_y"] = _error_bars(item, np.asarray(item.y, float), item.error)
    if item.xerror is not None:
        trace["error_x"] = _error_bars(item, np.asarray(item.x, float), item.xerror)
    if item.name:
        shown.add((item.name, group))
    traces = [*_band(item, group, axes), trace]
    if item.end_label:
        traces.append(_end_label(item, axes))
    return traces


def _markers_shown(item: Line) -> int:
    """How many markers a line shows: every one (0), or about one each `marker_every` points."""
    return 0 if item.marker_every <= 1 else max(2, len(item.x) // item.marker_every)


def _end_label(item: Line, axes: dict[str, str]) -> dict[str, Any]:
    y = np.asarray(item.y, float)
    finite = np.flatnonzero(np.isfinite(y))
    last = int(finite[-1]) if len(finite) else 0
    return {
        "type": "scatter",
        "x": [float(item.x[last])] if len(finite) else [],
        "y": [float(y[last])] if len(finite) else [],
        "mode": "text",
        "text": [item.end_label],
        "textposition": "middle right",
        "textfont": {"color": item.color, "size": 10},
        "hoverinfo": "skip",
        "showlegend": False,
        "legendgroup": item.group or item.name,
        **axes,
    }


def _rgba(color: str, alpha: float) -> str:
    color = color.lstrip("#")
    r, g, b = (int(color[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def rule_trace(item: Rule, shown: set, axes: dict[str, str], bounds: tuple) -> dict[str, Any]:
    """A reference line as a two-point trace (so that it has a legend entry and hover text)."""
    low, high = bounds
    vertical = item.axis == "x"
    group = item.group or item.name
    trace = {
        "type": "scatter",
        "x": [item.value, item.value] if vertical else [low, high],
        "y": [low, high] if vertical else [item.value, item.value],
        "mode": "lines",
        "line": {"color": item.color, "dash": item.dash, "width": item.width},
        "name": item.name,
        "legendgroup": group,
        "showlegend": bool(item.name) and (item.name, group) not in shown,
        "hovertext": [item.hover or item.name] * 2,
        "hovertemplate": "%{hovertext}<extra></extra>",
        **axes,
    }
    if item.name:
        shown.add((item.name, group))
    return trace


def heatmap_trace(item: Heatmap, axes: dict[str, str]) -> dict[str, Any]:
    return {
        "type": "heatmap",
        "z": [[None if not math.isfinite(v) else v for v in row] for row in item.z],
        "x": item.columns,
        "y": item.rows,
        # plotly breaks a cell's text at <br>, never at "\n": one long line overflows its cell
        "text": [[text.replace("\n", "<br>") for text in row] for row in item.text],
        "texttemplate": "%{text}",
        "textfont": {"size": 11},
        "hovertext": item.hover,
        "hovertemplate": "%{hovertext}<extra></extra>",
        "coloraxis": "coloraxis",
        "xgap": 2,
        "ygap": 2,
        **axes,
    }


def bars_traces(item: Bars, axes: dict[str, str]) -> list[dict[str, Any]]:
    """The bars with their whiskers, and each note right of its whisker's end, where the
    whisker cannot cross it (plotly's own bar text sits at the bar's end, under the whisker)."""
    values = np.asarray(item.values, float)
    bars = {
        "type": "bar",
        "orientation": "h",
        "x": numbers(values),
        "y": item.labels,
        "marker": {"color": item.colors},
        "error_x": {
            "type": "data",
            "symmetric": False,
            "array": numbers(np.asarray(item.high, float) - values),
            "arrayminus": numbers(values - np.asarray(item.low, float)),
        },
        "hovertext": item.hover,
        "hovertemplate": "%{hovertext}<extra></extra>",
        "showlegend": False,
        **axes,
    }
    ends = np.fmax(np.asarray(item.high, float), values)
    noted = [i for i, note in enumerate(item.notes) if note and np.isfinite(ends[i])]
    if not noted:
        return [bars]
    notes = {
        "type": "scatter",
        "mode": "text",
        "x": numbers(ends[noted]),
        "y": [item.labels[i] for i in noted],
        "text": [" " + item.notes[i] for i in noted],
        "textposition": "middle right",
        "textfont": {"size": 11},
        "hoverinfo": "skip",
        "showlegend": False,
        "cliponaxis": False,
        **axes,
    }
    return [bars, notes]


def parallel_trace(item: Parallel) -> dict[str, Any]:
    dimensions = []
    for dim in item.dimensions:
        entry: dict[str, Any] = {"label": dim.label, "values": numbers(dim.values)}
        if dim.ticks:
            entry["tickvals"] = [p for p, _ in dim.ticks]
            entry["ticktext"] = [t for _, t in dim.ticks]
        dimensions.append(entry)
    return {
        "type": "parcoords",
        "dimensions": dimensions,
        "line": {
            "color": numbers(item.color),
            "colorscale": COLORSCALE,
            "reversescale": item.reverse,
            "showscale": True,
            "colorbar": {"title": {"text": item.colorbar}},
        },
    }


def text_trace(item: Text, axes: dict[str, str]) -> dict[str, Any]:
    position = {"left": "middle right", "right": "middle left", "center": "middle center"}
    return {
        "type": "scatter",
        "x": [item.x],
        "y": [item.y],
        "mode": "text",
        "text": [item.text],
        "textposition": position[item.align],
        "textfont": {"color": item.color, "size": item.size + 2},
        "hoverinfo": "skip",
        "showlegend": False,
        **axes,
    }
