"""The training loop: determinism, best epoch, early stopping, divergence, test evaluation, and
the weights it trains checked against the tutorial's loop written out by hand."""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import stat
import subprocess
import sys

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from conftest import quick_cfg, read_metrics, read_summary
from fitscope.rundir import EPOCH_COLUMNS
from fitscope.stopping import best_epoch, early_stopping_epoch
from fitscope.train.data import make_splits
from fitscope.train.loop import evaluate, fit
from fitscope.train.models import build_mlp, load_checkpoint
from fitscope.train.runner import run
from fitscope.train.settings import validate


@pytest.mark.slow
def test_same_seed_same_device_writes_identical_metrics(tmp_path):
    cfg = quick_cfg("trainer.epochs=4", "model.dropout=0.2", "trainer.seed=7")
    run(cfg, tmp_path / "a")
    run(cfg, tmp_path / "b")
    a, b = read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")
    assert list(a.columns[: len(EPOCH_COLUMNS)]) == list(EPOCH_COLUMNS)
    assert "grad_rms_1" in a.columns  # diagnostics are part of what must repeat
    pd.testing.assert_frame_equal(a.drop(columns="seconds"), b.drop(columns="seconds"))
    summary_a, summary_b = read_summary(tmp_path / "a"), read_summary(tmp_path / "b")
    for key in ("best", "last", "test_best", "test_last", "best_epoch", "config_hash"):
        assert summary_a[key] == summary_b[key]


@pytest.mark.slow
def test_another_seed_gives_other_metrics(tmp_path):
    run(quick_cfg("trainer.epochs=2", "trainer.seed=1"), tmp_path / "a")
    run(quick_cfg("trainer.epochs=2", "trainer.seed=2"), tmp_path / "b")
    assert not read_metrics(tmp_path / "a")["val_loss"].equals(
        read_metrics(tmp_path / "b")["val_loss"]
    )
    assert (
        read_summary(tmp_path / "a")["config_hash"] != read_summary(tmp_path / "b")["config_hash"]
    )


@pytest.mark.slow
def test_summary_reports_best_epoch_and_test_with_best_weights(tmp_path):
    cfg = quick_cfg("trainer.epochs=25", "optimizer.lr=0.01")
    summary = run(cfg, tmp_path)
    metrics = read_metrics(tmp_path)

    assert summary["best_epoch"] == int(metrics.loc[metrics["val_loss"].idxmin(), "epoch"])
    assert summary["best"]["val_loss"] == metrics["val_loss"].min()
    assert summary["last"]["val_loss"] == metrics["val_loss"].iloc[-1]
    # The saved checkpoint holds the best epoch's weights: it reproduces the test metrics.
    model = load_checkpoint(tmp_path / "best.pt")
    splits = make_splits(cfg.data)
    loss, acc = evaluate(model, splits.x_test, splits.y_test, 1000).tolist()
    assert loss == pytest.approx(summary["test_best"]["loss"], rel=1e-5)
    assert acc == pytest.approx(summary["test_best"]["acc"])
    assert summary["samples"] == {
        "train": len(splits.x_train),
        "train_eval": len(splits.x_train),  # auto: a training part this small, whole
        "val": len(splits.x_val),
        "test": len(splits.x_test),
    }
    assert summary["params"] == sum(p.numel() for p in model.parameters())
    assert summary["samples_per_s"] > 0 and summary["wall_time_s"] > 0


@pytest.mark.slow
def test_a_run_folder_locked_by_another_process_is_left_to_it(tmp_path, caplog):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(run_dir)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with caplog.at_level("WARNING", logger="fitscope"):
            summary = run(quick_cfg(), run_dir, label="#0")
        assert summary["status"] == "running" and summary["skipped"]
        assert not (run_dir / "metrics.csv").exists() and not (run_dir / "summary.json").exists()
        [line] = [r.message for r in caplog.records]
        assert line.startswith("#0: skipped, ") and f"pid {holder.pid} on " in line
    finally:
        holder.kill()  # killed, not released: the kernel frees the lock
        holder.wait()
    assert run(quick_cfg(), run_dir)["status"] == "completed"


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_every_file_of_a_run_gets_the_permissions_the_umask_gives(tmp_path, umask):
    # colleagues on shared storage read summary.json like every other file of the run
    before = os.umask(umask)
    try:
        run(quick_cfg(), tmp_path / "run")
    finally:
        os.umask(before)
    files = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in files}
    assert {"summary.json", "metrics.csv", "config.yaml"} <= set(modes)
    assert set(modes.values()) == {0o666 & ~umask}, modes


