"""The report as a study of its keys, on synthetic sweeps with a known answer: which key matters
(permutation importance with bootstrap intervals), each key's effect, the results matrix, the
findings in words; rebuilds that read only what changed; builds that wait for each other only
to move into place; and a sweep of 1,000 runs read at a glance."""

from __future__ import annotations

import fcntl
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fitscope.report import build
from fitscope.report.build import build_report, study_views
from fitscope.report.frames import collect
from fitscope.report.importance import MIN_SETUPS
from fitscope.report.settings import ReportSettings
from fitscope.synthetic import Shape, grid_of_size, write_sweep

FLOORS = {"relu": 0.20, "leaky": 0.21, "selu": 0.26, "tanh": 0.30, "sigmoid": 0.38}


def activation_decides(values: dict) -> Shape:
    """The activation sets the best validation loss; depth adds a little; weight decay nothing."""
    return Shape(floor=FLOORS[values["activation.name"]] + 0.01 * values.get("model.depth", 1))


def sweep(tmp_path: Path, grid: dict, name: str = "sweep", epochs: int = 20) -> Path:
    write_sweep(tmp_path / name, grid, epochs=epochs, shape_of=activation_decides)
    return tmp_path / name


def settings(tmp_path: Path, **values) -> ReportSettings:
    return ReportSettings.from_mapping(dir=str(tmp_path / "reports"), **values)


GRID = {
    "activation.name": list(FLOORS),
    "model.depth": [1, 2, 4],
    "optimizer.weight_decay": [0.0, 0.0001, 0.001],
    "trainer.seed": [0, 1],
}


def test_importance_ranks_the_key_that_drives_the_metric_first_and_a_useless_key_last(tmp_path):
    views = study_views(collect([sweep(tmp_path, GRID)], settings(tmp_path)))
    table = views.study.importance.set_index("key")
    assert list(table.index) == ["activation", "model.depth", "optimizer.weight_decay"]
    assert table.loc["activation", "importance_low"] > 0  # sure of it
    useless = table.loc["optimizer.weight_decay"]
    assert useless["importance_low"] <= 0 <= useless["importance_high"]  # covers zero
    assert table.loc["model.depth", "rank_correlation"] > 0.2  # deeper: higher loss here
    assert math.isnan(table.loc["activation", "rank_correlation"])  # no order to correlate
    assert set(table["setups"]) == {45}  # fitted on setups, seeds averaged
    words = " ".join(views.study.findings)
    assert "activation matters most for best validation loss" in words
    assert "The interval of optimizer.weight_decay covers 0" in words


def test_too_few_setups_are_said_and_the_key_effects_speak_instead(tmp_path):
    grid = {
        "activation.name": ["relu", "sigmoid"],
        "model.depth": [1, 2, 4],
        "trainer.seed": [0, 1],
    }
    assert 2 * 3 < MIN_SETUPS
    folder = build_report([sweep(tmp_path, grid)], settings(tmp_path))
    assert not (folder / "importance.csv").exists() and not (folder / "importance.png").exists()
    markdown = (folder / "report.md").read_text()
    assert "Importance not estimated: only 6 setups: too few" in markdown
    assert "By the key effects, activation moves best validation loss the most" in markdown


def test_key_effects_average_over_the_other_keys_with_intervals(tmp_path):
    folder = build_report([sweep(tmp_path, GRID)], settings(tmp_path))
    effects = pd.read_csv(folder / "effects.csv", keep_default_na=False)
    relu = effects[(effects["key"] == "activation") & (effects["value"] == "relu")].iloc[0]
    setups = pd.read_csv(folder / "setups.csv")
    mine = setups[setups["activation"] == "relu"]
    assert relu["setups"] == 9 and relu["runs"] == 18
    assert relu["mean"] == pytest.approx(mine["mean"].mean())
    assert relu["ci_low"] < relu["mean"] < relu["ci_high"]
    assert relu["interval_over"] == "setups"
    depth = effects[effects["key"] == "model.depth"]
    assert list(depth["value"]) == ["1", "2", "4"]  # numbers in order


def test_the_matrix_shows_the_two_keys_that_matter_most_and_facets_the_rest(tmp_path):
    views = study_views(collect([sweep(tmp_path, GRID)], settings(tmp_path)))
    row, column, facets, averaged = views.study.matrix_axes
    assert (row, column) == ("activation", "model.depth")
    assert (facets, averaged) == (["optimizer.weight_decay"], [])
    matrix = views.study.matrix
    assert len(matrix) == 5 * 3 * 3 and set(matrix["facet"]) == {
        "optimizer.weight_decay=0.0",
        "optimizer.weight_decay=0.0001",
        "optimizer.weight_decay=0.001",
    }
    cell = matrix[(matrix["row"] == "relu") & (matrix["column"] == "1")].iloc[0]
    assert cell["n"] == 2 and cell["ci_low"] < cell["mean"] < cell["ci_high"]  # over 2 seeds
    chosen = study_views(
        collect([tmp_path / "sweep"], settings(tmp_path, matrix=["model.depth"]))
    ).study
    assert chosen.matrix_axes[:2] == ("model.depth", None)


