"""A chart described once, drawn twice: `Chart` holds panels of lines, bands, error bars,
reference rules, heatmaps, bars, text and parallel coordinates in data terms (values, colours,
dashes, markers, hover text, legend groups). `fitscope.report.draw_png` draws it with
matplotlib for report.md, `fitscope.report.draw_html` with plotly for report.html, so that both
pages show the same view with the same colours.

Every text is the user's text as typed (config values, run names): neither backend reads it as
markup or mathtext.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

DASHES = ("solid", "dash", "dot", "dashdot")
MARKERS = ("circle", "square", "triangle-up", "diamond", "triangle-down", "x", "star", "cross")


@dataclass
class Line:
    """A curve or a set of points; with `band`, a filled range around it; with `error`, error
    bars from `error[0]` to `error[1]` at each point."""

    x: Sequence[float]
    y: Sequence[float]
    name: str = ""  # the legend entry ("" for none); one entry per name and group
    group: str = ""  # a legend group: clicking its entry shows it alone, in every panel
    color: str = "#444444"
    legend_color: str | None = None  # the PNG legend's colour for an entry that names a style
    dash: str = "solid"  # DASHES
    width: float = 1.5
    mode: str = "lines"  # lines, markers, lines+markers
    marker: str = "circle"  # MARKERS
    marker_every: int = 1  # with lines+markers: a marker on every k-th point
    size: float = 6.0
    hollow: bool = False
    opacity: float = 1.0
    hover: Sequence[str] | str | None = None  # per point, or one text for the whole line
    band: tuple[Sequence[float], Sequence[float]] | None = None
    band_opacity: float = 0.18
    error: tuple[Sequence[float], Sequence[float]] | None = None
    xerror: tuple[Sequence[float], Sequence[float]] | None = None  # horizontal error bars
    end_label: str = ""  # written beside the last point: a line named where it ends

    def __post_init__(self) -> None:  # numbers as float arrays, whatever frame they came from
        self.x, self.y = _floats(self.x), _floats(self.y)
        for name in ("band", "error", "xerror"):
            ends = getattr(self, name)
            if ends is not None:
                setattr(self, name, (_floats(ends[0]), _floats(ends[1])))
        if self.hover is not None and not isinstance(self.hover, str):
            self.hover = [str(h) for h in self.hover]


def _floats(values: Sequence[float]) -> np.ndarray:
    return np.asarray(pd.to_numeric(pd.Series(list(values), dtype=object), errors="coerce"), float)


@dataclass
class Rule:
    """A reference line across a panel: vertical at x=`value` (`axis` "x") or horizontal."""

    axis: str
    value: float
    color: str = "#7f8c8d"
    dash: str = "dot"
    width: float = 1.2
    name: str = ""
    group: str = ""
    hover: str = ""


@dataclass
class Heatmap:
    """Cells coloured by `z` (rows x columns, NaN empty) with `text` written in each; `reverse`
    when lower values are better, so that brighter is better either way."""

    z: list[list[float]]
    text: list[list[str]]
    rows: list[str]
    columns: list[str]
    hover: list[list[str]]
    zmin: float
    zmax: float
    reverse: bool = False
    colorbar: str = ""


@dataclass
class Bars:
    """Horizontal bars, first label at the top, with interval whiskers and a note beside each."""

    labels: list[str]
    values: list[float]
    low: list[float]
    high: list[float]
    colors: list[str]
    hover: list[str]
    notes: list[str] = field(default_factory=list)


@dataclass
class Dimension:
    """One axis of parallel coordinates: numbers, or categories with `ticks` (position, name)."""

    label: str
    values: list[float]
    ticks: list[tuple[float, str]] | None = None


@dataclass
class Parallel:
    """Parallel coordinates: one line per row across `dimensions`, coloured by `color`."""

    dimensions: list[Dimension]
    color: list[float]
    colorbar: str
    reverse: bool = False


@dataclass
class Text:
    x: float
    y: float
    text: str
    color: str = "#333333"
    size: float = 8.0
    align: str = "left"  # where the text starts: left of it is the point, or right, or center


Item = Line | Rule | Heatmap | Bars | Parallel | Text


@dataclass
class Axis:
    title: str = ""
    log: bool = False
    range: tuple[float, float] | None = None
    percent: bool = False  # values are fractions, ticks read as percent
    ticks: list[tuple[float, str]] | None = None  # categories at positions
    integer: bool = False  # ticks at whole numbers only (epochs)


@dataclass
class Panel:
    items: list[Item] = field(default_factory=list)
    title: str = ""
    title_color: str | None = None
    x: Axis = field(default_factory=Axis)
    y: Axis = field(default_factory=Axis)
    visible: bool = True  # False: an empty place in the grid


@dataclass
class Chart:
    """A figure: `panels` in a grid of `columns`, row after row; `row_heights` repeats over the
    rows (e.g. [2.5, 1]: a tall panel row, then a short one). `panel_size`: inches of a panel in
    the PNG (the HTML uses 100 px an inch)."""

    name: str  # the PNG's file stem and the HTML element's id
    title: str
    caption: str  # what the chart shows, written above it on both pages
    alt: str
    panels: list[Panel]
    columns: int = 1
    panel_size: tuple[float, float] = (6.0, 3.6)
    row_heights: list[float] | None = None
    share_x: bool = False
    share_y: bool = False
    legend: str = "right"  # right, bottom, none

    @property
    def rows(self) -> int:
        return -(-len(self.panels) // self.columns)

    def heights(self) -> list[float]:
        """The relative height of each row."""
        pattern = self.row_heights or [1.0]
        return [pattern[i % len(pattern)] for i in range(self.rows)]
