"""The report's charts, read from the chart specs both pages draw (`fitscope.report.spec`) and
from the matplotlib figures of report.md: user text is never mathtext, panels share one scale
with the chance level, the overfitting rise is readable, marks are unmistakable, overlapping
lines stay apart, a value has one colour everywhere, axes zoom to the differences, no line
crosses layers its net does not have, and a large sweep draws groups, not runs."""

from __future__ import annotations

import json
import math
from itertools import combinations, product
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb

from fitscope.report import draw_html, draw_png
from fitscope.report.build import ReportError, build_report, study_views
from fitscope.report.frames import collect
from fitscope.report.settings import ReportSettings
from fitscope.report.spec import Chart, Heatmap, Line, Panel, Rule, Text
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


def charts(folder: Path, **settings) -> dict[str, Chart]:
    """The charts a report of `folder` draws, by name."""
    views = study_views(collect([folder], ReportSettings.from_mapping(**settings)))
    return {name: chart for name, chart in views.charts.items() if chart is not None}


def report(folder: Path, tmp_path: Path, name: str | None = None, **settings) -> Path:
    reports = ReportSettings.from_mapping(dir=str(tmp_path / "reports"), **settings)
    return build_report([folder], reports, name)


def lines(panel: Panel) -> list[Line]:
    return [item for item in panel.items if isinstance(item, Line)]


def rules(panel: Panel, axis: str) -> list[Rule]:
    return [item for item in panel.items if isinstance(item, Rule) and item.axis == axis]


def loss_panels(chart: Chart) -> list[Panel]:
    """The per-run chart's loss panels (each titled with its run); the rise panels have none."""
    return [panel for panel in chart.panels if panel.visible and panel.title]


def rise_panels(chart: Chart) -> list[Panel]:
    return [panel for panel in chart.panels if panel.visible and not panel.title]


def test_dollar_signs_and_backslashes_in_config_values_are_text(tmp_path):
    odd = "$\\notacommand{$"
    runs = [
        (OVERFIT, {"data.root": odd, "activation.name": "relu", "model.width": 16}),
        (GOOD_FIT, {"data.root": "plain", "activation.name": "tanh", "model.width": 64}),
    ]
    folder = sweep(tmp_path, runs, params=[1000, 4000])
    drawn = charts(folder)
    assert any(odd in panel.title for panel in loss_panels(drawn["runs"]))
    for chart in drawn.values():  # every figure draws, and shows the text as typed
        figure = draw_png.figure(chart)
        figure.canvas.draw()
        if chart.name == "runs":
            texts = [t.get_text() for t in figure.findobj(lambda a: hasattr(a, "get_text"))]
            assert any(odd in text for text in texts)
    page = (report(folder, tmp_path) / "report.html").read_text()
    assert odd.replace("$", "&#x27;") not in page  # escaped once, as text


def test_loss_panels_share_one_scale_with_the_chance_level(tmp_path):
    runs = [
        (FALLING, {"model.depth": 1}),
        (STUCK, {"model.depth": 8}),
        (RISING, {"model.depth": 2}),
    ]
    chart = charts(sweep(tmp_path, runs))["runs"]
    panels = loss_panels(chart)
    assert len(panels) == len(runs)
    assert len({(p.y.log, p.y.range) for p in panels}) == 1
    for panel in panels:  # ln 10: the loss of a net that has learnt nothing of 10 classes
        assert [r.value for r in rules(panel, "y")] == [pytest.approx(math.log(10))]
    # the stuck run is flat: its wandering covers less than 2% of the panel's height
    low, high = panels[1].y.range
    stuck = next(line for line in lines(panels[1]) if line.name == "val loss")
    assert np.ptp(stuck.y[1:]) < 0.02 * (high - low)


def test_chance_level_comes_from_the_runs_class_count(tmp_path):
    runs = [(FALLING, {"model.depth": 1}), (GOOD_FIT, {"model.depth": 2})]
    chart = charts(sweep(tmp_path, runs, classes=[4, 4]))["runs"]
    for panel in loss_panels(chart):
        assert [r.value for r in rules(panel, "y")] == [pytest.approx(math.log(4))]


