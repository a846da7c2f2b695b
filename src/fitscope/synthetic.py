"""Synthetic sweeps: run folders that follow the run-folder contract (`fitscope.rundir`) without
training anything, for the report's tests and benchmark and for trying the report at any size.

Each run's curves come from a small model of how an MLP on MNIST learns: validation loss falls
towards a floor and, for large models, rises again after its minimum (overfitting); training
loss keeps falling; accuracy follows the loss. What each config key does to a run is a `Shape`
chosen by a function of the run's values (`default_shape` by default): deep sigmoid nets stay
at chance with vanishing gradients, a high learning rate diverges, depth and width overfit.

    python -m fitscope.synthetic multirun/synthetic --runs 1000 --epochs 50
"""

from __future__ import annotations

import argparse
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from fitscope.rundir import (
    CONFIG_FILE,
    METRICS_FILE,
    SUMMARY_FILE,
    SWEEP_FILE,
    layer_column,
    rerun_command,
    write_json_atomic,
)

CLASSES = 10
CHANCE_LOSS = math.log(CLASSES)
INPUTS = 784


def base_config() -> dict[str, Any]:
    """The config of a default run (`python src/run.py`), as its config.yaml holds it."""
    return {
        "data": {"name": "mnist5k", "test_fraction": 0.2, "val_fraction": 0.2, "folds": None,
                 "fold": 0, "split_seed": 0},
        "model": {"name": "mlp", "depth": 2, "width": 256, "dropout": 0.0, "init": "auto",
                  "final_activation": False},
        "activation": {"name": "relu"},
        "optimizer": {"name": "adam", "lr": 0.001, "betas": [0.9, 0.999], "eps": 1e-08,
                      "weight_decay": 0.0, "grad_clip": None},
        "trainer": {"epochs": 40, "steps": None, "batch_size": 200, "seed": 0,
                    "diagnostics": True, "early_stopping": {"enabled": False, "patience": 5,
                                                             "min_delta": 0.0},
                    "console": "auto"},
    }  # fmt: skip


@dataclass(frozen=True)
class Shape:
    """How one run learns. Losses in nats/sample."""

    floor: float = 0.2  # the lowest validation loss it reaches
    speed: float = 4.0  # epochs for the loss to fall by a factor e towards the floor
    overfit: float = 0.0  # validation loss gained per epoch after its minimum
    train_floor: float = 0.01  # training loss it tends to
    stuck: bool = False  # stays at chance: loss ln(10), accuracy 10%
    diverge_at: int | None = None  # the epoch whose loss becomes NaN
    noise: float = 0.004  # epoch-to-epoch noise of the validation loss
    vanishing: bool = False  # the first layer's gradients are 1e-4 of the output layer's


def params(depth: int, width: int, inputs: int = INPUTS, classes: int = CLASSES) -> int:
    """An MLP's parameter count: `depth` hidden layers of `width` units."""
    if depth == 0:
        return inputs * classes + classes
    return (inputs + 1) * width + (depth - 1) * (width + 1) * width + (width + 1) * classes


def default_shape(values: Mapping[str, Any]) -> Shape:
    """A run's `Shape` from its dotted config values: the activation sets the floor, capacity
    (depth x width) makes it overfit, deep sigmoid nets are stuck, lr >= 0.1 with Adam diverges
    and so does a deep, wide relu net on one seed in four."""
    activation = values.get("activation.name", "relu")
    depth, width = int(values.get("model.depth", 2)), int(values.get("model.width", 256))
    lr = float(values.get("optimizer.lr", 0.001))
    floor = {"relu": 0.20, "leaky": 0.195, "selu": 0.24, "tanh": 0.26, "sigmoid": 0.32}.get(
        str(activation), 0.25
    )
    capacity = math.log2(max(params(depth, width), 2)) - math.log2(params(1, 16))
    overfit = max(0.0, 0.004 * capacity - 0.004)
    floor += 0.12 / (1 + capacity)  # small models underfit a little
    stuck = activation == "sigmoid" and depth >= 4
    return Shape(
        floor=floor,
        speed=2.0 + 4.0 * (activation in ("sigmoid", "tanh")) + 0.5 * depth,
        overfit=overfit,
        train_floor=max(0.002, 0.3 / (1 + 2 * capacity)),
        stuck=stuck,
        vanishing=stuck,
        diverge_at=3 if lr >= 0.1 or _unlucky(activation, depth, width, values) else None,
    )


