"""Datasets become normalized tensors, split once: held-out test, stratified seeded validation,
k-fold cross-validation."""

from __future__ import annotations

import sys
from importlib.metadata import version

import numpy as np
import pytest
import torch

from conftest import compose_cfg, quick_cfg, read_metrics
from fitscope.config import ConfigError
from fitscope.report.frames import collect
from fitscope.train import loop
from fitscope.train.data import (
    DataError,
    clear_cache,
    kfold_split,
    load_arrays,
    make_splits,
    train_eval_count,
    write_idx_dataset,
)
from fitscope.train.models import build_mlp, mlp_args
from fitscope.train.runner import run
from fitscope.train.settings import validate


def _label_counts(y: torch.Tensor) -> np.ndarray:
    return np.bincount(y.numpy(), minlength=10)


def test_mnist5k_is_embedded_and_split_stratified():
    splits = make_splits(compose_cfg().data)
    assert splits.n_features == 784 and splits.n_classes == 10
    assert (len(splits.x_train), len(splits.x_val), len(splits.x_test)) == (3200, 800, 1000)
    assert (_label_counts(splits.y_test) == 100).all()
    assert (_label_counts(splits.y_val) == 80).all()
    assert splits.x_train.dtype == torch.float32 and splits.y_train.dtype == torch.int64
    # Normalized with the training part's statistics.
    assert abs(splits.x_train.mean().item()) < 1e-4
    assert abs(splits.x_train.std().item() - 1) < 1e-3


def test_splits_are_disjoint_and_cover_the_dataset():
    images, _, _, _ = load_arrays("digits")
    splits = make_splits(compose_cfg("data=digits").data)
    rows = [
        tuple(r) for part in (splits.x_train, splits.x_val, splits.x_test) for r in part.tolist()
    ]
    assert len(rows) == len(images)
    # digits has a few duplicate images; nearly all rows are distinct across the parts.
    train = {tuple(r) for r in splits.x_train.tolist()}
    val = {tuple(r) for r in splits.x_val.tolist()}
    assert len(train & val) <= 3


def test_split_seed_changes_validation_part_but_not_by_trainer_seed():
    a = make_splits(compose_cfg("data=digits", "trainer.seed=1").data)
    b = make_splits(compose_cfg("data=digits", "trainer.seed=2").data)
    c = make_splits(compose_cfg("data=digits", "data.split_seed=1").data)
    assert torch.equal(a.x_val, b.x_val)
    assert not torch.equal(a.x_val, c.x_val)


def test_datasets_are_loaded_once_per_process():
    first = make_splits(compose_cfg("data=digits").data)
    other = make_splits(compose_cfg("data=digits", "data.val_fraction=0.3").data)
    info = load_arrays.cache_info()
    assert (info.misses, info.hits) == (1, 1)
    # the same data config on the same device: the very same prepared tensors, made once
    again = make_splits(compose_cfg("data=digits", "model.depth=3").data)
    assert again.x_train is first.x_train
    assert other.x_train is not first.x_train


def test_torchvision_path_reads_mnist_format_files(tmp_path):
    write_idx_dataset(tmp_path, "KMNIST", n_train=100, n_test=30)
    cfg = compose_cfg(
        "data=kmnist", f"data.root={tmp_path}", "data.download=false", "data.val_fraction=0.2"
    )
    splits = make_splits(cfg.data)
    # The official test file is the test part; validation is carved from the train file.
    assert (len(splits.x_train), len(splits.x_val), len(splits.x_test)) == (80, 20, 30)
    assert splits.n_features == 784
    assert (_label_counts(splits.y_val) == 2).all()


# --------------------------------------------------------------------------------- k-fold


def test_k_fold_validation_parts_are_disjoint_and_cover_the_training_part():
    labels = np.repeat(np.arange(10), 37)
    folds = [kfold_split(labels, 5, k, seed=0) for k in range(5)]
    validation = [set(val.tolist()) for _, val in folds]
    assert all(not (a & b) for i, a in enumerate(validation) for b in validation[i + 1 :])
    assert set().union(*validation) == set(range(len(labels)))
    for train, val in folds:
        assert not set(train.tolist()) & set(val.tolist())
        counts = np.bincount(labels[val], minlength=10)
        assert counts.max() - counts.min() <= 1  # stratified
    # Through the config: every fold keeps the same held-out test part.
    splits = [
        make_splits(compose_cfg("data=digits", "data.folds=5", f"data.fold={k}").data)
        for k in range(5)
    ]
    assert sum(len(s.x_val) for s in splits) == len(splits[0].x_train) + len(splits[0].x_val)
    assert all(torch.equal(s.y_test, splits[0].y_test) for s in splits)


def test_fold_outside_the_folds_is_a_clear_error():
    with pytest.raises(
        ConfigError,
        match=r"data.fold=5 is invalid: expected an integer in "
        r"\[0, 4\] \(data.folds=5\)",
    ):
        validate(compose_cfg("data.folds=5", "data.fold=5"))
    with pytest.raises(ConfigError, match="data.folds=1 is invalid"):
        validate(compose_cfg("data.folds=1"))


@pytest.mark.slow
def test_report_aggregates_folds_like_seeds(tmp_path):
    for k in range(3):
        cfg = quick_cfg("data.folds=3", f"data.fold={k}", "trainer.epochs=2")
        run(cfg, tmp_path / "sweep" / str(k))
    report = collect([tmp_path / "sweep"])
    assert report.replicate_keys == ["data.fold"]
    assert report.groups["n"].tolist() == [3]
    assert report.groups["best_val_loss_std"].iloc[0] > 0