def test_the_validation_rise_after_the_best_epoch_is_readable(tmp_path):
    runs = [(RISING, {"model.depth": 1}), (FALLING, {"model.depth": 2})]
    chart = charts(sweep(tmp_path, runs))["runs"]
    rise = rise_panels(chart)[0]
    val = next(line for line in lines(rise) if line.width < 2)  # not the smoothed one
    best, last = int(np.nanargmin(val.y)), len(val.y) - 1
    low, high = rise.y.range
    assert (val.y[last] - val.y[best]) / (high - low) > 0.25  # +8%: a quarter of the panel
    assert [r.value for r in rules(rise, "y")] == [pytest.approx(5.0)]  # the overfit threshold


def test_best_and_early_stopping_marks_are_unlike_the_curves_and_each_other(tmp_path):
    runs = [(OVERFIT, {"model.depth": d}) for d in range(1, 6)]
    chart = charts(sweep(tmp_path, runs), patience=5)["runs"]
    best, stop = 4, 9  # OVERFIT's, with patience 5
    for panel in loss_panels(chart):
        marks = {r.value: r for r in rules(panel, "x")}
        assert marks[best].dash != "solid" and marks[stop].dash != "solid"
        assert (marks[best].dash, marks[best].color) != (marks[stop].dash, marks[stop].color)
        for curve in lines(panel):
            distance = np.linalg.norm(np.subtract(to_rgb(marks[best].color), to_rgb(curve.color)))
            assert curve.color == marks[best].color or distance > 0.5  # the diamond shares it
    assert chart.columns == 4  # five runs: a second row of one, its rise panel under it
    assert [p.visible for p in chart.panels[8:]] == [True, False, False, False] * 2


def test_a_sweep_larger_than_run_panels_draws_only_its_flagged_runs_alone(tmp_path):
    values = product(("relu", "tanh", "selu", "leaky", "gelu"), (1, 2, 3), (0, 1))
    runs = [
        (OVERFIT, {"activation.name": a, "model.depth": d, "trainer.seed": s}) for a, d, s in values
    ]
    runs += [
        (STUCK, {"activation.name": "sigmoid", "model.depth": 8, "trainer.seed": s}) for s in (0, 1)
    ]
    folder = sweep(tmp_path, runs)
    for run in sorted(folder.iterdir(), key=lambda p: int(p.name))[-2:]:  # stuck: chance accuracy
        metrics = pd.read_csv(run / "metrics.csv").assign(val_acc=0.1)
        metrics.to_csv(run / "metrics.csv", index=False)
    drawn = charts(folder, run_panels=24)
    assert "runs" not in drawn
    flagged = drawn["flagged_runs"]
    assert [p.title.split("\n")[0] for p in loss_panels(flagged)] == [
        "sigmoid · 8 · 0",
        "sigmoid · 8 · 1",
    ]
    assert not rise_panels(flagged)


def test_overlapping_group_lines_stay_apart(tmp_path):
    # relu and leaky learn the same here: their lines lie on each other
    runs = [
        (OVERFIT, {"activation.name": a, "trainer.seed": s})
        for a in ("relu", "leaky")
        for s in (0, 1)
    ]
    chart = charts(sweep(tmp_path, runs))["curves"]
    relu, leaky = (
        next(c for c in lines(chart.panels[0]) if c.group == g) for g in ("relu", "leaky")
    )
    np.testing.assert_allclose(relu.y, leaky.y)
    assert relu.dash != leaky.dash and relu.marker != leaky.marker
    assert (relu.end_label, leaky.end_label) == ("relu", "leaky")
    assert relu.band is not None  # the band over the group's runs


def test_a_value_has_one_colour_in_every_chart(tmp_path):
    values = product(("relu", "tanh"), (1, 2), (16, 64))
    runs = [
        (
            OVERFIT if a == "relu" else GOOD_FIT,
            {"activation.name": a, "model.depth": d, "model.width": w},
        )
        for a, d, w in values
    ]
    params = [1000 * d + 10 * w for _, d, w in product(("relu", "tanh"), (1, 2), (16, 64))]
    drawn = charts(sweep(tmp_path, runs, params=params), group_by="activation")
    seen: dict[str, set[str]] = {"relu": set(), "tanh": set()}
    for name in ("curves", "capacity", "group_curves"):
        for panel in drawn[name].panels:
            for line in lines(panel):
                for value in seen:
                    if (
                        line.group == value
                        or line.name == f"activation={value}"
                        or panel.title == f"activation={value}"
                    ):
                        seen[value].add(line.color)
    effects = next(p for p in drawn["effects"].panels if p.title == "activation")
    for line, value in zip(
        [c for c in lines(effects) if c.marker == "diamond"], ("relu", "tanh"), strict=True
    ):
        seen[value].add(line.color)
    assert len(seen["relu"]) == 1 and len(seen["tanh"]) == 1
    assert seen["relu"] != seen["tanh"]


