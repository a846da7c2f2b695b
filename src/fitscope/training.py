"""The train stage: the epoch loop over tensors already on the device.

Each epoch trains on every batch of a seeded on-device permutation (the last batch may be
smaller; how a step runs, eager or as a CUDA graph, is `fitscope.steps`), then evaluates
per-sample-mean loss and accuracy on the training and validation parts with the epoch's final
weights (eval mode, so dropout is off). Nothing is read back to the host inside the batch loop:
the epoch's metrics come back in one transfer per epoch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fitscope.data import Splits
from fitscope.diagnostics import (
    DIAGNOSTIC_BATCH,
    activation_of,
    activation_statistics,
    diagnostic_columns,
)
from fitscope.steps import autocast, make_step

EPOCH_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")


class EarlyStopping:
    """Early stopping on validation loss.

    `step(loss)` returns True once `patience` epochs in a row have not lowered the best loss
    by more than `min_delta`.
    """

    def __init__(self, patience: int, min_delta: float = 0.0) -> None:
        self.patience = patience
        self.min_delta = min_delta
        self.best = math.inf
        self.wait = 0

    def step(self, loss: float) -> bool:
        if loss < self.best - self.min_delta:
            self.best = loss
            self.wait = 0
        else:
            self.wait += 1
        return self.wait >= self.patience


def early_stopping_epoch(val_losses: Sequence[float], patience: int, min_delta: float = 0.0) -> int:
    """The (1-based) epoch at which early stopping would stop; the last epoch if it never would."""
    stopper = EarlyStopping(patience, min_delta)
    for epoch, loss in enumerate(val_losses, start=1):
        if stopper.step(loss):
            return epoch
    return len(val_losses)


def best_epoch(val_losses: Sequence[float]) -> int | None:
    """The (1-based) epoch with the lowest finite validation loss; None if there is none."""
    finite = [
        (loss, epoch) for epoch, loss in enumerate(val_losses, start=1) if math.isfinite(loss)
    ]
    return min(finite)[1] if finite else None


@torch.inference_mode()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, precision: str = "fp32"
) -> torch.Tensor:
    """A device tensor [mean cross-entropy per sample, accuracy] of `model` on (x, y); forward
    passes under bfloat16 autocast for `precision=bf16`, the loss in float32."""
    model.eval()
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device)
    for start in range(0, len(x), batch_size):
        with autocast(precision, x.device):
            logits = model(x[start : start + batch_size]).float()
        target = y[start : start + batch_size]
        loss_sum += F.cross_entropy(logits, target, reduction="sum")
        correct += (logits.argmax(dim=1) == target).sum()
    return torch.stack([loss_sum, correct]) / len(x)


def diverged(row: Mapping[str, float], limit: float | None = None) -> bool:
    """True when the epoch's train or val loss is NaN, infinite, or above `limit` (if set)."""
    losses = (row["train_loss"], row["val_loss"])
    return not all(math.isfinite(loss) and (limit is None or loss <= limit) for loss in losses)


def metric_columns(model: nn.Module, trainer_cfg: Mapping[str, Any]) -> list[str]:
    """The `metrics.csv` columns of a run: `EPOCH_COLUMNS`, then the diagnostics' if enabled."""
    if not trainer_cfg.get("diagnostics", False):
        return list(EPOCH_COLUMNS)
    return [*EPOCH_COLUMNS, *diagnostic_columns(model, activation_of(model))]


@dataclass
class FitResult:
    status: str  # "completed" or "diverged"
    rows: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int | None = None
    best_state: dict[str, torch.Tensor] | None = None
    stopped_early: bool = False
    samples_per_s: float = 0.0
    compile: str = "none"  # how the steps ran: none, graph or torch_compile
    setup_seconds: float = 0.0  # building the step: warm-up and graph capture included
    train_seconds: list[float] = field(default_factory=list)  # per epoch, training alone


