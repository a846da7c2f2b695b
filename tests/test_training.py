"""The training loop: determinism, best epoch, early stopping, divergence, test evaluation."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from conftest import compose_cfg, read_metrics, read_summary
from fitscope.data import make_splits
from fitscope.models import load_checkpoint
from fitscope.runner import run
from fitscope.training import EPOCH_COLUMNS, best_epoch, early_stopping_epoch, evaluate

QUICK = ["data=digits", "trainer.console=quiet", "model.width=32"]


def test_same_seed_same_device_writes_identical_metrics(tmp_path):
    cfg = compose_cfg(*QUICK, "trainer.epochs=4", "model.dropout=0.2", "trainer.seed=7")
    run(cfg, tmp_path / "a")
    run(cfg, tmp_path / "b")
    a, b = read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")
    assert list(a.columns[: len(EPOCH_COLUMNS)]) == list(EPOCH_COLUMNS)
    assert "grad_norm_1" in a.columns  # diagnostics are part of what must repeat
    pd.testing.assert_frame_equal(a.drop(columns="seconds"), b.drop(columns="seconds"))
    summary_a, summary_b = read_summary(tmp_path / "a"), read_summary(tmp_path / "b")
    for key in ("best", "last", "test_best", "test_last", "best_epoch", "config_hash"):
        assert summary_a[key] == summary_b[key]


def test_another_seed_gives_other_metrics(tmp_path):
    run(compose_cfg(*QUICK, "trainer.epochs=2", "trainer.seed=1"), tmp_path / "a")
    run(compose_cfg(*QUICK, "trainer.epochs=2", "trainer.seed=2"), tmp_path / "b")
    assert not read_metrics(tmp_path / "a")["val_loss"].equals(
        read_metrics(tmp_path / "b")["val_loss"]
    )
    assert (
        read_summary(tmp_path / "a")["config_hash"] != read_summary(tmp_path / "b")["config_hash"]
    )


def test_summary_reports_best_epoch_and_test_with_best_weights(tmp_path):
    cfg = compose_cfg(*QUICK, "trainer.epochs=25", "optimizer.lr=0.01")
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
        "val": len(splits.x_val),
        "test": len(splits.x_test),
    }
    assert summary["params"] == sum(p.numel() for p in model.parameters())
    assert summary["samples_per_s"] > 0 and summary["wall_time_s"] > 0


def test_early_stopping_really_stops(tmp_path):
    # Adam at a high rate overfits the small digits set within a few epochs.
    cfg = compose_cfg(
        *QUICK,
        "trainer.epochs=60",
        "optimizer.lr=0.01",
        "trainer.early_stopping.enabled=true",
        "trainer.early_stopping.patience=3",
    )
    summary = run(cfg, tmp_path)
    metrics = read_metrics(tmp_path)
    assert summary["stopped_early"] is True
    assert len(metrics) == summary["epochs_run"] < 60
    assert summary["epochs_run"] == summary["early_stopping_epoch"]
    assert summary["epochs_run"] == summary["best_epoch"] + 3


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


def test_nonfinite_loss_ends_run_as_diverged_and_keeps_rows(tmp_path):
    cfg = compose_cfg(
        *QUICK,
        "optimizer=sgd",
        "optimizer.lr=1e4",
        "trainer.epochs=5",
        "trainer.divergence_loss=null",
    )
    summary = run(cfg, tmp_path)
    metrics = read_metrics(tmp_path)
    assert summary["status"] == "diverged"
    assert len(metrics) == summary["epochs_run"] < 5
    assert not math.isfinite(metrics["train_loss"].iloc[-1])
    assert "loss out of bounds at epoch" in summary["error"]
    assert read_summary(tmp_path)["status"] == "diverged"  # valid JSON despite NaN metrics


def test_exploding_but_finite_loss_counts_as_diverged(tmp_path):
    summary = run(compose_cfg(*QUICK, "optimizer.lr=1e4", "trainer.epochs=3"), tmp_path)
    assert summary["status"] == "diverged"
    assert "trainer.divergence_loss=1000" in summary["error"]


def test_last_batch_smaller_than_batch_size_is_trained(tmp_path):
    # digits: 1149 training samples; batch 1000 leaves a last batch of 149.
    cfg = compose_cfg(*QUICK, "trainer.batch_size=1000", "trainer.epochs=1", "optimizer=sgd")
    summary = run(cfg, tmp_path)
    assert summary["samples"]["train"] % 1000 != 0
    assert summary["status"] == "completed"


def test_grad_clip_and_weight_decay_train(tmp_path):
    cfg = compose_cfg(
        *QUICK,
        "optimizer=momentum",
        "optimizer.grad_clip=0.5",
        "optimizer.weight_decay=1e-4",
        "trainer.epochs=2",
    )
    assert run(cfg, tmp_path)["status"] == "completed"


def test_eval_batch_size_does_not_change_results():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 3))
    x, y = torch.randn(103, 5), torch.randint(0, 3, (103,))
    whole = evaluate(model, x, y, 1000)
    pieces = evaluate(model, x, y, 10)
    assert torch.allclose(whole, pieces, atol=1e-6)