def test_accuracy_axes_zoom_to_the_differences(tmp_path):
    high = (OVERFIT[0], OVERFIT[1], [0.95] * EPOCHS)
    runs = [(OVERFIT, {"activation.name": "relu"}), (high, {"activation.name": "tanh"})]
    folder = sweep(tmp_path, runs)
    for run, acc in zip(sorted(folder.iterdir()), (0.92, 0.95), strict=True):
        metrics = pd.read_csv(run / "metrics.csv").assign(val_acc=acc)
        metrics.to_csv(run / "metrics.csv", index=False)
    panel = charts(folder)["curves"].panels[1]
    assert panel.y.percent
    low, top = panel.y.range
    assert 0.85 < low < 0.92 and 0.95 < top <= 1.0  # not 0-100%


def test_capacity_panels_have_their_own_scales_and_no_labels_on_points(tmp_path):
    setups = list(product(("relu", "tanh"), (1, 2), (16, 64)))
    runs = [
        (OVERFIT, {"activation.name": a, "model.depth": d, "model.width": w}) for a, d, w in setups
    ]
    params = [d * w * 100 + 1000 for _, d, w in setups]
    chart = charts(sweep(tmp_path, runs, params=params))["capacity"]
    val, train = chart.panels
    assert val.y.range != train.y.range  # best validation loss and final training loss apart
    assert not [i for p in chart.panels for i in p.items if isinstance(i, Text)]
    joined = [line for line in lines(val) if line.mode == "lines+markers"]
    assert len(joined) == 4  # one per activation and depth, across the widths
    for line in joined:
        activation, depth = line.name.split(", depth ")
        expected = sorted(
            p for p, (a, d, _) in zip(params, setups, strict=True)
            if (f"activation={a}", str(d)) == (activation, depth)
        )  # fmt: skip
        assert list(line.x) == expected


def test_capacity_leaves_out_parameter_counts_a_log_axis_cannot_show(tmp_path):
    # a damaged summary.json may hold any number as `params` (found by the damaged-runs test)
    runs = [(OVERFIT, {"model.width": w}) for w in (8, 16, 32, 64)]
    chart = charts(sweep(tmp_path, runs, params=[-math.inf, 0, 2_000, 8_000]))["capacity"]
    assert {x for line in lines(chart.panels[0]) for x in line.x} == {2_000, 8_000}


def layer_run(folder: Path, depth: int, activation: str = "relu") -> None:
    """A run with per-layer gradients: RMS 1e-3 at the first layer, 1e-2 at the output."""
    run = make_run(folder, OVERFIT, config=config(**{"model.depth": depth}))
    metrics = pd.read_csv(run / "metrics.csv")
    layers = [*map(str, range(1, depth + 1)), "out"]
    for i, layer in enumerate(layers):
        metrics[f"grad_rms_{layer}"] = 1e-3 * 10 ** (i / depth)
    metrics.to_csv(run / "metrics.csv", index=False)


def test_a_shallow_nets_line_stops_at_its_own_output_layer(tmp_path):
    layer_run(tmp_path / "sweep" / "0", 1)
    layer_run(tmp_path / "sweep" / "1", 3)
    chart = charts(tmp_path / "sweep")["gradient_flow"]
    curves = [line for line in lines(chart.panels[0]) if line.mode == "lines+markers"]
    assert sorted(list(line.x) for line in curves) == [[1, 2], [1, 2, 3, 4]]
    outputs = [line for line in lines(chart.panels[0]) if line.marker == "diamond"]
    assert sorted(float(line.x[0]) for line in outputs) == [2, 4]  # each net's own output layer