@pytest.mark.slow
def test_early_stopping_really_stops(tmp_path):
    # Adam at a high rate overfits the small digits set within a few epochs.
    cfg = quick_cfg(
        "trainer.epochs=60",
        "optimizer.lr=0.01",
        "trainer.early_stopping.enabled=true",
        "trainer.early_stopping.patience=3",
    )
    summary = run(cfg, tmp_path)
    metrics = read_metrics(tmp_path)
    assert summary["stopped_early"] is True
    assert len(metrics) == summary["epochs_run"] + 1 < 61  # and epoch 0
    assert summary["epochs_run"] == summary["trainer_stop_epoch"]
    assert summary["epochs_run"] == summary["best_epoch"] + 3
    assert "early_stopping_epoch" not in summary  # the report's post-hoc epoch has that name


@pytest.mark.parametrize(
    ("losses", "patience", "min_delta", "expected"),
    [
        ([1.0, 0.8, 0.7, 0.75, 0.76, 0.77, 0.6], 3, 0.0, 6),  # 3 epochs without a new best
        ([1.0, 0.8, 0.7, 0.75, 0.76, 0.6, 0.5], 3, 0.0, 7),  # improves in time: never stops
        ([1.0, 0.9, 0.89, 0.88, 0.87], 2, 0.05, 4),  # improvements smaller than min_delta
        ([float("nan"), 0.5], 1, 0.0, 1),
    ],
)
def test_early_stopping_epoch(losses, patience, min_delta, expected):
    assert early_stopping_epoch(losses, patience, min_delta) == expected


def test_best_epoch_is_lowest_finite_validation_loss():
    assert best_epoch([0.5, 0.3, 0.3, 0.4]) == 2
    assert best_epoch([float("nan"), float("inf")]) is None


@pytest.mark.slow
def test_nonfinite_loss_ends_run_as_diverged_and_keeps_rows(tmp_path):
    cfg = quick_cfg(
        "model.width=32",
        "optimizer=sgd",
        "optimizer.lr=1e4",
        "trainer.epochs=5",
        "trainer.divergence_loss=null",
    )
    summary = run(cfg, tmp_path)
    metrics = read_metrics(tmp_path)
    assert summary["status"] == "diverged"
    assert len(metrics) == summary["epochs_run"] + 1 < 6  # and epoch 0
    assert not math.isfinite(metrics["train_loss"].iloc[-1])
    assert "loss out of bounds at epoch" in summary["error"]
    assert read_summary(tmp_path)["status"] == "diverged"  # valid JSON despite NaN metrics


@pytest.mark.parametrize(("lr", "best_pt"), [("1e6", False), ("0.01", True)])
def test_the_run_folder_line_names_only_the_files_written(tmp_path, caplog, lr, best_pt):
    cfg = quick_cfg("optimizer=sgd", f"optimizer.lr={lr}", "trainer.console=runs")
    cfg.trainer.divergence_loss = None  # lr 1e6: no finite validation loss at epoch 1
    with caplog.at_level("INFO", logger="fitscope"):
        run(cfg, tmp_path)
    [line] = [r.message for r in caplog.records if r.message.startswith("run folder: ")]
    assert (tmp_path / "best.pt").exists() == best_pt
    assert ("best.pt" in line) == best_pt
    assert "metrics.csv, summary.json" in line


@pytest.mark.slow
def test_exploding_but_finite_loss_counts_as_diverged(tmp_path):
    summary = run(quick_cfg("optimizer.lr=1e4", "trainer.epochs=3"), tmp_path)
    assert summary["status"] == "diverged"
    assert "trainer.divergence_loss=1000" in summary["error"]


# ---------------------------------------------- the trained weights against a hand-written loop


HOLD_LOCK = """
import sys, time
from pathlib import Path
from fitscope.rundir import run_lock
with run_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(600)
"""


