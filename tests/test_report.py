"""Reports from run folders: fit diagnosis, best and early-stopping epochs, varying keys, diff,
seeds, and every kind of incomplete input."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from conftest import REPO, REPORT_PY, compose_cfg, quick_cfg
from fitscope.report import cli
from fitscope.report.build import ReportError, build_report
from fitscope.report.diff import diff_runs
from fitscope.report.frames import collect
from fitscope.report.settings import ReportSettings
from fitscope.rundir import MetricsWriter, RunFolderError, read_metrics
from fitscope.stopping import early_stopping_epoch
from fitscope.train.runner import run

SETTINGS = ReportSettings.from_mapping(patience=3)
BASE_CONFIG = {
    "data": {"name": "mnist5k", "val_fraction": 0.2},
    "model": {"name": "mlp", "depth": 2, "width": 256},
    "activation": {"name": "relu"},
    "optimizer": {"name": "adam", "lr": 0.001},
    "trainer": {"epochs": 10, "seed": 0, "console": "auto"},
}
CHOICES = {"data": "mnist5k", "model": "mlp", "activation": "relu", "optimizer": "adam"}

# Ten epochs each: (val loss, train loss, train accuracy)
OVERFIT = (
    [1.0, 0.6, 0.45, 0.4, 0.42, 0.46, 0.5, 0.55, 0.6, 0.65],
    [1.0 * 0.6**e for e in range(10)],
    [0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.998, 0.999],
)
UNDERFIT = (
    [2.3, 2.2, 2.1, 2.05, 2.02, 2.01, 2.0, 2.0, 2.0, 2.0],
    [2.3, 2.2, 2.1, 2.05, 2.02, 2.01, 2.0, 2.0, 2.0, 2.0],
    [0.1, 0.15, 0.2, 0.22, 0.25, 0.27, 0.28, 0.29, 0.3, 0.3],
)
NOT_CONVERGED = (
    [1.0 - 0.07 * e for e in range(10)],
    [1.0 - 0.08 * e for e in range(10)],
    [0.96] * 10,
)
GOOD_FIT = (
    [1.0, 0.5, 0.3, 0.25, 0.24, 0.24, 0.241, 0.242, 0.241, 0.242],
    [1.0, 0.5, 0.3, 0.22, 0.2, 0.19, 0.185, 0.18, 0.178, 0.176],
    [0.95] * 10,
)
# An easy problem learnt perfectly: the losses reach exactly 0.0 (float32 underflow).
PERFECT = ([0.5, 0.01, 0.0, 0.0, 0.0, 0.0], [0.4, 0.0, 0.0, 0.0, 0.0, 0.0], [1.0] * 6)


def make_run(
    folder: Path,
    curves=GOOD_FIT,
    *,
    status="completed",
    config=None,
    choices=None,
    overrides=(),
    summary=True,
    metrics=True,
    error=None,
) -> Path:
    """A run folder as fitscope writes it, with curves chosen by the test."""
    folder.mkdir(parents=True)
    config = config or BASE_CONFIG
    OmegaConf.save(OmegaConf.create(config), folder / "config.yaml")
    val, train, train_acc = curves
    if metrics:
        pd.DataFrame(
            {
                "epoch": range(1, len(val) + 1),
                "train_loss": train,
                "train_acc": train_acc,
                "val_loss": val,
                "val_acc": [0.9] * len(val),
                "lr": 0.001,
                "seconds": 0.1,
            }
        ).to_csv(folder / "metrics.csv", index=False)
    if summary:
        (folder / "summary.json").write_text(
            json.dumps(
                {
                    "status": status,
                    "error": error,
                    "overrides": list(overrides),
                    "choices": choices or CHOICES,
                    "command": "python src/run.py " + " ".join(overrides),
                    "params": 1000,
                    "wall_time_s": 1.0,
                    "samples_per_s": 5.0,
                    "test_best": {"loss": 0.3, "acc": 0.91},
                    "test_last": {"loss": 0.35, "acc": 0.9},
                }
            )
        )
    return folder


def in_folder(reports: Path, **changes) -> ReportSettings:
    """`SETTINGS` writing reports into `reports`."""
    return ReportSettings.from_mapping(patience=3, dir=str(reports), **changes)


def with_changes(**changes) -> dict:
    config = json.loads(json.dumps(BASE_CONFIG))
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        config[section][key] = value
    return config


@pytest.mark.parametrize(
    ("curves", "diagnosis", "best", "stop", "reason"),
    [
        (OVERFIT, "overfit", 4, 7, "val loss of the last epoch +62% over its smoothed minimum"),
        (UNDERFIT, "underfit", 7, 10, "train acc 30.0% < 90% after 10 epochs"),
        (NOT_CONVERGED, "not converged", 10, None, "smoothed val loss still fell"),
        (GOOD_FIT, "good fit", 5, 8, "val loss of the last epoch +0.8% over its smoothed minimum"),
        (PERFECT, "good fit", 3, 6, "val loss of the last epoch +0.0% over its smoothed minimum"),
    ],
    ids=["overfit", "underfit", "not-converged", "good-fit", "zero-loss"],
)
def test_diagnosis_best_and_early_stopping_epochs(tmp_path, curves, diagnosis, best, stop, reason):
    make_run(tmp_path / "sweep" / "0", curves)
    report = collect([tmp_path / "sweep"], SETTINGS)
    run = report.runs.iloc[0]
    assert run["diagnosis"] == diagnosis
    assert reason in run["reason"]
    assert run["best_epoch"] == best
    if stop is None:  # early stopping would never have stopped it
        assert pd.isna(run["early_stopping_epoch"])
    else:
        assert run["early_stopping_epoch"] == stop
    assert run["restored_epoch"] == best
    assert run["best_val_loss"] == min(curves[0])
    assert run["last_val_loss"] == curves[0][-1]
    assert run["test_acc"] == 0.91 and run["last_test_acc"] == 0.9


def test_min_delta_moves_the_early_stopping_epoch(tmp_path):
    make_run(tmp_path / "0", NOT_CONVERGED)  # falls 0.07 per epoch
    assert (
        collect(
            [tmp_path / "0"], ReportSettings.from_mapping(patience=2, min_delta=0.15)
        ).runs.iloc[0]["early_stopping_epoch"]
        == 3
    )


def test_diverged_and_failed_runs_keep_their_status_and_reason(tmp_path):
    make_run(tmp_path / "s" / "0", OVERFIT)
    make_run(
        tmp_path / "s" / "1", OVERFIT, status="diverged", error="loss out of bounds at epoch 3"
    )
    make_run(tmp_path / "s" / "2", OVERFIT, status="failed", error="RuntimeError: boom")
    runs = collect([tmp_path / "s"], SETTINGS).runs.set_index("run")
    assert list(runs["diagnosis"]) == ["overfit", "diverged", "failed"]
    assert runs.loc["1", "reason"] == "loss out of bounds at epoch 3"


def test_varying_keys_matrix_names_choices_and_values(tmp_path):
    leaky = with_changes(activation__name="leaky", activation__negative_slope=0.01)
    make_run(tmp_path / "s" / "0", config=with_changes(model__depth=1))
    make_run(tmp_path / "s" / "1", config=with_changes(model__depth=4))
    make_run(
        tmp_path / "s" / "2",
        config={**leaky, "model": {**leaky["model"], "depth": 1}},
        choices={**CHOICES, "activation": "leaky"},
    )
    report = collect([tmp_path / "s"], SETTINGS)
    # activation.name and activation.negative_slope follow from the choice: not repeated.
    assert report.varying == ["activation", "model.depth"]
    matrix = report.configs[report.varying].astype(str)
    assert matrix.to_dict(orient="index") == {
        "0": {"activation": "relu", "model.depth": "1"},
        "1": {"activation": "relu", "model.depth": "4"},
        "2": {"activation": "leaky", "model.depth": "1"},
    }
    assert list(report.runs["label"]) == [
        "activation=relu model.depth=1",
        "activation=relu model.depth=4",
        "activation=leaky model.depth=1",
    ]
    assert "depth" not in report.shared_config["model"]
    assert report.shared_config["optimizer"] == {"name": "adam", "lr": 0.001}
    curves = report.curves
    assert set(curves.columns) >= {"run", "epoch", "split", "metric", "value", "model.depth"}
    assert len(curves) == 3 * 10 * 4


def test_console_and_report_keys_never_count_as_differences(tmp_path):
    make_run(tmp_path / "s" / "0")
    make_run(tmp_path / "s" / "1", config=with_changes(trainer__console="quiet"))
    assert collect([tmp_path / "s"], SETTINGS).varying == []


def test_diff_shows_choices_with_their_leaves_and_rerun_commands(tmp_path):
    a = make_run(tmp_path / "a", overrides=["model.depth=1"], config=with_changes(model__depth=1))
    selu = with_changes(activation__name="selu", optimizer__lr=0.01)
    b = make_run(
        tmp_path / "b",
        config=selu,
        choices={**CHOICES, "activation": "selu"},
        overrides=["activation=selu", "optimizer.lr=0.01"],
    )
    assert diff_runs(a, b).splitlines() == [
        "activation: relu → selu",
        "  activation.name: relu → selu",
        "model.depth: 1 → 2",
        "optimizer.lr: 0.001 → 0.01",
        f"re-run A ({a}): python src/run.py model.depth=1",
        f"re-run B ({b}): python src/run.py activation=selu optimizer.lr=0.01",
    ]


def test_diff_of_identical_runs_says_so(tmp_path):
    a, b = make_run(tmp_path / "a"), make_run(tmp_path / "b")
    assert diff_runs(a, b).splitlines()[0] == "the resolved configs are identical"


def test_swept_seed_gives_mean_and_std_per_setup(tmp_path):
    best_losses = {
        ("relu", 0): 0.2,
        ("relu", 1): 0.3,
        ("relu", 2): 0.4,
        ("tanh", 0): 0.5,
        ("tanh", 1): 0.7,
    }
    for i, ((activation, seed), loss) in enumerate(best_losses.items()):
        curves = ([loss + 0.1, loss, loss + 0.001], [1.0, 0.5, 0.4], [0.95] * 3)
        config = with_changes(activation__name=activation, trainer__seed=seed)
        make_run(
            tmp_path / "s" / str(i),
            curves,
            config=config,
            choices={**CHOICES, "activation": activation},
        )
    report = collect([tmp_path / "s"], SETTINGS)
    assert report.replicate_keys == ["trainer.seed"]
    groups = report.groups.set_index("activation")
    assert groups.loc["relu", "n"] == 3 and groups.loc["tanh", "n"] == 2
    assert groups.loc["relu", "best_val_loss_mean"] == pytest.approx(0.3)
    assert groups.loc["relu", "best_val_loss_std"] == pytest.approx(0.1)  # sample std
    assert groups.loc["tanh", "best_val_loss_std"] == pytest.approx(math.sqrt(0.02))
    assert "seed=1" in report.runs["label"].iloc[1]


def test_report_files(tmp_path):
    make_run(tmp_path / "sweep" / "0", OVERFIT, config=with_changes(model__width=16))
    make_run(tmp_path / "sweep" / "1", GOOD_FIT, config=with_changes(model__width=64))
    folder = build_report([tmp_path / "sweep"], in_folder(tmp_path / "reports"))
    assert folder == tmp_path / "reports" / "sweep"
    runs = pd.read_csv(folder / "runs.csv")
    assert list(runs["diagnosis"]) == ["overfit", "good fit"]
    curves = pd.read_csv(folder / "curves.csv")
    assert list(curves.columns) == [
        "run",
        "label",
        "model.width",
        "epoch",
        "split",
        "metric",
        "value",
    ]
    for name in ("runs.png", "curves.png", "group_curves.png", "report.md", "report.html"):
        assert (folder / name).is_file(), name
    for frame in ("setups.csv", "effects.csv", "group_curves.csv", "index-runs.parquet"):
        assert (folder / frame).is_file(), frame
    markdown = (folder / "report.md").read_text()
    assert "![train and validation loss per run](runs.png)" in markdown
    assert "overfit after epoch 4: val loss of the last epoch +62%" in markdown
    assert "python src/run.py" in markdown
    assert "`trainer_stop_epoch`" in markdown  # the trainer's own stop, told apart
    page = (folder / "report.html").read_text()
    assert "runs.png" not in page  # the page draws its charts itself
    assert page.count('<div id="chart-runs"') == 1
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=|<img[^>]+src=\"?http", page)


def test_date_folder_goes_into_the_default_name(tmp_path):
    make_run(tmp_path / "multirun" / "2026-11-26" / "14-03-12.123456" / "0")
    folder = build_report(
        [tmp_path / "multirun" / "2026-11-26" / "14-03-12.123456"], in_folder(tmp_path / "reports")
    )
    assert folder.name == "2026-11-26_14-03-12.123456"


def test_report_never_overwrites_another_sweeps_report(tmp_path):
    make_run(tmp_path / "a" / "sweep" / "0")
    make_run(tmp_path / "b" / "sweep" / "0")
    out = in_folder(tmp_path / "reports")
    build_report([tmp_path / "a" / "sweep"], out)
    build_report([tmp_path / "a" / "sweep"], out)  # the same runs again: rebuilt
    with pytest.raises(ReportError, match="holds a report of other runs"):
        build_report([tmp_path / "b" / "sweep"], out)
    build_report([tmp_path / "b" / "sweep"], out, force=True)


def test_a_rebuild_removes_only_the_files_its_previous_build_listed(tmp_path):
    make_run(tmp_path / "sweep" / "0", config=with_changes(model__width=16))
    make_run(tmp_path / "sweep" / "1", config=with_changes(model__width=64))
    out = in_folder(tmp_path / "reports")
    folder = build_report([tmp_path / "sweep"], out, name="r")
    assert (folder / "effects.png").is_file()
    manifest = json.loads((folder / "manifest.json").read_text())["files"]
    assert sorted(p.name for p in folder.iterdir()) == manifest
    (folder / "mine.png").write_bytes(b"a user's chart")
    (folder / "notes.md").write_text("a user's notes")
    # another report under the same name (--force): one run, so no key effects
    build_report([tmp_path / "sweep" / "0"], out, name="r", force=True)
    assert not (folder / "effects.png").exists()  # listed: removed
    assert (folder / "mine.png").read_bytes() == b"a user's chart"  # not listed: kept
    assert (folder / "notes.md").read_text() == "a user's notes"
    assert not list((tmp_path / "reports").glob(".*"))  # no staging folder left


def test_a_failed_build_leaves_the_previous_report_as_it_was(tmp_path, monkeypatch):
    make_run(tmp_path / "sweep" / "0")
    out = in_folder(tmp_path / "reports")
    folder = build_report([tmp_path / "sweep"], out)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def broken(*args, **kwargs):
        raise RuntimeError("a chart failed")

    monkeypatch.setattr("fitscope.report.build.html_page", broken)  # while charts are drawn
    make_run(tmp_path / "sweep" / "1", config=with_changes(model__width=64))  # new runs.csv
    with pytest.raises(RuntimeError):
        build_report([tmp_path / "sweep"], out)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert [p.name for p in (tmp_path / "reports").iterdir()] == ["sweep"]


def test_a_report_never_replaces_what_it_cannot_prove_is_its_own(tmp_path):
    make_run(tmp_path / "sweep" / "0")
    reports = tmp_path / "reports"
    (reports / "mine").mkdir(parents=True)
    (reports / "mine" / "data.csv").write_text("1,2\n")
    with pytest.raises(ReportError, match="holds files that are not a fitscope report"):
        build_report([tmp_path / "sweep"], in_folder(reports), name="mine")
    assert [p.name for p in (reports / "mine").iterdir()] == ["data.csv"]
    # a committed example on a fresh clone: its manifest, not its (git-ignored) sources
    (reports / "example").mkdir()
    (reports / "example" / "manifest.json").write_text('{"files": ["manifest.json"]}')
    with pytest.raises(ReportError, match="runs are not recorded here"):
        build_report([tmp_path / "sweep"], in_folder(reports), name="example")
    build_report([tmp_path / "sweep"], in_folder(reports), name="example", force=True)


def test_the_committed_example_reports_are_protected_on_a_fresh_clone(tmp_path):
    tracked = subprocess.run(
        ["git", "ls-files", "reports"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    examples = {Path(f).parts[1] for f in tracked if f.count("/") == 2}
    assert examples  # the README shows them
    make_run(tmp_path / "sweep" / "0")
    for example in examples:
        clone = tmp_path / "clone" / "reports"  # what a fresh clone holds: tracked files only
        for name in (f for f in tracked if f.startswith(f"reports/{example}/")):
            (clone / example).mkdir(parents=True, exist_ok=True)
            (clone / example / Path(name).name).write_bytes((REPO / name).read_bytes())
        before = {p.name: p.read_bytes() for p in (clone / example).iterdir()}
        args = [str(tmp_path / "sweep"), "--dir", str(clone), "--name", example]
        assert cli.main(args) == 2
        assert {p.name: p.read_bytes() for p in (clone / example).iterdir()} == before


@pytest.mark.slow
def test_two_builds_of_one_report_name_at_once_never_interleave(tmp_path):
    for sweep in ("a", "b"):
        for i, width in enumerate((16, 32, 64)):
            make_run(tmp_path / sweep / str(i), config=with_changes(model__width=width))
    procs = [
        subprocess.Popen(
            [sys.executable, str(REPORT_PY), sweep, "--name", "same"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for sweep in ("a", "b")
    ]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert sorted(code for code, _ in results) == [0, 2], results
    [refused] = [err for code, err in results if code == 2]
    assert "holds a report of other runs" in refused and "Traceback" not in refused
    folder = tmp_path / "reports" / "same"
    manifest = json.loads((folder / "manifest.json").read_text())["files"]
    assert sorted(p.name for p in folder.iterdir()) == manifest  # whole, and one build's
    [winner] = [s for s, (code, _) in zip("ab", results, strict=True) if code == 0]
    sources = json.loads((folder / "sources.json").read_text())["runs"]
    assert {Path(s).parent.name for s in sources} == {winner}


def test_folder_without_runs_is_a_clear_error(tmp_path):
    with pytest.raises(RunFolderError, match="no run folders in it"):
        collect([tmp_path])
    with pytest.raises(RunFolderError, match="no such folder"):
        collect([tmp_path / "missing"])


def test_incomplete_runs_are_reported_not_dropped(tmp_path):
    sweep = tmp_path / "sweep"
    make_run(sweep / "0", OVERFIT)
    make_run(sweep / "1", OVERFIT, summary=False)  # killed before summary.json
    make_run(sweep / "2", metrics=False)  # failed before its first epoch
    empty = make_run(sweep / "3", OVERFIT, status="running", metrics=False)
    (empty / "metrics.csv").write_text("")
    truncated = make_run(sweep / "4", OVERFIT, status="running")
    text = (truncated / "metrics.csv").read_text()
    (truncated / "metrics.csv").write_text(text[: text.rindex("\n", 0, -1) + 12])  # half a row
    folder = build_report([sweep], in_folder(tmp_path / "reports"))
    runs = pd.read_csv(folder / "runs.csv").set_index("run")
    assert list(runs.index) == [0, 1, 2, 3, 4]
    assert runs.loc[1, "status"] == "running" and "no summary.json" in runs.loc[1, "reason"]
    assert runs.loc[1, "diagnosis"] == "overfit"
    assert runs.loc[2, "diagnosis"] == "no data" and "metrics.csv missing" in runs.loc[2, "reason"]
    assert runs.loc[3, "diagnosis"] == "no data"
    assert runs.loc[4, "epochs_run"] == 9
    markdown = (folder / "report.md").read_text()
    assert (
        "Left out of the charts: 2 (metrics.csv missing); 3 (metrics.csv has no complete epoch)"
        in markdown
    )


def test_single_run_and_mixed_sweeps(tmp_path):
    one = make_run(tmp_path / "x" / "0", OVERFIT)
    assert collect([one], SETTINGS).runs["label"].tolist() == ["0"]
    other = make_run(tmp_path / "y" / "0", GOOD_FIT, config=with_changes(optimizer__lr=0.1))
    report = collect([tmp_path / "x", tmp_path / "y"], SETTINGS)
    assert report.runs["run"].tolist() == ["x/0", "y/0"]
    assert report.varying == ["optimizer.lr"]
    runs = report.runs.set_index("run")
    assert runs.loc["y/0", "label"] == "optimizer.lr=0.1"
    assert runs.loc["y/0", "diagnosis"] == "good fit" and runs.loc["x/0", "diagnosis"] == "overfit"
    assert runs.loc["y/0", "path"].endswith(str(other.relative_to(tmp_path)))


def test_null_and_set_values_of_a_key_are_a_difference(tmp_path):
    make_run(tmp_path / "s" / "0", config=with_changes(optimizer__grad_clip=None))
    make_run(tmp_path / "s" / "1", config=with_changes(optimizer__grad_clip=1.0))
    report = collect([tmp_path / "s"], SETTINGS)
    assert report.varying == ["optimizer.grad_clip"]
    assert report.runs["label"].tolist() == ["optimizer.grad_clip=null", "optimizer.grad_clip=1.0"]


def test_values_are_written_as_on_the_command_line(tmp_path):
    make_run(tmp_path / "s" / "0", config=with_changes(model__final_activation=False))
    make_run(tmp_path / "s" / "1", config=with_changes(model__final_activation=True))
    no_depth = with_changes(model__final_activation=True)
    del no_depth["model"]["depth"]  # a run without a value for model.depth
    make_run(tmp_path / "s" / "2", config=no_depth)
    folder = build_report([tmp_path / "s"], in_folder(tmp_path / "reports"))
    runs = pd.read_csv(folder / "runs.csv", dtype=str).set_index("run")
    # an integer stays an integer although another run has no value for its key
    assert runs["label"].tolist() == [
        "model.depth=2 model.final_activation=false",
        "model.depth=2 model.final_activation=true",
        "model.depth=null model.final_activation=true",
    ]
    assert runs["model.depth"].fillna("").tolist() == ["2", "2", ""]
    curves = pd.read_csv(folder / "curves.csv", dtype=str)
    assert set(curves["model.depth"].fillna("")) == {"2", ""}
    # every view is drawn, a bool key and a key some runs lack included
    for chart in ("matrix.png", "effects.png", "curves.png", "runs.png"):
        assert (folder / chart).is_file(), chart
    effects = pd.read_csv(folder / "effects.csv", dtype=str, keep_default_na=False)
    assert set(zip(effects["key"], effects["value"], strict=True)) == {
        ("model.final_activation", "false"),
        ("model.final_activation", "true"),
        ("model.depth", "2"),
        ("model.depth", "null"),
    }


def test_report_defaults_are_the_report_groups_yaml():
    # one source: the YAML group that Hydra composes is what the report falls back to
    composed = OmegaConf.to_container(compose_cfg().report)
    assert ReportSettings.from_mapping() == ReportSettings(**composed)
    with pytest.raises(TypeError):
        ReportSettings(patience=3)  # no second set of defaults in the code


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--patience", "0"], "report.patience=0 is invalid: expected an integer >= 1"),
        (["--min-delta", "-1"], "report.min_delta=-1.0 is invalid: expected a finite number >= 0"),
        (["--min-delta", "nan"], "report.min_delta=nan is invalid: expected a finite number >= 0"),
        (["--name", "a/b"], "report.name=a/b is invalid: expected null or a folder name"),
        (["--name", ".."], "report.name=.. is invalid: expected null or a folder name"),
        (["--name", "/abs"], "report.name=/abs is invalid: expected null or a folder name"),
    ],
)
def test_report_command_refuses_bad_settings_in_one_line(tmp_path, capsys, option, message):
    make_run(tmp_path / "sweep" / "0")
    reports = tmp_path / "reports"
    assert cli.main([str(tmp_path / "sweep"), "--dir", str(reports), *option]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"report.py: {message}") and error.count("\n") == 1
    assert not reports.exists()


@pytest.mark.slow
def test_trainer_stop_and_report_early_stopping_epoch_have_their_own_names(tmp_path):
    cfg = quick_cfg(
        "trainer.epochs=30",
        "optimizer.lr=0.01",
        "trainer.early_stopping.patience=2",
        "report.patience=6",
    )
    run(cfg, tmp_path / "sweep" / "0")
    metrics = pd.read_csv(tmp_path / "sweep" / "0" / "metrics.csv")
    losses = metrics.loc[metrics["epoch"] >= 1, "val_loss"].tolist()  # the trained epochs
    summary = json.loads((tmp_path / "sweep" / "0" / "summary.json").read_text())
    row = collect([tmp_path / "sweep"], ReportSettings.from_mapping(patience=6)).runs.iloc[0]
    assert summary["trainer_stop_epoch"] == early_stopping_epoch(losses, 2)
    assert row["early_stopping_epoch"] == early_stopping_epoch(losses, 6)
    assert summary["trainer_stop_epoch"] < row["early_stopping_epoch"]


def test_diff_writes_lists_as_on_the_command_line(tmp_path):
    a = make_run(tmp_path / "a", config=with_changes(optimizer__betas=[0.9, 0.999]))
    b = make_run(tmp_path / "b", config=with_changes(optimizer__betas=[0.8, 0.999]))
    assert diff_runs(a, b).splitlines()[0] == "optimizer.betas: [0.9,0.999] → [0.8,0.999]"


def png_width(path: Path) -> int:
    return int.from_bytes(path.read_bytes()[16:20], "big")  # the IHDR chunk's width


def with_hydra_record(folder: Path) -> Path:
    """`folder` with .hydra/config.yaml beside its config.yaml, as a Hydra run has."""
    (folder / ".hydra").mkdir()
    (folder / ".hydra" / "config.yaml").write_text((folder / "config.yaml").read_text())
    return folder


def test_unreadable_or_cut_config_yaml_falls_back_to_hydras_record(tmp_path):
    for i, lr in enumerate([0.001, 0.01, 0.1, 1.0]):
        with_hydra_record(make_run(tmp_path / "s" / str(i), config=with_changes(optimizer__lr=lr)))
    (tmp_path / "s" / "1" / "config.yaml").write_bytes(b"model: [\xff\xfe unclosed\n")
    (tmp_path / "s" / "2" / "config.yaml").write_text("- a list\n- not a mapping\n")
    cut = (tmp_path / "s" / "3" / "config.yaml").read_text()
    (tmp_path / "s" / "3" / "config.yaml").write_text(cut[: cut.index("optimizer:")])  # parses
    folder = build_report([tmp_path / "s"], in_folder(tmp_path / "reports"))
    runs = pd.read_csv(folder / "runs.csv", dtype=str).set_index("run")
    assert runs["label"].tolist() == [
        "optimizer.lr=0.001",
        "optimizer.lr=0.01",
        "optimizer.lr=0.1",
        "optimizer.lr=1.0",
    ]
    assert runs["status"].tolist() == ["completed"] * 4
    assert "config.yaml: not UTF-8 text" in runs.loc["1", "reason"]
    assert "config.yaml: a list, not a mapping" in runs.loc["2", "reason"]
    assert (
        "config.yaml disagrees with .hydra/config.yaml on optimizer.name: read .hydra/config.yaml"
        in runs.loc["3", "reason"]
    )
    assert list(runs.columns[:2]) == ["label", "optimizer.lr"]  # the one key that varies


def test_damaged_runs_are_listed_and_leave_the_other_runs_alone(tmp_path, capsys):
    def sweep(root: Path, damaged: bool) -> Path:
        make_run(root / "0", OVERFIT, config=with_changes(model__depth=1))
        make_run(root / "1", GOOD_FIT, config=with_changes(model__depth=2))
        if not damaged:
            return root
        (make_run(root / "2") / "summary.json").write_text("[1, 2]\n")
        metrics = make_run(root / "3") / "metrics.csv"
        metrics.write_bytes(metrics.read_bytes() + b"4,\xff\xfe,0.5\n")
        (make_run(root / "4") / "config.yaml").write_text("model: [unclosed\n")  # no .hydra
        no_val_loss = pd.read_csv(make_run(root / "5") / "metrics.csv").drop(columns="val_loss")
        no_val_loss.to_csv(root / "5" / "metrics.csv", index=False)
        summary = json.loads((make_run(root / "6") / "summary.json").read_text())
        (root / "6" / "summary.json").write_text(json.dumps({**summary, "params": "many"}))
        return root

    reports = tmp_path / "reports"
    assert cli.main([str(sweep(tmp_path / "clean", False)), "--dir", str(reports)]) == 0
    assert cli.main([str(sweep(tmp_path / "sweep", True)), "--dir", str(reports)]) == 0
    errors = capsys.readouterr().err.splitlines()
    reasons = {
        "2": "summary.json: a list, not a JSON object",
        "3": "metrics.csv: not UTF-8 text (byte 0xff at offset",
        "4": "config.yaml: not a YAML mapping (while parsing a flow sequence)",
        "5": "metrics.csv: no val_loss column",
        "6": 'summary.json: "params" is "many", expected a number',
    }
    assert len(errors) == len(reasons)
    for line, (run_id, reason) in zip(errors, reasons.items(), strict=True):
        assert line.startswith(f"damaged run {tmp_path / 'sweep' / run_id}: {reason}")
    clean = pd.read_csv(reports / "clean" / "runs.csv", dtype=str).drop(columns="path")
    runs = pd.read_csv(reports / "sweep" / "runs.csv", dtype=str).drop(columns="path")
    # the undamaged runs' rows are what they are without the damaged ones: labels, the keys
    # that vary, integers as integers
    assert runs.iloc[:2].equals(clean)
    assert runs["label"].tolist()[:2] == ["model.depth=1", "model.depth=2"]
    damaged = runs.iloc[2:].set_index("run")
    assert set(damaged["status"]) == {"damaged"} == set(damaged["diagnosis"])
    for run_id, reason in reasons.items():
        assert damaged.loc[run_id, "reason"].startswith(reason)
    assert png_width(reports / "sweep" / "runs.png") == png_width(reports / "clean" / "runs.png")
    for page in ("report.md", "report.html"):
        text = (reports / "sweep" / page).read_text()
        assert "Damaged runs" in text and "5 run(s) hold a file that is not" in text
        assert "summary.json: a list, not a JSON object" in text


def test_metrics_csv_reads_back_as_the_trainer_wrote_it(tmp_path):
    # MetricsWriter ends rows with \r\n (the csv module's way); a last row cut short is left out
    columns = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "dead_out"]
    rows = [
        dict(zip(columns, [e, 1 / (e + 1), 0.5, 0.3 + e, 0.9, 0.1], strict=True)) for e in range(3)
    ]
    with MetricsWriter(tmp_path / "metrics.csv", columns) as writer:
        for row in rows:
            writer.write(row)
    with open(tmp_path / "metrics.csv", "a") as file:
        file.write("3,0.25,0.5")  # killed while writing epoch 3
    metrics = read_metrics(tmp_path / "metrics.csv")
    assert list(metrics.columns) == columns  # no "dead_out\r"
    expected = pd.DataFrame(rows)
    pd.testing.assert_frame_equal(metrics, expected, check_dtype=False)
    assert metrics["epoch"].dtype == "int64"


def test_nan_and_huge_values_are_data_not_damage(tmp_path):
    nan, huge = float("nan"), 1e308
    make_run(tmp_path / "s" / "0", ([1.0, 0.5, nan], [1.0, 0.5, nan], [0.9, 0.95, nan]))
    make_run(tmp_path / "s" / "1", ([1.0, huge, 0.4], [1.0, 0.5, huge], [0.9, 0.95, 0.96]))
    summary = json.loads((tmp_path / "s" / "1" / "summary.json").read_text())
    summary["test_best"]["loss"], summary["wall_time_s"] = nan, huge
    (tmp_path / "s" / "1" / "summary.json").write_text(json.dumps(summary))
    folder = build_report([tmp_path / "s"], in_folder(tmp_path / "reports"))
    runs = pd.read_csv(folder / "runs.csv")
    assert runs["status"].tolist() == ["completed", "completed"]
    assert runs["best_val_loss"].tolist() == [0.5, 0.4]
    assert runs["wall_time_s"].tolist() == [1.0, huge]


def test_configs_are_read_without_resolving_interpolations(tmp_path, monkeypatch):
    secret = "hunter2-do-not-publish"
    monkeypatch.setenv("FITSCOPE_TEST_SECRET", secret)
    planted = "${oc.env:FITSCOPE_TEST_SECRET}"
    make_run(tmp_path / "s" / "0", config=with_changes(data__root="data"))
    make_run(tmp_path / "s" / "1", config=with_changes(data__root=planted))
    folder = build_report([tmp_path / "s"], in_folder(tmp_path / "reports"))
    for path in folder.iterdir():
        assert secret not in path.read_bytes().decode("latin-1"), path.name
    runs = pd.read_csv(folder / "runs.csv").set_index("run")
    assert runs.loc[1, "label"] == f"data.root={planted}"
    assert f"data.root={planted}" in (folder / "report.html").read_text()
    assert planted in diff_runs(tmp_path / "s" / "0", tmp_path / "s" / "1")


def outside_code_blocks(markdown: str) -> list[str]:
    """The lines of `markdown` outside fenced code blocks (CommonMark's rule: a fence closes on
    a line of at least as many backticks); fails on a fence left open."""
    lines, fence = [], None
    for line in markdown.splitlines():
        run = re.fullmatch(r"(`{3,})\s*", line)
        if fence is None and re.match(r"`{3,}", line):
            fence = re.match(r"`+", line).group()
        elif fence is not None and run and len(run.group(1)) >= len(fence):
            fence = None
        elif fence is None:
            lines.append(line)
    assert fence is None, "a code block that never closes"
    return lines


def test_markdown_shows_run_text_as_text(tmp_path):
    values = [
        "<script>alert(1)</script>",
        "<img src=x onerror=alert(2)>",
        "a|b",
        "two\nlines | ```\n<script>alert(3)</script>",
    ]
    for i, value in enumerate(values):
        make_run(tmp_path / "s" / str(i), config=with_changes(model__name=value))
    make_run(
        tmp_path / "s" / "4",
        status="failed",
        error="RuntimeError: <b>bold</b> | *x*\n<script>alert(4)</script>",
        config=with_changes(model__name="[link](javascript:alert(5))"),
    )
    folder = build_report([tmp_path / "s"], in_folder(tmp_path / "reports"))
    markdown = (folder / "report.md").read_text()
    text = outside_code_blocks(markdown)
    for line in text:
        assert not re.search(r"<(script|img|b)\b", line), line
        assert not re.search(r"(?<!\\)\[link\]", line), line
    # every row of a table has its header's number of cells: a | in a value stays in its cell
    tables = re.findall(r"(?:^\|.*\n)+", "\n".join(text) + "\n", flags=re.M)
    assert len(tables) >= 3
    for table in tables:
        cells = {len(re.findall(r"(?<!\\)\|", row)) for row in table.splitlines()}
        assert len(cells) == 1, table
    assert r"model.name=&lt;script&gt;alert(1)&lt;/script&gt;" in markdown
    assert r"model.name=a\|b" in markdown
    assert r"RuntimeError: &lt;b&gt;bold&lt;/b&gt; \| \*x\* &lt;script&gt;" in markdown
    # in the block of re-run commands, a label stays on its own `# ...` line
    assert "\n# model.name=two\\nlines | ```\\n<script>alert(3)</script>\n" in markdown
    page = (folder / "report.html").read_text()
    assert "alert(1)" in page and not re.search(r"<img src=x|<script>alert|<b>bold", page)