def test_gradient_panels_share_a_scale_that_shows_every_line(tmp_path):
    """Trained gradients are often a hundred times smaller than initial ones: the shared scale
    must hold both panels' lines, not the first panel's alone."""
    for i, depth in enumerate((1, 3)):
        run = tmp_path / "sweep" / str(i)
        layer_run(run, depth)
        metrics = pd.read_csv(run / "metrics.csv")
        for column in [c for c in metrics if c.startswith("grad_rms_")]:
            metrics[column] *= 0.01 ** (metrics["epoch"] / metrics["epoch"].max())
        metrics.to_csv(run / "metrics.csv", index=False)
    chart = charts(tmp_path / "sweep")["gradient_flow"]
    assert chart.share_y and len({p.y.range for p in chart.panels}) == 1
    low, high = chart.panels[0].y.range
    values = np.concatenate([line.y for panel in chart.panels for line in lines(panel)])
    assert (
        values.min() < 1e-3 / 2
    )  # the best epoch's gradients, under epoch 0's lowest, are drawn...
    assert low <= values.min() and values.max() <= high  # ...and inside its scale


def test_group_lines_of_layer_charts_follow_the_keys_order(tmp_path):
    from fitscope.synthetic import write_sweep

    grid = {"model.width": [16, 64, 256, 1024], "trainer.seed": list(range(7))}
    write_sweep(tmp_path / "sweep", grid, epochs=8)  # 28 runs: a line per group
    chart = charts(tmp_path / "sweep")["gradient_flow"]
    names = [line.name for line in lines(chart.panels[0]) if line.mode == "lines+markers"]
    assert [name.split(",")[0] for name in names] == [
        f"model.width={w}" for w in (16, 64, 256, 1024)
    ]  # numbers ascending, not as strings (1024 before 16)


def test_an_early_stopping_that_never_happens_is_said_not_drawn(tmp_path):
    runs = [(NOT_CONVERGED, {"model.depth": 1}), (OVERFIT, {"model.depth": 2})]
    folder = report(sweep(tmp_path, runs), tmp_path, patience=3)
    table = pd.read_csv(folder / "runs.csv")
    assert math.isnan(table.loc[0, "early_stopping_epoch"])
    assert table.loc[1, "early_stopping_epoch"] == 7
    assert table.loc[0, "restored_epoch"] == table.loc[0, "best_epoch"] == EPOCHS
    markdown = (folder / "report.md").read_text()
    row = next(line for line in markdown.splitlines() if line.startswith("| model.depth=1 "))
    header = next(line for line in markdown.splitlines() if "early stop" in line)
    column = [cell.strip() for cell in header.split("|")].index("early stop")
    assert [cell.strip() for cell in row.split("|")][column] == "never"
    assert "*never*" in markdown.split("<summary>Definitions</summary>")[1]
    assert ">never</td>" in (folder / "report.html").read_text()
    never, stops = loss_panels(charts(sweep(tmp_path / "again", runs), patience=3)["runs"])
    assert [r.value for r in rules(never, "x")] == [EPOCHS]  # the best epoch only
    assert 7 in [r.value for r in rules(stops, "x")]


def test_one_early_stopping_epoch_for_every_run_is_said_once(tmp_path):
    runs = [(OVERFIT, {"model.depth": 1}), (OVERFIT, {"model.depth": 2})]
    markdown = (report(sweep(tmp_path, runs), tmp_path, patience=3) / "report.md").read_text()
    assert "would stop 2 of 2 runs at epoch 7." in markdown  # not "between epoch 7 and 7"


def test_parallel_coordinates_keep_setups_that_never_stop_on_the_axis(tmp_path):
    runs = [(NOT_CONVERGED, {"model.depth": 1}), (OVERFIT, {"model.depth": 2}),
            (OVERFIT, {"model.depth": 4})]  # fmt: skip
    chart = charts(sweep(tmp_path, runs), patience=3)["parallel"]
    (item,) = chart.panels[0].items
    stop = next(d for d in item.dimensions if d.label == "early-stopping epoch")
    assert np.isfinite(stop.values).all()  # plotly draws a missing value off the axis
    never = dict((text, position) for position, text in stop.ticks)["never"]
    assert stop.values[0] == never > max(stop.values[1:])  # the depth-1 run, above the others