def _unlucky(activation: str, depth: int, width: int, values: Mapping[str, Any]) -> bool:
    """A deep, wide relu net that diverges on one seed in four."""
    seed = int(values.get("trainer.seed", 1))
    return activation == "relu" and depth >= 4 and width >= 1024 and seed % 4 == 0


def _accuracy(loss: np.ndarray) -> np.ndarray:
    """Accuracy that follows a cross-entropy loss as MNIST's does: 10% at ln(10), 94% at 0.2."""
    return np.clip(0.1 + 0.9 * np.exp(-1.15 * np.maximum(loss, 0) ** 1.75), 0.0, 1.0)


def curves(shape: Shape, epochs: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Epoch 0 (the untrained net) to `epochs`: train/val loss and accuracy."""
    epoch = np.arange(epochs + 1, dtype=float)
    start = CHANCE_LOSS + 0.05 + 0.02 * rng.standard_normal()
    if shape.stuck:
        val = CHANCE_LOSS + 0.003 * rng.standard_normal(epochs + 1)
        train = CHANCE_LOSS + 0.003 * rng.standard_normal(epochs + 1)
        val_acc = np.full(epochs + 1, 0.1) + 0.004 * rng.standard_normal(epochs + 1)
        train_acc = val_acc.copy()
    else:
        decay = np.exp(-epoch / shape.speed)
        minimum = shape.speed * 3.0
        floor = shape.floor * (1 + 0.03 * rng.standard_normal())
        val = floor + (start - floor) * decay + shape.overfit * np.maximum(0.0, epoch - minimum)
        val += shape.noise * rng.standard_normal(epochs + 1) * (epoch > 0)
        fall = np.exp(-epoch / (0.8 * shape.speed))
        train = shape.train_floor + (start - shape.train_floor) * fall
        val_acc, train_acc = _accuracy(val), _accuracy(train)
    rows = {"train_loss": train, "train_acc": train_acc, "val_loss": val, "val_acc": val_acc}
    if shape.diverge_at is not None and shape.diverge_at <= epochs:
        for name in rows:
            rows[name] = rows[name][: shape.diverge_at + 1].copy()
        rows["train_loss"][-1] = rows["val_loss"][-1] = math.nan
    return rows


def _layer_rows(shape: Shape, depth: int, activation: str, n: int, rng: np.random.Generator):
    """The diagnostics columns of `n` epoch rows for an MLP of `depth` hidden layers."""
    columns: dict[str, np.ndarray] = {}
    layers = [str(i) for i in range(1, depth + 1)] + ["out"]
    for i, layer in enumerate(layers):
        ratio = (1e-4 ** ((depth - i) / max(depth, 1))) if shape.vanishing else 1.0
        columns[layer_column("grad_rms", layer)] = (
            0.01 * ratio * np.exp(-np.arange(n) / 10) * (1 + 0.05 * rng.standard_normal(n))
        )
    for i in range(1, depth + 1):
        columns[layer_column("act_mean", str(i))] = 0.3 + 0.02 * rng.standard_normal(n)
        columns[layer_column("act_std", str(i))] = np.full(n, 0.6 / i**0.2)
        columns[layer_column("signal", str(i))] = np.full(n, 0.5 / i**0.3)
        unit = "saturated" if activation in ("sigmoid", "tanh") else "dead"
        share = 0.7 if shape.stuck else 0.05
        columns[layer_column(unit, str(i))] = np.full(n, share)
    columns["grad_norm_total"] = np.abs(0.5 + 0.1 * rng.standard_normal(n))
    columns["clip_fraction"] = np.zeros(n)
    return columns


def write_run(
    folder: Path,
    values: Mapping[str, Any],
    epochs: int = 50,
    shape: Shape | None = None,
    seed: int = 0,
    diagnostics: bool = True,
) -> Path:
    """One run folder: config.yaml, metrics.csv and summary.json, as fitscope writes them, for a
    run whose config is `base_config()` with the dotted `values` (`{"model.depth": 4}`)."""
    folder.mkdir(parents=True, exist_ok=True)
    config = base_config()
    for dotted, value in values.items():
        node = config
        *sections, leaf = dotted.split(".")
        for section in sections:
            node = node.setdefault(section, {})
        node[leaf] = value
    config["trainer"]["epochs"] = epochs
    shape = shape or default_shape(values)
    rng = np.random.default_rng(seed)
    rows = curves(shape, epochs, rng)
    n = len(rows["val_loss"])
    depth, width = int(config["model"]["depth"]), int(config["model"]["width"])
    activation = str(config["activation"]["name"])
    table = {"epoch": np.arange(n), **rows, "lr": np.full(n, config["optimizer"]["lr"]),
             "seconds": np.full(n, 0.05)}  # fmt: skip
    if diagnostics:
        table.update(_layer_rows(shape, depth, activation, n, rng))
    lines = [",".join(table)]
    for i in range(n):
        lines.append(",".join(_csv(table[c][i]) for c in table))
    (folder / METRICS_FILE).write_text("\n".join(lines) + "\n")
    (folder / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False))
    diverged = math.isnan(rows["val_loss"][-1])
    trained = rows["val_loss"][1:]
    finite = np.where(np.isfinite(trained), trained, np.inf)
    best = int(np.argmin(finite)) + 1 if np.isfinite(finite).any() else None
    overrides = [f"{key}={_text(value)}" for key, value in values.items()]
    choices = {"activation": activation, "optimizer": config["optimizer"]["name"],
               "model": "mlp", "data": config["data"]["name"]}  # fmt: skip
    test = None if best is None else {
        "loss": float(rows["val_loss"][best]) * 1.02,
        "acc": float(rows["val_acc"][best]) - 0.003,
    }  # fmt: skip
    summary = {
        "status": "diverged" if diverged else "completed",
        "error": f"loss became nan at epoch {n - 1}" if diverged else None,
        "overrides": overrides,
        "choices": choices,
        "command": rerun_command(overrides),
        "epochs": epochs,
        "epochs_run": n - 1,
        "best_epoch": best,
        "params": params(depth, width),
        "classes": CLASSES,
        "wall_time_s": 0.05 * n,
        "samples_per_s": 64000.0,
        "seed": int(config["trainer"]["seed"]),
        "test_best": test,
        "test_last": test,
    }
    write_json_atomic(folder / SUMMARY_FILE, summary)
    return folder


def _csv(value: float) -> str:
    return "" if value is None else repr(float(value))


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


ShapeOf = Callable[[Mapping[str, Any]], Shape]


def write_sweep(
    folder: Path,
    grid: Mapping[str, Sequence[Any]],
    epochs: int = 50,
    shape_of: ShapeOf = default_shape,
    seed: int = 0,
    diagnostics: bool = True,
) -> list[Path]:
    """A sweep folder with one run folder per combination of `grid`'s values (`{"activation.name":
    ["relu", "tanh"], "trainer.seed": [0, 1, 2]}`), numbered as Hydra numbers jobs, and a
    multirun.yaml. Each run's noise is seeded by `seed` and its job number."""
    folder.mkdir(parents=True, exist_ok=True)
    keys = list(grid)
    runs = []
    for job, combination in enumerate(itertools.product(*(grid[k] for k in keys))):
        values = dict(zip(keys, combination, strict=True))
        runs.append(
            write_run(
                folder / str(job),
                values,
                epochs,
                shape_of(values),
                seed=seed * 1_000_003 + job,
                diagnostics=diagnostics,
            )
        )
    sweep = {"hydra": {"sweep": {"dir": str(folder)}}, **base_config()}
    (folder / SWEEP_FILE).write_text(yaml.safe_dump(sweep, sort_keys=False))
    return runs


def grid_of_size(runs: int) -> dict[str, list[Any]]:
    """A study grid of about `runs` runs: five activations x depths x widths x seeds."""
    grid: dict[str, list[Any]] = {
        "activation.name": ["relu", "leaky", "selu", "tanh", "sigmoid"],
        "model.depth": [1, 2, 4],
        "model.width": [32, 128],
        "trainer.seed": [0, 1],
    }
    widths = [16, 32, 64, 128, 256, 512, 1024, 2048]
    seeds = 2
    while math.prod(len(v) for v in grid.values()) < runs:
        if len(grid["model.width"]) < len(widths) and seeds > 3:
            grid["model.width"] = widths[: len(grid["model.width"]) + 1]
        else:
            seeds += 1
            grid["trainer.seed"] = list(range(seeds))
    return grid


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fitscope.synthetic",
        description="Write a synthetic sweep of run folders (no training) for trying reports.",
    )
    parser.add_argument("folder", type=Path)
    parser.add_argument("--runs", type=int, default=100, help="about this many runs")
    parser.add_argument("--epochs", type=int, default=50)
    args = parser.parse_args(argv)
    written = write_sweep(args.folder, grid_of_size(args.runs), args.epochs)
    print(f"{len(written)} runs in {args.folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
