"""A `fitscope.report.spec.Chart` drawn with plotly for report.html: hover names each line's
run or group, clicking a legend entry shows its group alone (double click: hide it), and the
page holds plotly's script once (`plotly_script`), so the report opens from disk with no
network."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

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

PX_PER_INCH = 100
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
CONFIG = {"displaylogo": False, "responsive": True, "modeBarButtonsToRemove": ["sendDataToCloud"]}


def plotly_script() -> str:
    """plotly.js, to be inlined once in the page."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def _values(values: Sequence[float] | np.ndarray) -> list[float | None]:
    """Numbers for JSON: NaN and infinities as null (a gap in the line)."""
    array = np.asarray(values, float)
    return [float(v) if math.isfinite(v) else None for v in array]


def _hover(item: Line) -> dict[str, Any]:
    if item.hover is None:
        return {"hoverinfo": "x+y+name" if item.name else "x+y"}
    texts = [item.hover] * len(item.x) if isinstance(item.hover, str) else list(item.hover)
    return {"hovertext": texts, "hovertemplate": "%{hovertext}<br>%{x}, %{y:.4g}<extra></extra>"}


def _line(item: Line, shown: set[str], axes: dict[str, str]) -> list[dict[str, Any]]:
    group = item.group or item.name
    traces = []
    if item.band is not None:
        for i, edge in enumerate(item.band):
            traces.append(
                {
                    "type": "scatter",
                    "x": _values(item.x),
                    "y": _values(edge),
                    "mode": "lines",
                    "line": {"width": 0, "color": item.color},
                    "fill": "tonexty" if i else None,
                    "fillcolor": _rgba(item.color, item.band_opacity),
                    "hoverinfo": "skip",
                    "showlegend": False,
                    "legendgroup": group,
                    **axes,
                }
            )
    trace = {
        "type": "scatter",
        "x": _values(item.x),
        "y": _values(item.y),
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
            "maxdisplayed": 0
            if item.marker_every <= 1
            else max(2, len(item.x) // item.marker_every),
        }
    if item.error is not None:
        low, high = np.asarray(item.error[0], float), np.asarray(item.error[1], float)
        y = np.asarray(item.y, float)
        trace["error_y"] = {
            "type": "data",
            "symmetric": False,
            "array": _values(high - y),
            "arrayminus": _values(y - low),
            "color": item.color,
            "thickness": 1.2,
            "width": 3,
        }
    if item.xerror is not None:
        low, high = np.asarray(item.xerror[0], float), np.asarray(item.xerror[1], float)
        x = np.asarray(item.x, float)
        trace["error_x"] = {
            "type": "data",
            "symmetric": False,
            "array": _values(high - x),
            "arrayminus": _values(x - low),
            "color": item.color,
            "thickness": 1.2,
            "width": 3,
        }
    if item.name:
        shown.add((item.name, group))
    traces.append(trace)
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


def _rule(item: Rule, shown: set, axes: dict[str, str], bounds: tuple) -> dict[str, Any]:
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


def _heatmap(item: Heatmap, axes: dict[str, str]) -> dict[str, Any]:
    return {
        "type": "heatmap",
        "z": [[None if not math.isfinite(v) else v for v in row] for row in item.z],
        "x": item.columns,
        "y": item.rows,
        "text": item.text,
        "texttemplate": "%{text}",
        "textfont": {"size": 12},
        "hovertext": item.hover,
        "hovertemplate": "%{hovertext}<extra></extra>",
        "coloraxis": "coloraxis",
        "xgap": 2,
        "ygap": 2,
        **axes,
    }


def _bars(item: Bars, axes: dict[str, str]) -> dict[str, Any]:
    values = np.asarray(item.values, float)
    return {
        "type": "bar",
        "orientation": "h",
        "x": _values(values),
        "y": item.labels,
        "marker": {"color": item.colors},
        "error_x": {
            "type": "data",
            "symmetric": False,
            "array": _values(np.asarray(item.high, float) - values),
            "arrayminus": _values(values - np.asarray(item.low, float)),
        },
        "text": item.notes or None,
        "textposition": "outside",
        "hovertext": item.hover,
        "hovertemplate": "%{hovertext}<extra></extra>",
        "showlegend": False,
        **axes,
    }


def _parallel(item: Parallel) -> dict[str, Any]:
    dimensions = []
    for dim in item.dimensions:
        entry: dict[str, Any] = {"label": dim.label, "values": _values(dim.values)}
        if dim.ticks:
            entry["tickvals"] = [p for p, _ in dim.ticks]
            entry["ticktext"] = [t for _, t in dim.ticks]
        dimensions.append(entry)
    return {
        "type": "parcoords",
        "dimensions": dimensions,
        "line": {
            "color": _values(item.color),
            "colorscale": COLORSCALE,
            "reversescale": item.reverse,
            "showscale": True,
            "colorbar": {"title": {"text": item.colorbar}},
        },
    }


def _text(item: Text, axes: dict[str, str]) -> dict[str, Any]:
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


def _axis_layout(spec: Axis) -> dict[str, Any]:
    layout: dict[str, Any] = {"title": {"text": spec.title, "font": {"size": 11}}}
    if spec.log:
        layout["type"] = "log"
        if spec.range is not None and spec.ticks is None:
            ticks = _log_ticks(*spec.range)
            layout.update(tickmode="array", tickvals=ticks, ticktext=[_short(t) for t in ticks])
    if spec.range is not None:
        low, high = spec.range
        layout["range"] = [math.log10(low), math.log10(high)] if spec.log else [low, high]
    if spec.percent:
        span = (spec.range[1] - spec.range[0]) if spec.range else 1.0
        layout["tickformat"] = ".1%" if span < 0.1 else ".0%"
    if spec.ticks is not None:
        layout["tickvals"] = [p for p, _ in spec.ticks]
        layout["ticktext"] = [t for _, t in spec.ticks]
    elif spec.integer:
        layout["tickformat"] = "d"
    return layout


def _log_ticks(low: float, high: float) -> list[float]:
    """1, 2 and 5 times each power of ten between `low` and `high` (1 alone over wide ranges),
    as the PNG's log axes label them."""
    if not (0 < low < high < math.inf):
        return []
    steps = (1.0, 2.0, 5.0) if high / low <= 1000 else (1.0,)
    first, last = max(-300, math.floor(math.log10(low))), min(300, math.ceil(math.log10(high)))
    every = max(1, (last - first) // 12)  # at most a dozen labels over a huge range
    ticks = [step * 10.0**power for power in range(first, last + 1, every) for step in steps]
    return [t for t in ticks if low <= t <= high]


def _short(value: float) -> str:
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:g}{suffix}"
    return f"{value:g}"


def _panel_traces(panel: Panel, index: int, shown: set) -> list[dict[str, Any]]:
    suffix = "" if index == 1 else str(index)
    axes = {"xaxis": f"x{suffix}", "yaxis": f"y{suffix}"}
    traces = []
    y_bounds = _bounds(panel, "y")
    for item in panel.items:
        if isinstance(item, Line):
            traces += _line(item, shown, axes)
        elif isinstance(item, Rule):
            span = y_bounds if item.axis == "x" else _bounds(panel, "x")
            traces.append(_rule(item, shown, axes, span))
        elif isinstance(item, Heatmap):
            traces.append(_heatmap(item, axes))
        elif isinstance(item, Bars):
            traces.append(_bars(item, axes))
        elif isinstance(item, Text):
            traces.append(_text(item, axes))
    return traces


def _bounds(panel: Panel, which: str) -> tuple[float, float]:
    """The range a rule spans: the axis' own, else the data's."""
    spec = panel.x if which == "x" else panel.y
    if spec.range is not None:
        return spec.range
    values = [
        v
        for item in panel.items
        if isinstance(item, Line)
        for v in np.asarray(item.x if which == "x" else item.y, float).ravel()
        if math.isfinite(v)
    ]
    if not values:
        return (0.0, 1.0)
    return (min(values), max(values))


def _grid(chart: Chart, height: float) -> dict[str, Any]:
    """A layout with an x and a y axis per panel, in a grid as plotly's make_subplots places
    them (row after row, `row_heights` repeating), each panel's title above it; `height`: the
    plotting area's pixels, which the gaps between rows are made from (ticks and titles)."""
    heights = chart.heights()
    across = min(0.08, 0.4 / max(chart.columns, 1))
    lines = max([1, *(p.title.count("\n") + 1 for p in chart.panels if p.title)])
    down = min(0.3 / max(chart.rows - 1, 1), (40 + 16 * lines) / height)
    width = (1 - (chart.columns - 1) * across) / chart.columns
    room = (1 - (chart.rows - 1) * down) / sum(heights)
    layout: dict[str, Any] = {"annotations": []}
    for index in range(1, len(chart.panels) + 1):
        row, column = divmod(index - 1, chart.columns)
        top = 1 - room * sum(heights[:row]) - down * row
        x = [column * (width + across), column * (width + across) + width]
        y = [top - room * heights[row], top]
        suffix = "" if index == 1 else str(index)
        layout[f"xaxis{suffix}"] = {"domain": x, "anchor": f"y{suffix}"}
        layout[f"yaxis{suffix}"] = {"domain": y, "anchor": f"x{suffix}"}
        if index > 1 and chart.share_x:
            layout[f"xaxis{suffix}"]["matches"] = "x"
        if index > 1 and chart.share_y:
            layout[f"yaxis{suffix}"]["matches"] = "y"
        title = chart.panels[index - 1].title
        if title:
            layout["annotations"].append(
                {
                    "text": html.escape(title).replace("\n", "<br>"),
                    "x": (x[0] + x[1]) / 2,
                    "y": y[1],
                    "xref": "paper",
                    "yref": "paper",
                    "xanchor": "center",
                    "yanchor": "bottom",
                    "showarrow": False,
                    "font": {"size": 12},
                }
            )
    return layout


def figure_dict(chart: Chart) -> dict[str, Any]:
    """The chart as a plotly figure (a dict: data and layout)."""
    width, height = chart.panel_size
    if any(isinstance(i, Parallel) for p in chart.panels for i in p.items):
        item = next(i for p in chart.panels for i in p.items if isinstance(i, Parallel))
        layout = {
            "height": int(height * PX_PER_INCH),
            "margin": {"l": 80, "r": 40, "t": 90, "b": 30},
        }
        return {"data": [_parallel(item)], "layout": {**layout, **_title(chart)}}
    pixels = int(sum(chart.heights()) * height * PX_PER_INCH * 0.9 + 120)
    layout = _grid(chart, pixels - 140)
    shown: set = set()
    data = []
    for index, panel in enumerate(chart.panels, start=1):
        data += _panel_traces(panel, index, shown)
        suffix = "" if index == 1 else str(index)
        layout.setdefault(f"xaxis{suffix}", {}).update(_axis_layout(panel.x))
        layout.setdefault(f"yaxis{suffix}", {}).update(_axis_layout(panel.y))
        if not panel.visible:
            layout[f"xaxis{suffix}"]["visible"] = layout[f"yaxis{suffix}"]["visible"] = False
    _heatmap_scale(chart, layout)
    layout.update(
        height=pixels,
        template=_template(),
        hovermode="closest",
        legend={"itemclick": "toggleothers", "itemdoubleclick": "toggle", "font": {"size": 11}},
        margin={"l": 70, "r": 20, "t": 90, "b": 50},
        showlegend=chart.legend != "none",
        **_title(chart),
    )
    return {"data": data, "layout": layout}


def _template() -> dict[str, Any]:
    """plotly's white theme, as the dict a figure embeds."""
    import plotly.io as pio

    return pio.templates["plotly_white"].to_plotly_json()


def _title(chart: Chart) -> dict[str, Any]:
    return {"title": {"text": html.escape(chart.title), "font": {"size": 15}, "x": 0.01}}


def _heatmap_scale(chart: Chart, layout: dict[str, Any]) -> None:
    maps = [i for p in chart.panels for i in p.items if isinstance(i, Heatmap)]
    if maps:
        first = maps[0]
        layout["coloraxis"] = {
            "colorscale": COLORSCALE,
            "reversescale": first.reverse,
            "cmin": first.zmin,
            "cmax": first.zmax,
            "colorbar": {"title": {"text": first.colorbar}},
        }
        for key in [k for k in layout if k.startswith("yaxis")]:
            layout[key]["autorange"] = "reversed"  # the first row at the top, as in the PNG
            layout[key]["type"] = "category"
        for key in [k for k in layout if k.startswith("xaxis")]:
            layout[key]["type"] = "category"


def html_div(chart: Chart) -> str:
    """The chart as an HTML element that draws itself with the page's plotly."""
    import plotly.io as pio

    return pio.to_html(
        figure_dict(chart),
        full_html=False,
        include_plotlyjs=False,
        div_id=f"chart-{chart.name}",
        config=CONFIG,
        validate=False,
    )
