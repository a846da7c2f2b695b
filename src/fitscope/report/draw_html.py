"""A `fitscope.report.spec.Chart` drawn with plotly for report.html: hover names each line's
run or group, clicking a legend entry shows its group alone (double click: hide it), and the
page holds plotly's script once (`plotly_script`), so the report opens from disk with no
network."""

from __future__ import annotations

import html
import math
from typing import Any

import numpy as np

from fitscope.report.html_traces import (
    COLORSCALE,
    bars_traces,
    heatmap_trace,
    line_traces,
    parallel_trace,
    rule_trace,
    text_trace,
)
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
CONFIG = {"displaylogo": False, "responsive": True, "modeBarButtonsToRemove": ["sendDataToCloud"]}


def plotly_script() -> str:
    """plotly.js, to be inlined once in the page."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


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
            traces += line_traces(item, shown, axes)
        elif isinstance(item, Rule):
            span = y_bounds if item.axis == "x" else _bounds(panel, "x")
            traces.append(rule_trace(item, shown, axes, span))
        elif isinstance(item, Heatmap):
            traces.append(heatmap_trace(item, axes))
        elif isinstance(item, Bars):
            traces += bars_traces(item, axes)
        elif isinstance(item, Text):
            traces.append(text_trace(item, axes))
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
    down = min(0.3 / max(chart.rows - 1, 1), (56 + 16 * lines) / height)
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
        return {"data": [parallel_trace(item)], "layout": {**layout, **_title(chart)}}
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