def test_a_torchvision_that_cannot_be_imported_breaks_no_embedded_run(tmp_path, monkeypatch):
    # a torchvision built for another torch fails on import; the embedded data never need it
    from fitscope.train import environment

    monkeypatch.setitem(sys.modules, "torchvision", None)  # import torchvision now fails
    environment.library_versions.cache_clear()
    try:
        summary = run(quick_cfg(), tmp_path)
    finally:
        environment.library_versions.cache_clear()
    assert summary["status"] == "completed", summary["error"]
    assert summary["versions"]["torchvision"] == version("torchvision")  # read, not imported


# -------------------------------------------------------- the train curve's fixed subset


def test_train_curve_subset_is_stratified_fixed_by_the_split_and_a_subset_of_training():
    data = compose_cfg("data=digits").data
    whole = make_splits(data)
    assert whole.train_eval[0] is whole.x_train  # null (the default here): every sample
    a = make_splits(data, train_eval_samples=200)
    x_eval, y_eval = a.train_eval
    assert len(x_eval) == 200
    counts, shares = _label_counts(y_eval), _label_counts(whole.y_train) / len(whole.y_train)
    assert np.abs(counts - 200 * shares).max() <= 1  # each class in its share
    train_rows = {tuple(r) for r in whole.x_train.tolist()}
    assert all(tuple(r) in train_rows for r in x_eval.tolist())  # only training samples
    # drawn with data.split_seed: another trainer seed (another run of the sweep) and a new
    # process (cleared caches) get the very same samples; another split seed others
    clear_cache()
    again = make_splits(compose_cfg("data=digits", "trainer.seed=7").data, train_eval_samples=200)
    assert torch.equal(again.train_eval[0], x_eval) and torch.equal(again.train_eval[1], y_eval)
    other = make_splits(compose_cfg("data=digits", "data.split_seed=1").data, "cpu", 200)
    assert not torch.equal(other.train_eval[1], y_eval)


@pytest.mark.parametrize(
    ("setting", "n_train", "n_val", "count"),
    [
        ("auto", 54_000, 6_000, 10_000),  # at least AUTO_TRAIN_EVAL_MIN
        ("auto", 200_000, 40_000, 40_000),  # as many as the validation part
        ("auto", 3_200, 800, 3_200),  # a small training part whole
        (None, 54_000, 6_000, 54_000),
        (5_000, 54_000, 6_000, 5_000),
        (90_000, 54_000, 6_000, 54_000),
    ],
)
def test_train_eval_samples_resolves_to_a_count(setting, n_train, n_val, count):
    assert train_eval_count(setting, n_train, n_val) == count


def test_each_fold_draws_its_train_curve_from_its_own_training_part():
    for fold in range(3):
        splits = make_splits(
            compose_cfg("data=digits", "data.folds=3", f"data.fold={fold}").data, "cpu", 300
        )
        x_eval, y_eval = splits.train_eval
        assert len(x_eval) == 300
        train_rows = {tuple(r) for r in splits.x_train.tolist()}
        val_rows = {tuple(r) for r in splits.x_val.tolist()}
        eval_rows = [tuple(r) for r in x_eval.tolist()]
        assert all(r in train_rows for r in eval_rows)
        assert sum(r in val_rows for r in eval_rows) <= 3  # digits repeats a few images


def test_train_curve_samples_too_few_for_every_class_is_one_clear_line():
    with pytest.raises(DataError, match=r"trainer.train_eval_samples=5: cannot draw .* use null"):
        make_splits(compose_cfg("data=digits").data, train_eval_samples=5)


def test_every_epoch_measures_the_train_curve_on_the_same_subset(monkeypatch):
    plain, settings = validate(quick_cfg("trainer.epochs=3", "trainer.train_eval_samples=300"))
    splits = make_splits(plain["data"], "cpu", settings.train_eval_samples)
    x_eval, y_eval = splits.train_eval
    inputs, real = [], loop.evaluate
    monkeypatch.setattr(loop, "evaluate", lambda m, x, *a: inputs.append(x) or real(m, x, *a))
    torch.manual_seed(0)
    model = build_mlp(**mlp_args(plain, splits.n_features, splits.n_classes))
    result = loop.fit(model, splits, plain["optimizer"], settings)
    # epochs 0 to 3 each evaluate the subset, never the whole training part
    assert sum(x is x_eval for x in inputs) == 4
    assert not any(x is splits.x_train for x in inputs)
    # and the last row is the last weights (`fit` leaves them in the model) on that subset
    loss, acc = real(model, x_eval, y_eval, settings.eval_batch_size).tolist()
    assert (result.rows[-1]["train_loss"], result.rows[-1]["train_acc"]) == (loss, acc)


def test_the_subset_changes_the_train_curve_only(tmp_path):
    subset = run(quick_cfg("trainer.epochs=3", "trainer.train_eval_samples=300"), tmp_path / "a")
    whole = run(quick_cfg("trainer.epochs=3", "trainer.train_eval_samples=null"), tmp_path / "b")
    assert subset["samples"]["train_eval"] == 300
    assert whole["samples"]["train_eval"] == whole["samples"]["train"] > 300
    a, b = read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")
    # training never depends on where the train curve is measured: the same validation curve
    assert a["val_loss"].tolist() == b["val_loss"].tolist()
    assert a["train_loss"].tolist() != b["train_loss"].tolist()
    assert subset["test_best"] == whole["test_best"]