def test_findings_name_the_best_setup_with_its_interval_and_who_overfits_where(tmp_path):
    grid = {
        "activation.name": ["relu", "tanh"],
        "model.depth": [1, 2, 4],
        "model.width": [16, 2048],
    }
    grid["trainer.seed"] = [0, 1, 2]
    write_sweep(tmp_path / "sweep", grid, epochs=40)  # the default shapes: wide nets overfit
    views = study_views(collect([tmp_path / "sweep"], settings(tmp_path)))
    best, *rest = views.study.findings
    assert best.startswith("Best setup by best validation loss: activation=relu")
    assert "95% interval" in best and "over 3 seeds" in best and "test accuracy" in best
    overfit = next(s for s in rest if s.startswith("Overfit:"))
    assert "by model.width 16: 0 of 18, 2048: 17 of 18" in overfit
    diverged = next(s for s in rest if s.startswith("Diverged:"))  # the deep, wide relu, seed 0
    assert diverged.startswith(
        "Diverged: 1 of 36 runs; by model.depth 1: 0 of 12, 2: 0 of 12, 4: 1"
    )
    assert next(s for s in rest if s.startswith("Early stopping (patience 5) would stop"))
    by_accuracy = study_views(collect([tmp_path / "sweep"], settings(tmp_path, metric="test_acc")))
    assert by_accuracy.study.findings[0].startswith("Best setup by test accuracy:")
    assert not by_accuracy.study.lower_is_better


def test_the_summary_line_counts_runs_as_the_findings_do(tmp_path):
    """A deep sigmoid net stuck at chance is diagnosed underfit; the line under the title and
    the findings must both call it stuck, not tell two different tallies."""
    grid = {"activation.name": ["relu", "sigmoid"], "model.depth": [1, 8]}
    write_sweep(tmp_path / "sweep", grid, epochs=30)
    folder = build_report([tmp_path / "sweep"], settings(tmp_path))
    runs = pd.read_csv(folder / "runs.csv")
    assert runs["flag"].fillna("").str.startswith("stuck").sum() == 1  # the deep sigmoid net
    markdown = (folder / "report.md").read_text()
    summary = markdown.splitlines()[2]
    stuck = next(line for line in markdown.splitlines() if line.startswith("- Stuck at chance:"))
    assert stuck.startswith("- Stuck at chance: 1 of 4 runs")
    assert "1 stuck at chance" in summary
    tally = dict(
        reversed(part.split(" ", 1)) for part in summary.split(": ", 1)[1].split(".")[0].split(", ")
    )
    assert sum(map(int, tally.values())) == 4  # each run counted once


def test_the_flagged_runs_drawn_show_every_kind_of_flag_and_setup_first(tmp_path):
    """Many seeds of one stuck setup come first in the sweep; the panels a large sweep draws
    must still show the other flags and setups, not that setup's seeds alone."""

    def shape(values: dict) -> Shape:
        if values["activation.name"] == "sigmoid":
            return Shape(stuck=True, vanishing=True)
        return Shape(floor=0.25, vanishing=values["activation.name"] == "tanh")

    grid = {"activation.name": ["sigmoid", "tanh", "relu"], "model.depth": [4, 8],
            "trainer.seed": list(range(6))}  # fmt: skip
    write_sweep(tmp_path / "sweep", grid, epochs=20, shape_of=shape)
    views = study_views(collect([tmp_path / "sweep"], settings(tmp_path, run_panels=4)))
    chart = views.charts["flagged_runs"]
    titles = [panel.title for panel in chart.panels if panel.visible]
    assert len(titles) == 4
    assert {t.split(" · ")[0] for t in titles} == {"sigmoid", "tanh"}  # both kinds of flag
    assert len({" · ".join(t.split(" · ")[:2]) for t in titles}) == 4  # 4 setups, no repeats
    assert chart.caption.startswith("4 of the 24 runs the diagnostics flag")


