"""The report's charts, read from the matplotlib Figure objects a report saves: user text is never
mathtext, panels share one scale with the chance level, the overfitting rise is readable, marks
and epoch labels are unmistakable, large sweeps stay legible, every line can be named, and an
early stopping that never happens is said and not drawn."""

from __future__ import annotations

import json
import math
from itertools import combinations, product
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgb
from PIL import Image

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


def test_loss_panels_share_one_scale_with_the_chance_level(tmp_path, drawn):
    runs = [
        (FALLING, {"model.depth": 1}),
        (STUCK, {"model.depth": 8}),
        (RISING, {"model.depth": 2}),
    ]
    report(sweep(tmp_path, runs), tmp_path)
    panels = loss_panels(drawn["loss_curves.png"], runs)
    assert len(panels) == len(runs)
    assert len({ax.get_yscale() for ax in panels}) == 1
    assert len({tuple(np.round(ax.get_ylim(), 9)) for ax in panels}) == 1
    for ax in panels:  # ln 10: the loss of a net that has learnt nothing of 10 classes
        assert any(np.allclose(line.get_ydata(), math.log(10)) for line in ax.get_lines())
    # the stuck run is flat: its wandering covers less than 2% of the panel's height
    stuck = next(ax for ax in panels if np.allclose(curves_of(ax, EPOCHS)[0].get_ydata(), 2.303))
    y = stuck.transData.transform(np.c_[np.arange(EPOCHS), STUCK[0]])[:, 1]
    assert np.ptp(y) < 0.02 * stuck.bbox.height


def test_chance_level_comes_from_the_runs_class_count(tmp_path, drawn):
    runs = [(FALLING, {"model.depth": 1}), (GOOD_FIT, {"model.depth": 2})]
    report(sweep(tmp_path, runs, classes=[4, 4]), tmp_path)
    for ax in loss_panels(drawn["loss_curves.png"], runs):
        levels = [line.get_ydata()[0] for line in ax.get_lines() if np.ptp(line.get_ydata()) == 0]
        assert math.log(4) in levels and math.log(10) not in levels


def test_the_validation_rise_after_the_best_epoch_is_readable(tmp_path, drawn):
    runs = [(RISING, {"model.depth": 1}), (FALLING, {"model.depth": 2})]
    report(sweep(tmp_path, runs), tmp_path)
    fig, val = drawn["loss_curves.png"], np.asarray(RISING[0])
    best, last = int(np.argmin(val)), EPOCHS - 1
    shown = []  # how much of its panel's height the +8% rise spans, wherever val loss is drawn
    for ax in fig.axes:
        for line in curves_of(ax, EPOCHS):
            y = np.asarray(line.get_ydata(), float)
            if not np.array_equal(np.argsort(y, kind="stable"), np.argsort(val, kind="stable")):
                continue  # not this run's validation loss (or a transform of it)
            low, high = sorted(ax.get_ylim())
            if not (low <= y[best] <= high and low <= y[last] <= high):
                continue
            pixels = ax.transData.transform(np.c_[line.get_xdata(), y])[:, 1]
            shown.append((pixels[last] - pixels[best]) / ax.bbox.height)
    assert max(shown) > 0.25


def test_best_epoch_mark_is_unlike_the_curves_and_every_column_has_epoch_labels(tmp_path, drawn):
    runs = [(OVERFIT, {"model.depth": d}) for d in range(1, 6)]  # 4 columns: a second row of 1
    report(sweep(tmp_path, runs), tmp_path)
    fig = drawn["loss_curves.png"]
    best, stop = 4, 7  # OVERFIT's, with patience 5: see test_report
    for ax in loss_panels(fig, runs):
        curve_colors = [to_rgb(line.get_color()) for line in curves_of(ax, EPOCHS)]
        vertical = {
            x: line
            for line in ax.get_lines()
            if len(set(x := tuple(line.get_xdata()))) == 1 and len(x) == 2
        }
        best_line = vertical[(best, best)]
        assert best_line.get_linestyle() != "-"
        for color in curve_colors:
            assert np.linalg.norm(np.subtract(to_rgb(best_line.get_color()), color)) > 0.5
        stop_line = vertical.get((stop, stop))
        if stop_line is not None:
            style = (stop_line.get_linestyle(), stop_line.get_color())
            assert style != (best_line.get_linestyle(), best_line.get_color())
            assert stop_line.get_linestyle() != "-"
    columns: dict[float, list] = {}
    for ax in fig.axes:
        if ax.get_visible():
            columns.setdefault(round(ax.get_position().x0, 3), []).append(ax)
    assert len(columns) == 4
    for column in columns.values():
        lowest = min(column, key=lambda ax: ax.get_position().y0)
        assert any(label.get_visible() and label.get_text() for label in lowest.get_xticklabels())