class _TrainTimer:
    """Times each epoch's training phase without a host sync: CUDA events on CUDA, read after
    the epoch's one sync; the wall clock elsewhere (the CPU runs synchronously)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.device = device

    def start(self) -> None:
        if self.cuda:
            self.begin = torch.cuda.Event(enable_timing=True)
            self.end = torch.cuda.Event(enable_timing=True)
            self.begin.record()
        else:
            self.begin_s = time.perf_counter()

    def stop(self) -> None:
        if self.cuda:
            self.end.record()
        else:
            if self.device.type == "mps":
                torch.mps.synchronize()
            self.seconds_ = time.perf_counter() - self.begin_s

    def seconds(self) -> float:
        """The training phase's seconds (call after the epoch's sync)."""
        return self.begin.elapsed_time(self.end) / 1000 if self.cuda else self.seconds_


def fit(
    model: nn.Module,
    splits: Splits,
    optimizer_cfg: Mapping[str, Any],
    trainer_cfg: Mapping[str, Any],
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    on_steps: Callable[[int, list[float]], None] | None = None,
) -> FitResult:
    """Train `model` for `trainer_cfg["epochs"]` epochs (fewer if early stopping is enabled or
    the run diverges: see `diverged`), keeping the weights of the epoch with the lowest validation
    loss. `on_epoch` gets each epoch's row (`metric_columns`) as soon as it exists; `on_steps`,
    if given, the epoch number and the training loss of each of its steps. When it returns,
    `model` holds the last epoch's weights."""
    device = splits.x_train.device
    setup_start = time.perf_counter()
    step = make_step(model, optimizer_cfg, trainer_cfg, splits.x_train, splits.y_train)
    trained = step.model  # a graph step trains a twin of `model`
    generator = torch.Generator(device=device).manual_seed(trainer_cfg["seed"])
    stopping = trainer_cfg["early_stopping"]
    stopper = EarlyStopping(stopping["patience"], stopping["min_delta"])
    eval_batch = trainer_cfg["eval_batch_size"]
    precision = trainer_cfg.get("precision", "fp32")
    result = FitResult(status="completed", compile=step.mode)
    columns = metric_columns(model, trainer_cfg)
    if step.monitor is not None:
        probe = splits.x_val[:DIAGNOSTIC_BATCH]
        activation = activation_of(model)
    best_loss = math.inf
    loop_seconds = 0.0
    timer = _TrainTimer(device)
    result.setup_seconds = time.perf_counter() - setup_start

    for epoch in range(1, trainer_cfg["epochs"] + 1):
        start = time.perf_counter()
        timer.start()
        permutation = torch.randperm(len(splits.x_train), device=device, generator=generator)
        losses = step.run_epoch(permutation)
        timer.stop()
        parts = [
            evaluate(trained, splits.x_train, splits.y_train, eval_batch, precision),
            evaluate(trained, splits.x_val, splits.y_val, eval_batch, precision),
        ]
        if step.monitor is not None:
            parts += [
                step.monitor.epoch_values(step.steps),
                activation_statistics(trained, probe, activation),
            ]
        if on_steps is not None:
            parts.append(losses)
        metrics = torch.cat(parts).tolist()  # the epoch's one host sync
        if on_steps is not None:
            metrics, step_losses = metrics[: -step.steps], metrics[-step.steps :]
        seconds = time.perf_counter() - start
        loop_seconds += seconds
        result.train_seconds.append(timer.seconds())
        values = [epoch, *metrics[:4], optimizer_cfg["lr"], seconds, *metrics[4:]]
        row = dict(zip(columns, values, strict=True))
        result.rows.append(row)
        if on_steps is not None:
            on_steps(epoch, step_losses)
        if on_epoch is not None:
            on_epoch(row)
        if diverged(row, trainer_cfg.get("divergence_loss")):
            result.status = "diverged"
            break
        if row["val_loss"] < best_loss:
            best_loss = row["val_loss"]
            result.best_epoch = epoch
            result.best_state = {k: v.detach().clone() for k, v in trained.state_dict().items()}
        if stopping["enabled"] and stopper.step(row["val_loss"]):
            result.stopped_early = True
            break

    if trained is not model:
        model.load_state_dict(trained.state_dict())
    result.samples_per_s = len(splits.x_train) * len(result.rows) / max(loop_seconds, 1e-9)
    return result
