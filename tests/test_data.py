"""Datasets become normalized tensors, split once: held-out test, stratified seeded validation."""

from __future__ import annotations

import numpy as np
import torch

from conftest import compose_cfg, write_idx_dataset
from fitscope.data import _cached_splits, load_arrays, make_splits


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
    load_arrays.cache_clear()
    _cached_splits.cache_clear()
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