def test_the_matrix_marks_verdicts_and_seeds_are_never_its_axes(tmp_path):
    runs = [
        (
            OVERFIT if d == 4 else GOOD_FIT,
            {"activation.name": a, "model.depth": d, "trainer.seed": s},
        )
        for a, d, s in product(("relu", "tanh"), (1, 4), (0, 1, 2))
    ]
    folder = sweep(tmp_path, runs)
    chart = charts(folder, matrix=["activation", "model.depth"])["matrix"]
    (heat,) = [i for p in chart.panels for i in p.items if isinstance(i, Heatmap)]
    assert (heat.rows, heat.columns) == (["relu", "tanh"], ["1", "4"])
    assert [row[1].split("\n")[1] for row in heat.text] == ["overfit", "overfit"]
    assert all("\n" not in row[0] for row in heat.text)  # a good fit is not marked
    (trace,) = draw_html.figure_dict(chart)["data"]  # the page breaks the cell at the mark too
    assert [row[1] for row in trace["text"]] == [t[1].replace("\n", "<br>") for t in heat.text]
    refused = "report.matrix: trainer.seed is not a key these runs vary; the keys that vary: "
    with pytest.raises(ReportError, match=refused + "activation, model.depth$"):
        charts(folder, matrix=["trainer.seed", "activation"])


def test_stuck_cells_do_not_take_the_matrix_colour_scale_from_the_others(tmp_path):
    from fitscope.synthetic import write_sweep

    grid = {"activation.name": ["relu", "tanh", "sigmoid"], "model.depth": [1, 2, 8]}
    write_sweep(tmp_path / "sweep", grid, epochs=20)  # the deep sigmoid net is stuck at chance
    chart = charts(tmp_path / "sweep")["matrix"]
    (heat,) = [i for p in chart.panels for i in p.items if isinstance(i, Heatmap)]
    values = np.array(heat.z, float)
    assert values.max() > 2.2 and heat.zmax < 1  # ln 10 is off the scale, at its worst end
    assert heat.zmin == values.min()
    assert "stuck at chance or diverged take the worst colour" in chart.caption


def test_panel_titles_of_a_full_run_grid_do_not_overlap(tmp_path):
    values = product(("relu", "sigmoid", "tanh", "selu"), (1, 8), (None, 0.5, 1.0))
    runs = [
        (OVERFIT, {"activation.name": a, "model.depth": d, "optimizer.grad_clip": c})
        for a, d, c in values
    ]
    assert len(runs) == 24  # report.run_panels: the largest sweep drawn run by run
    chart = charts(sweep(tmp_path, runs))["runs"]
    figure = draw_png.figure(chart)
    renderer = FigureCanvasAgg(figure).get_renderer()
    titles = [ax.title for ax in figure.axes if ax.get_title()]
    assert len(titles) == 24
    boxes = [t.get_window_extent(renderer) for t in titles]
    assert not [(a, b) for a, b in combinations(boxes, 2) if a.overlaps(b)]
    axes_boxes = [ax.get_window_extent(renderer) for ax in figure.axes if ax.get_visible()]
    for title in boxes:  # no title runs into a panel above or below it
        assert not [box for box in axes_boxes if box.overlaps(title) and box.y0 > title.y0 + 1]


def test_the_html_legend_isolates_a_group_and_hover_names_runs(tmp_path):
    runs = [
        (OVERFIT if s else GOOD_FIT, {"activation.name": a, "trainer.seed": s})
        for a, s in product(("relu", "tanh"), range(6))
    ]
    drawn = charts(sweep(tmp_path, runs), extremes=1)
    curves = draw_html.figure_dict(drawn["curves"])
    assert curves["layout"]["legend"]["itemclick"] == "toggleothers"
    named = [t for t in curves["data"] if t.get("showlegend")]
    assert {t["legendgroup"] for t in named} >= {"relu", "tanh"}
    groups = draw_html.figure_dict(drawn["group_curves"])
    hovers = [text for t in groups["data"] for text in t.get("hovertext") or []]
    assert any("best 1: activation=relu seed=" in text for text in hovers)
    assert any("worst 1: activation=tanh seed=" in text for text in hovers)
