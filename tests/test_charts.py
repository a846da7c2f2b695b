"""The report's charts, read from the matplotlib Figure objects a report saves: user text is never
mathtext, panels share one scale with the chance level, the overfitting rise is readable, marks
and epoch labels are unmistakable, large sweeps stay legible, every line can be named, and an
early stopping that never happens is said and not drawn."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fitscope.report import charts, layer_charts
from fitscope.report.build import build_report
from fitscope.report.settings import ReportSettings
from test_report import BASE_CONFIG, CHOICES, GOOD_FIT, NOT_CONVERGED, OVERFIT, make_run

EPOCHS = 10
FALLING = (
    [2.3 * 0.75**e + 0.25 for e in range(EPOCHS)],
    [2.3 * 0.7**e + 0.2 for e in range(EPOCHS)],
    [0.95] * EPOCHS,
)
# a net stuck at chance: validation loss wanders by 0.001 around ln 10
STUCK = (
    [2.3031, 2.3029, 2.3042, 2.3034, 2.3033, 2.3028, 2.3036, 2.3040, 2.3031, 2.3044],
    [2.3030] * EPOCHS,
    [0.1] * EPOCHS,
)
# the quickstart's overfitting: validation loss +8% over its minimum while training loss falls to
# 0.001, which a log scale flattens
RISING = (
    [0.45, 0.3, 0.23, 0.2, 0.19, 0.195, 0.198, 0.2, 0.203, 0.205],
    [0.5 * 0.5**e for e in range(EPOCHS)],
    [0.8, 0.9, 0.95, 0.99, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
)


@pytest.fixture
def drawn(monkeypatch) -> dict[str, object]:
    """The figures the charts save, by file name."""
    figures = {}
    original = charts.save

    def keep(fig, path, *args, **kwargs):
        figures[Path(path).name] = fig
        return original(fig, path, *args, **kwargs)

    monkeypatch.setattr(charts, "save", keep)
    monkeypatch.setattr(layer_charts, "save", keep)
    return figures


def config(**values) -> dict:
    """BASE_CONFIG with `section.key` values."""
    result = json.loads(json.dumps(BASE_CONFIG))
    for dotted, value in values.items():
        section, key = dotted.split(".")
        result[section][key] = value
    return result


def sweep(tmp_path: Path, runs: list[tuple[tuple, dict]], **summary) -> Path:
    """A sweep folder of runs given as (curves, {dotted key: value}); `summary` values (a list:
    one per run) are written into each run's summary.json."""
    folder = tmp_path / "sweep"
    for i, (curves, values) in enumerate(runs):
        choices = {**CHOICES, "activation": values.get("activation.name", "relu")}
        run = make_run(folder / str(i), curves, config=config(**values), choices=choices)
        record = json.loads((run / "summary.json").read_text())
        record.update({key: value[i] for key, value in summary.items()})
        (run / "summary.json").write_text(json.dumps(record))
    return folder


def report(folder: Path, tmp_path: Path, name: str | None = None, **settings) -> Path:
    reports = ReportSettings.from_mapping(dir=str(tmp_path / "reports"), **settings)
    return build_report([folder], reports, name)


def curves_of(ax, points: int) -> list:
    """The lines of `ax` that are curves (one point per epoch), not reference lines."""
    return [line for line in ax.get_lines() if len(line.get_xdata()) == points]


def loss_panels(fig, runs: list[tuple]) -> list:
    """The axes that draw a run's training loss curve."""
    trains = [np.asarray(curves[1], float) for curves, _ in runs]
    return [
        ax
        for ax in fig.axes
        if any(
            np.allclose(np.asarray(line.get_ydata(), float), train)
            for line in curves_of(ax, EPOCHS)
            for train in trains
        )
    ]


def test_dollar_signs_and_backslashes_in_config_values_are_text(tmp_path, drawn):
    odd = "$\\notacommand{$"
    runs = [
        (OVERFIT, {"data.root": odd, "activation.name": "relu", "model.width": 16}),
        (GOOD_FIT, {"data.root": "plain", "activation.name": "tanh", "model.width": 64}),
    ]
    folder = report(sweep(tmp_path, runs, params=[1000, 4000]), tmp_path)
    for name in ("loss_curves.png", "val_by_data.root.png", "capacity.png", "report.html"):
        assert (folder / name).is_file(), name
    texts = [
        t.get_text() for t in drawn["loss_curves.png"].findobj(lambda a: hasattr(a, "get_text"))
    ]
    assert any(odd in text for text in texts)  # shown as typed


def test_an_early_stopping_that_never_happens_is_said_not_drawn(tmp_path, drawn):
    runs = [(NOT_CONVERGED, {"model.depth": 1}), (OVERFIT, {"model.depth": 2})]
    folder = report(sweep(tmp_path, runs), tmp_path, patience=3)
    table = pd.read_csv(folder / "runs.csv")
    assert math.isnan(table.loc[0, "early_stopping_epoch"])
    assert table.loc[1, "early_stopping_epoch"] == 7
    assert table.loc[0, "restored_epoch"] == table.loc[0, "best_epoch"] == EPOCHS
    markdown = (folder / "report.md").read_text()
    row = next(line for line in markdown.splitlines() if line.startswith("| model.depth=1 "))
    cells = [cell.strip() for cell in row.split("|")]
    header = next(line for line in markdown.splitlines() if "early_stopping_epoch" in line)
    column = [cell.strip() for cell in header.split("|")].index("early_stopping_epoch")
    assert cells[column] == "never"
    assert "never" in markdown.split("## Definitions")[1].split("##")[0]
    assert ">never</td>" in (folder / "report.html").read_text()
    panels = loss_panels(drawn["loss_curves.png"], runs)
    never, stops = panels
    assert [
        x for x in (tuple(line.get_xdata()) for line in never.get_lines()) if x == (EPOCHS,) * 2
    ] == [(EPOCHS,) * 2]  # the best epoch only, no line for the stop
    assert any(tuple(line.get_xdata()) == (7, 7) for line in stops.get_lines())
