"""What every chart of a report shares: one colour, dash and marker per value of the key that
groups the runs (activations keep fixed colours across reports), and metric axes zoomed to the
values they show."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fitscope.config import ACTIVATIONS, show_value
from fitscope.report.spec import DASHES, MARKERS, Axis
from fitscope.report.study import is_accuracy, key_values

PALETTE = [  # matplotlib's tab10, the same in the PNG and the HTML page
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
]
# One colour per activation, the same in every chart of every report.
ACTIVATION_COLORS = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(ACTIVATIONS)}
NEUTRAL = "#34495e"
HUGE = 1e300  # an axis ends below this: a huge loss is data, and must not overflow the scale
LOG_RATIO = 20  # a loss axis is logarithmic when its values span more than this factor


@dataclass(frozen=True)
class Colors:
    """The colour, dash and marker of each value of one key (`report.group_by`), for every chart
    of a report; activations keep their fixed colours."""

    key: str | None
    values: tuple[str, ...]

    @classmethod
    def of(cls, key: str | None, values: pd.Series | None) -> Colors:
        if key is None or values is None:
            return cls(None, ())
        return cls(key, tuple(show_value(v) for v in key_values(values)))

    def color(self, value: object) -> str:
        text = show_value(value)
        if self.key in ("activation", "activation.name") and text in ACTIVATION_COLORS:
            return ACTIVATION_COLORS[text]
        index = self.values.index(text) if text in self.values else len(self.values)
        return PALETTE[index % len(PALETTE)]

    def dash(self, value: object) -> str:
        text = show_value(value)
        return DASHES[self.values.index(text) % len(DASHES)] if text in self.values else "solid"

    def marker(self, value: object) -> str:
        text = show_value(value)
        return MARKERS[self.values.index(text) % len(MARKERS)] if text in self.values else "circle"


def metric_axis(
    values: Sequence[float], metric: str, title: str, extra: Sequence[float] = ()
) -> Axis:
    """An axis zoomed to `values` (accuracy in percent, never 0-100% when the differences are a
    few points); logarithmic for a loss that spans more than `LOG_RATIO`. `extra` (interval
    ends) widens it by at most half the values' span on either side: a wide interval runs off
    the panel rather than squeeze every value into a sliver."""
    finite = _finite(values)
    if finite.size == 0:
        return Axis(title=title, percent=is_accuracy(metric))
    low, high = float(finite.min()), float(finite.max())
    ends = _finite(extra)
    if ends.size:
        reach = 0.5 * (high - low) if high > low else 0.5 * max(abs(high), 1e-3)
        low, high = max(min(low, ends.min()), low - reach), min(max(high, ends.max()), high + reach)
    if is_accuracy(metric):
        low, high = max(low, 0.0), min(high, 1.0)
    if not is_accuracy(metric) and low > 0 and high / low > LOG_RATIO:
        return Axis(title=title + " (log)", log=True, range=(low / 1.3, min(high * 1.3, HUGE)))
    pad = 0.06 * (high - low) or 0.02 * max(abs(high), 1e-3)
    if not np.isfinite(pad):  # values near the float's limits: no room to pad
        return Axis(title=title, percent=is_accuracy(metric), range=(low, high))
    return Axis(title=title, percent=is_accuracy(metric), range=(low - pad, high + pad))


def _finite(values: Sequence[float]) -> np.ndarray:
    array = np.asarray(pd.to_numeric(pd.Series(list(values), dtype=object), errors="coerce"), float)
    return array[np.isfinite(array)]