def test_a_rebuild_reads_only_the_runs_that_changed_and_reports_the_same(tmp_path):
    folder = sweep(tmp_path, GRID)
    first = build_report([folder], settings(tmp_path), name="r")
    assert collect([folder], settings(tmp_path), index_folder=first).sweep.read == 0
    metrics = folder / "7" / "metrics.csv"
    metrics.write_text(metrics.read_text() + metrics.read_text().splitlines()[-1].replace(
        "20,", "21,", 1) + "\n")  # fmt: skip
    again = collect([folder], settings(tmp_path), index_folder=first)
    assert again.sweep.read == 1
    rebuilt = build_report([folder], settings(tmp_path), name="r")
    cold = build_report([folder], settings(tmp_path), name="cold")
    for name in ("runs.csv", "setups.csv", "matrix.csv", "importance.csv", "group_curves.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(rebuilt / name), pd.read_csv(cold / name))
    assert pd.read_csv(rebuilt / "runs.csv").loc[7, "epochs_run"] == 21
    # an index that cannot be read is as good as none: every run is read again
    (rebuilt / "index-runs.parquet").write_bytes(b"not parquet")
    assert collect([folder], settings(tmp_path), index_folder=rebuilt).sweep.read == len(
        list(folder.glob("*/summary.json"))
    )


def test_a_changed_setting_judges_every_run_again_from_the_index(tmp_path):
    folder = sweep(tmp_path, GRID)
    first = build_report([folder], settings(tmp_path), name="r")
    assert set(pd.read_csv(first / "runs.csv")["diagnosis"]) == {"not converged"}
    # a fall must now be a million times the noise to count: no run still improves
    tolerant = settings(tmp_path, noise_tolerance=1e6)
    again = collect([folder], tolerant, index_folder=first)
    assert again.sweep.read == 0  # the files are the index's ...
    assert "not converged" not in set(again.runs["diagnosis"])  # ... the verdicts are new
    assert again.runs.equals(collect([folder], tolerant).runs)  # as a cold build's


def test_builds_into_one_folder_hold_the_lock_only_to_move_into_place(tmp_path, monkeypatch):
    folder = sweep(tmp_path, {"activation.name": ["relu", "tanh"]})
    reports = tmp_path / "reports"
    reports.mkdir()
    seen = []
    write_report = build.write_report

    def while_drawing(*args, **kwargs):
        fd = os.open(reports, os.O_RDONLY)
        try:  # another build could take the lock now: it is not held while this one draws
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            seen.append("free")
        except BlockingIOError:
            seen.append("held")
        finally:
            os.close(fd)
        return write_report(*args, **kwargs)

    monkeypatch.setattr(build, "write_report", while_drawing)
    build_report([folder], settings(tmp_path))
    assert seen == ["free"]


@pytest.mark.slow
def test_a_thousand_run_sweep_is_read_at_a_glance(tmp_path):
    grid = grid_of_size(1000)
    runs = len(write_sweep(tmp_path / "sweep", grid, epochs=50))
    assert 1000 <= runs < 1100
    folder = build_report([tmp_path / "sweep"], settings(tmp_path))
    importance = pd.read_csv(folder / "importance.csv")
    assert importance["key"].iloc[0] == "activation"
    matrix = pd.read_csv(folder / "matrix.csv", keep_default_na=False)
    assert set(matrix["row"]) == set(grid["activation.name"])
    assert matrix["verdict"].str.contains("stuck").any()  # deep sigmoid nets
    curves = pd.read_csv(folder / "group_curves.csv")
    assert set(curves["group"]) == set(grid["activation.name"])
    files = {p.name for p in folder.iterdir()}
    assert "runs.png" not in files  # no grid of a panel per run ...
    assert "flagged_runs.png" in files  # ... but for the flagged ones, at most run_panels
    hashes = json.loads((folder / "charts.json").read_text())
    assert set(hashes) >= {"matrix", "effects", "importance", "curves", "group_curves"}
    assert (folder / "report.html").stat().st_size < 15e6
    markdown = (folder / "report.md").read_text()
    assert markdown.count("\n| ") < 200  # the run table lists a few dozen runs, not 1,000
    shutil.rmtree(tmp_path / "sweep")


def test_every_epoch_row_is_in_the_index_for_pandas(tmp_path):
    folder = build_report([sweep(tmp_path, GRID)], settings(tmp_path))
    epochs = pd.read_parquet(folder / "index-epochs.parquet")
    assert len(epochs) == 90 * 21 and epochs["path"].nunique() == 90
    assert {"epoch", "train_loss", "val_loss", "grad_rms_1"} <= set(epochs.columns)
    one = epochs[epochs["path"] == str((tmp_path / "sweep" / "3").resolve())]
    expected = pd.read_csv(tmp_path / "sweep" / "3" / "metrics.csv")
    np.testing.assert_allclose(one["val_loss"], expected["val_loss"])
