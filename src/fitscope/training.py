"""The train stage: the epoch loop over tensors already on the device.

Each epoch trains on every batch of a seeded on-device permutation (the last batch may be
smaller), then evaluates per-sample-mean loss and accuracy on the training and validation parts
with the epoch's final weights (eval mode, so dropout is off). Nothing is read back to the host
inside the batch loop: the four epoch metrics come back in one transfer per epoch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fitscope.data import Splits
from fitscope.diagnostics import (
    DIAGNOSTIC_BATCH,
    GradientMonitor,
    activation_of,
    activation_statistics,
    diagnostic_columns,
)

EPOCH_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")
OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")


def make_optimizer(
    params: Iterable[torch.nn.Parameter], optimizer: Mapping[str, Any]
) -> torch.optim.Optimizer:
    """The torch optimizer an `optimizer` config describes."""
    name = optimizer["name"]
    common = {"lr": optimizer["lr"], "weight_decay": optimizer.get("weight_decay", 0.0)}
    if name == "sgd":
        return torch.optim.SGD(params, **common)
    if name == "momentum":
        return torch.optim.SGD(
            params, momentum=optimizer["momentum"], nesterov=optimizer["nesterov"], **common
        )
    adam_args = {"betas": tuple(optimizer["betas"]), "eps": optimizer["eps"], **common}
    if name == "adam":
        return torch.optim.Adam(params, **adam_args)
    if name == "adamw":
        return torch.optim.AdamW(params, **adam_args)
    raise ValueError(f"unknown optimizer {name!r}; allowed: {', '.join(OPTIMIZERS)}")


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


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
    grad_clip: float | None = None,
    monitor: GradientMonitor | None = None,
    step_losses: torch.Tensor | None = None,
) -> None:
    """One pass over (x, y) in batches of a seeded on-device permutation; no host sync.

    With a `monitor`, every step's gradient norms are recorded (and clipping reuses them); with
    `step_losses` (one slot per step, on the device), every step's training loss."""
    model.train()
    order = torch.randperm(len(x), device=x.device, generator=generator)
    for step, start in enumerate(range(0, len(x), batch_size)):
        batch = order[start : start + batch_size]
        loss = F.cross_entropy(model(x[batch]), y[batch])
        if step_losses is not None:
            step_losses[step] = loss.detach()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if monitor is not None:
            monitor.clip(monitor.step())
        elif grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()


@torch.inference_mode()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> torch.Tensor:
    """A device tensor [mean cross-entropy per sample, accuracy] of `model` on (x, y)."""
    model.eval()
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device)
    for start in range(0, len(x), batch_size):
        logits = model(x[start : start + batch_size])
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
    if given, the epoch number and the training loss of each of its steps."""
    optimizer = make_optimizer(model.parameters(), optimizer_cfg)
    device = splits.x_train.device
    generator = torch.Generator(device=device).manual_seed(trainer_cfg["seed"])
    stopping = trainer_cfg["early_stopping"]
    stopper = EarlyStopping(stopping["patience"], stopping["min_delta"])
    eval_batch = trainer_cfg["eval_batch_size"]
    result = FitResult(status="completed")
    columns = metric_columns(model, trainer_cfg)
    monitor = None
    if trainer_cfg.get("diagnostics", False):
        monitor = GradientMonitor(model, optimizer_cfg.get("grad_clip"))
        probe = splits.x_val[:DIAGNOSTIC_BATCH]
        activation = activation_of(model)
    best_loss = math.inf
    loop_seconds = 0.0
    steps = math.ceil(len(splits.x_train) / trainer_cfg["batch_size"])
    step_losses = torch.zeros(steps, device=device) if on_steps is not None else None

    for epoch in range(1, trainer_cfg["epochs"] + 1):
        start = time.perf_counter()
        train_one_epoch(
            model,
            optimizer,
            splits.x_train,
            splits.y_train,
            trainer_cfg["batch_size"],
            generator,
            optimizer_cfg.get("grad_clip"),
            monitor,
            step_losses,
        )
        parts = [
            evaluate(model, splits.x_train, splits.y_train, eval_batch),
            evaluate(model, splits.x_val, splits.y_val, eval_batch),
        ]
        if monitor is not None:
            parts += [monitor.epoch_values(), activation_statistics(model, probe, activation)]
        if step_losses is not None:
            parts.append(step_losses)
        metrics = torch.cat(parts).tolist()  # the epoch's one host sync
        if step_losses is not None:
            metrics, losses = metrics[:-steps], metrics[-steps:]
        seconds = time.perf_counter() - start
        loop_seconds += seconds
        values = [epoch, *metrics[:4], optimizer.param_groups[0]["lr"], seconds, *metrics[4:]]
        row = dict(zip(columns, values, strict=True))
        result.rows.append(row)
        if on_steps is not None:
            on_steps(epoch, losses)
        if on_epoch is not None:
            on_epoch(row)
        if diverged(row, trainer_cfg.get("divergence_loss")):
            result.status = "diverged"
            break
        if row["val_loss"] < best_loss:
            best_loss = row["val_loss"]
            result.best_epoch = epoch
            result.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if stopping["enabled"] and stopper.step(row["val_loss"]):
            result.stopped_early = True
            break

    result.samples_per_s = len(splits.x_train) * len(result.rows) / max(loop_seconds, 1e-9)
    return result