def hand_written_loop(model, splits, optimizer, settings, drop_last=False):
    """The tutorial's loop written out by hand, with torch's own optimizer and clipping, over
    the same seeded permutations that fitscope draws: the weights `fit` must end with."""
    model = copy.deepcopy(model)
    args = {"lr": optimizer["lr"], "weight_decay": optimizer["weight_decay"]}
    if optimizer["name"] == "momentum":
        args.update(momentum=optimizer["momentum"], nesterov=optimizer["nesterov"])
    sgd = torch.optim.SGD(model.parameters(), **args)
    x, y = splits.x_train, splits.y_train
    generator = torch.Generator(device=x.device).manual_seed(settings.seed)  # as fit draws them
    for _ in range(settings.epochs):
        permutation = torch.randperm(len(x), device=x.device, generator=generator)
        batches = permutation.split(settings.batch_size)
        for rows in batches[:-1] if drop_last else batches:
            sgd.zero_grad()
            F.cross_entropy(model(x[rows]), y[rows]).backward()
            if optimizer["grad_clip"] is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), optimizer["grad_clip"])
            sgd.step()
    return model


def fit_config(*overrides):
    """(plain config, trainer settings, splits, a freshly seeded model) for `fit`."""
    config, settings = validate(quick_cfg(*overrides))
    splits = make_splits(config["data"], settings.device)
    torch.manual_seed(settings.seed)
    model = build_mlp(64, 10, depth=2, width=16, activation=config["activation"])
    return config, settings, splits, model.to(settings.device)


def assert_same_weights(a, b, same=True):
    close = all(
        torch.allclose(p, q, rtol=1e-4, atol=1e-6)
        for p, q in zip(a.parameters(), b.parameters(), strict=True)
    )
    assert close == same


@pytest.mark.parametrize("compile", ["none", "graph"])  # graph: uncaptured on the CPU
def test_last_batch_smaller_than_batch_size_is_trained(compile):
    # digits: 1,149 training samples; batches of 1000 leave a last batch of 149.
    config, settings, splits, model = fit_config(
        "optimizer=sgd", "optimizer.lr=0.5", "trainer.batch_size=1000"
    )
    settings = dataclasses.replace(settings, compile=compile)
    assert len(splits.x_train) % settings.batch_size == 149
    reference = hand_written_loop(model, splits, config["optimizer"], settings)
    steps = []
    fit(model, splits, config["optimizer"], settings, on_steps=lambda _, s: steps.append(s))
    assert len(steps[0]) == 2
    assert_same_weights(model, reference)
    dropped = hand_written_loop(model, splits, config["optimizer"], settings, drop_last=True)
    assert_same_weights(model, dropped, same=False)  # the last step does count


@pytest.mark.parametrize("compile", ["none", "graph"])
@pytest.mark.parametrize(
    "setting", ["optimizer.grad_clip=0.05", "optimizer.weight_decay=0.05"], ids=["clip", "decay"]
)
def test_grad_clip_and_weight_decay_train(setting, compile):
    base = ("optimizer=momentum", "optimizer.lr=0.1", "trainer.epochs=2")
    config, settings, splits, model = fit_config(*base, setting)
    settings = dataclasses.replace(settings, compile=compile)
    initial = copy.deepcopy(model)
    result = fit(model, splits, config["optimizer"], settings)
    assert_same_weights(model, hand_written_loop(initial, splits, config["optimizer"], settings))
    without = hand_written_loop(initial, splits, fit_config(*base)[0]["optimizer"], settings)
    assert_same_weights(model, without, same=False)  # the setting changed the training
    if "grad_clip" in setting:
        assert result.rows[0]["clip_fraction"] > 0.5  # clipping fired, as the monitor saw it


@pytest.mark.parametrize("compile", ["none", "graph"])
def test_fit_leaves_the_last_weights_in_the_callers_model(compile):
    config, settings, splits, model = fit_config(
        "optimizer=momentum", "optimizer.lr=0.1", "trainer.epochs=8"
    )
    settings = dataclasses.replace(settings, compile=compile)
    initial = copy.deepcopy(model)
    result = fit(model, splits, config["optimizer"], settings)
    assert result.best_epoch < settings.epochs  # so best and last weights differ
    assert_same_weights(model, hand_written_loop(initial, splits, config["optimizer"], settings))
    assert_same_weights(model, initial, same=False)


def test_eval_batch_size_does_not_change_results():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 3))
    x, y = torch.randn(103, 5), torch.randint(0, 3, (103,))
    whole = evaluate(model, x, y, 1000)
    pieces = evaluate(model, x, y, 10)
    assert torch.allclose(whole, pieces, atol=1e-6)