def test_a_large_sweep_keeps_its_resolution_and_titles_do_not_overlap(tmp_path, drawn):
    values = product(("relu", "sigmoid", "tanh", "selu", "leaky"), (1, 8), (None, 0.5, 1.0))
    runs = [
        (OVERFIT, {"activation.name": a, "model.depth": d, "optimizer.grad_clip": c})
        for a, d, c in values
    ]
    assert len(runs) == 30
    large = report(sweep(tmp_path, runs), tmp_path, name="large")
    fig = drawn["loss_curves.png"]
    small_runs = runs[:4]
    small = report(sweep(tmp_path / "small", small_runs), tmp_path, name="small")
    # the large chart is drawn at the small one's resolution
    dpi = [Image.open(f / "loss_curves.png").info["dpi"] for f in (large, small)]
    assert dpi[0] == dpi[1]
    titles = [ax.title for ax in fig.axes if ax.get_title()]
    assert len(titles) == 30
    renderer = fig._get_renderer()
    boxes = [t.get_window_extent(renderer) for t in titles]
    assert not [(a, b) for a, b in combinations(boxes, 2) if a.overlaps(b)]
    assert min(t.get_fontsize() for t in titles) >= 8
    for title, (_, run) in zip(titles, runs, strict=True):  # each panel names its run
        assert run["activation.name"] in title.get_text()


def test_validation_lines_coloured_by_a_key_are_one_run_each(tmp_path, drawn):
    runs = [
        (curves, {"activation.name": a, "model.depth": d})
        for (a, curves), d in product((("relu", OVERFIT), ("tanh", GOOD_FIT)), (1, 4))
    ]
    report(sweep(tmp_path, runs), tmp_path)
    for name in ("val_by_activation.png", "val_by_model.depth.png"):
        fig = drawn[name]
        loss_axes = [ax for ax in fig.axes if "loss" in ax.get_ylabel()]
        lines = [curves_of(ax, EPOCHS) for ax in loss_axes]
        assert sum(len(own) for own in lines) == len(runs), name  # every run once
        for own in lines:  # within a panel, one colour per line
            assert len({to_rgb(line.get_color()) for line in own}) == len(own), name
        assert len({tuple(ax.get_ylim()) for ax in loss_axes}) == 1


def test_replicates_are_one_line_with_a_band(tmp_path, drawn):
    runs = [
        (curves, {"activation.name": a, "trainer.seed": seed})
        for (a, curves), seed in product((("relu", OVERFIT), ("tanh", GOOD_FIT)), (0, 1, 2))
    ]
    report(sweep(tmp_path, runs), tmp_path)
    (loss_ax, *_) = [ax for ax in drawn["val_by_activation.png"].axes if "loss" in ax.get_ylabel()]
    assert len(curves_of(loss_ax, EPOCHS)) == 2
    assert len(loss_ax.collections) == 2  # a ± std band each


def test_capacity_lines_join_only_runs_that_differ_in_width(tmp_path, drawn):
    setups = list(product(("relu", "tanh"), (1, 2), (16, 64)))
    runs = [
        (OVERFIT, {"activation.name": a, "model.depth": d, "model.width": w}) for a, d, w in setups
    ]
    params = [d * w * 100 + 1000 for _, d, w in setups]
    report(sweep(tmp_path, runs, params=params), tmp_path)
    fig = drawn["capacity.png"]
    for ax in fig.axes:
        if not ax.get_lines():
            continue
        lines = [line for line in ax.get_lines() if set(line.get_xdata()) <= set(params)]
        assert len(lines) == 4  # one per (activation, depth), across the two widths
        labels = [line.get_label() for line in lines]
        assert len(set(labels)) == 4
        for label, line in zip(labels, lines, strict=True):
            activation, depth = label.split()[0], int(label.split("depth=")[1])
            expected = sorted(
                p
                for p, (a, d, _) in zip(params, setups, strict=True)
                if (a, d) == (activation, depth)
            )
            assert list(line.get_xdata()) == expected


def test_capacity_leaves_out_parameter_counts_a_log_axis_cannot_show(tmp_path, drawn):
    # a damaged summary.json may hold any number as `params` (found by the damaged-runs test)
    runs = [(OVERFIT, {"model.width": w}) for w in (8, 16, 32, 64)]
    report(sweep(tmp_path, runs, params=[-math.inf, 0, 2_000, 8_000]), tmp_path)
    fig = drawn["capacity.png"]
    data = [line for ax in fig.axes for line in ax.get_lines() if list(line.get_xdata()) != [0, 1]]
    xs = {x for line in data for x in line.get_xdata()}  # (not the chance level's line)
    assert xs == {2_000, 8_000}


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
