"""The train stage: the epoch loop over tensors already on the device.

Epoch 0 is the network as initialized (`initial_row`): its losses, accuracies and diagnostics
before any step, so that what training changed can be told from what the init gave.
Each epoch trains on every batch of a seeded on-device permutation (the last batch may be
smaller; how a step runs, eager or as a CUDA graph, is `make_step`), then evaluates
per-sample-mean loss and accuracy on the training and validation parts with the epoch's final
weights (eval mode, so dropout is off): the train curve on the fixed subset of the training part
that `trainer.train_eval_samples` asks for (`Splits.train_eval`). Nothing is read back to the
host inside the batch loop: the epoch's measures come back in one transfer per epoch.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fitscope.rundir import EPOCH_COLUMNS
from fitscope.stopping import EarlyStopping
from fitscope.train.data import Splits
from fitscope.train.diagnostics import (
    DIAGNOSTIC_BATCH,
    GradientMonitor,
    activation_of,
    activation_statistics,
    diagnostic_columns,
    initial_gradients,
)
from fitscope.train.graph import graph_step
from fitscope.train.settings import TrainerSettings
from fitscope.train.steps import EagerStep, Step, autocast

log = logging.getLogger("fitscope")


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


def metric_columns(model: nn.Module, diagnostics: bool) -> list[str]:
    """The `metrics.csv` columns of a run: `EPOCH_COLUMNS`, then the diagnostics' if enabled."""
    if not diagnostics:
        return list(EPOCH_COLUMNS)
    return [*EPOCH_COLUMNS, *diagnostic_columns(model, activation_of(model))]


def make_step(
    model: nn.Module,
    optimizer_cfg: Mapping[str, Any],
    settings: TrainerSettings,
    x: torch.Tensor,
    y: torch.Tensor,
) -> Step:
    """The step `settings.compile` asks for. A graph capture that fails (an optimizer or a
    PyTorch build that cannot be captured) is logged and the run trains eagerly when `auto`
    chose the graph; with `trainer.compile=graph` it is an error."""
    if settings.compile == "graph":
        try:
            return graph_step(model, optimizer_cfg, settings, x, y, x.device.type == "cuda")
        except RuntimeError as error:
            if not settings.graph_fallback:
                raise
            reason = " ".join(str(error).split())[:300]
            log.warning(f"trainer.compile=auto: CUDA graph capture failed ({reason}); eager steps")
            return EagerStep(model, optimizer_cfg, settings, x, y)
    return EagerStep(model, optimizer_cfg, settings, x, y, settings.compile == "torch_compile")


@dataclass
class FitResult:
    status: str  # "completed" or "diverged"
    rows: list[dict[str, float]] = field(default_factory=list)  # trained epochs, from epoch 1
    initial: dict[str, float] | None = None  # epoch 0: the network as initialized
    best_epoch: int | None = None
    best_state: dict[str, torch.Tensor] | None = None
    stopped_early: bool = False
    samples_per_s: float = 0.0
    compile: str = "none"  # how the steps ran: none, graph or torch_compile
    setup_seconds: float = 0.0  # building the step: warm-up and graph capture included
    train_seconds: list[float] = field(default_factory=list)  # per epoch, training alone


class Progress:
    """What a run's epochs decide as they come in: divergence, the best epoch (its weights
    kept) and early stopping, into `result`."""

    def __init__(self, settings: TrainerSettings, result: FitResult) -> None:
        self.settings, self.result = settings, result
        self.best_loss = math.inf
        stopping = settings.early_stopping
        self.stopper = EarlyStopping(stopping.patience, stopping.min_delta)

    def ends_with(self, row: Mapping[str, float], model: nn.Module) -> bool:
        """Record trained epoch `row` of `model` (its weights after that epoch); True when the
        run ends there: it diverged, or early stopping stops it."""
        if diverged(row, self.settings.divergence_loss):
            self.result.status = "diverged"
            return True
        if row["val_loss"] < self.best_loss:
            self.best_loss, self.result.best_epoch = row["val_loss"], int(row["epoch"])
            self.result.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if self.settings.early_stopping.enabled and self.stopper.step(row["val_loss"]):
            self.result.stopped_early = True
            return True
        return False


class TrainTimer:
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


def epoch_measures(
    model: nn.Module,
    splits: Splits,
    settings: TrainerSettings,
    monitor: GradientMonitor | None,
    steps: int,
    losses: torch.Tensor | None,
) -> dict[str, torch.Tensor]:
    """The epoch's device tensors by name: `train` and `val` [loss, accuracy] of `model`; with
    the gradient `monitor` of the epoch's `steps` (diagnostics on), its `gradients` and the
    `activations`; the per-step `step_losses` when given."""
    batch, precision = settings.eval_batch_size, settings.precision
    measures = {
        "train": evaluate(model, *splits.train_eval, batch, precision),
        "val": evaluate(model, splits.x_val, splits.y_val, batch, precision),
    }
    if monitor is not None:
        probe = splits.x_val[:DIAGNOSTIC_BATCH]
        measures["gradients"] = monitor.epoch_values(steps)
        measures["activations"] = activation_statistics(model, probe, activation_of(model))
    if losses is not None:
        measures["step_losses"] = losses
    return measures


def to_host(measures: Mapping[str, torch.Tensor]) -> dict[str, list[float]]:
    """Device tensors back on the host in one transfer (the epoch's one sync), by name."""
    values = torch.cat([t.reshape(-1) for t in measures.values()]).tolist()
    host, start = {}, 0
    for name, tensor in measures.items():
        host[name] = values[start : start + tensor.numel()]
        start += tensor.numel()
    return host


def epoch_row(
    columns: list[str], epoch: int, host: Mapping[str, list[float]], lr: float, seconds: float
) -> dict[str, float]:
    """The epoch's `metrics.csv` row."""
    (train_loss, train_acc), (val_loss, val_acc) = host["train"], host["val"]
    diagnostics = [*host.get("gradients", []), *host.get("activations", [])]
    values = [epoch, train_loss, train_acc, val_loss, val_acc, lr, seconds, *diagnostics]
    return dict(zip(columns, values, strict=True))


def initial_row(
    model: nn.Module,
    splits: Splits,
    optimizer_cfg: Mapping[str, Any],
    settings: TrainerSettings,
    columns: list[str],
) -> dict[str, float]:
    """Epoch 0's `metrics.csv` row: `model` as it is, before any step. Its gradient columns
    come from one pass over the first `DIAGNOSTIC_BATCH` training samples (no step taken, no
    random number drawn, so training is what it would be without it)."""
    start = time.perf_counter()
    batch, precision = settings.eval_batch_size, settings.precision
    measures = {
        "train": evaluate(model, *splits.train_eval, batch, precision),
        "val": evaluate(model, splits.x_val, splits.y_val, batch, precision),
    }
    if settings.diagnostics:
        x, y = splits.x_train[:DIAGNOSTIC_BATCH], splits.y_train[:DIAGNOSTIC_BATCH]
        measures["gradients"] = initial_gradients(model, x, y, optimizer_cfg.get("grad_clip"))
        probe = splits.x_val[:DIAGNOSTIC_BATCH]
        measures["activations"] = activation_statistics(model, probe, activation_of(model))
    host = to_host(measures)
    return epoch_row(columns, 0, host, optimizer_cfg["lr"], time.perf_counter() - start)


def fit(
    model: nn.Module,
    splits: Splits,
    optimizer_cfg: Mapping[str, Any],
    settings: TrainerSettings,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    on_steps: Callable[[int, list[float]], None] | None = None,
) -> FitResult:
    """Train `model` for `settings.epochs` epochs (fewer if early stopping is enabled or the run
    diverges: see `diverged`), keeping the weights of the epoch with the lowest validation
    loss. `on_epoch` gets each epoch's row (`metric_columns`) as soon as it exists, epoch 0
    (`initial_row`) first; the best epoch and early stopping see the trained epochs; `on_steps`,
    if given, the epoch number and the training loss of each of its steps. When it returns,
    `model` holds the last epoch's weights."""
    device = splits.x_train.device
    columns = metric_columns(model, settings.diagnostics)
    initial = initial_row(model, splits, optimizer_cfg, settings, columns)
    if on_epoch is not None:
        on_epoch(initial)
    setup_start = time.perf_counter()
    step = make_step(model, optimizer_cfg, settings, splits.x_train, splits.y_train)
    trained = step.model  # a graph step trains a twin of `model`
    generator = torch.Generator(device=device).manual_seed(settings.seed)
    result = FitResult(status="completed", initial=initial, compile=step.mode)
    progress = Progress(settings, result)
    loop_seconds, timer = 0.0, TrainTimer(device)
    result.setup_seconds = time.perf_counter() - setup_start

    for epoch in range(1, settings.epochs + 1):
        start = time.perf_counter()
        timer.start()
        permutation = torch.randperm(len(splits.x_train), device=device, generator=generator)
        losses = step.run_epoch(permutation)
        timer.stop()
        step_losses = losses if on_steps is not None else None
        measures = epoch_measures(trained, splits, settings, step.monitor, step.steps, step_losses)
        host = to_host(measures)
        seconds = time.perf_counter() - start
        loop_seconds += seconds
        result.train_seconds.append(timer.seconds())
        row = epoch_row(columns, epoch, host, optimizer_cfg["lr"], seconds)
        result.rows.append(row)
        if on_steps is not None:
            on_steps(epoch, host["step_losses"])
        if on_epoch is not None:
            on_epoch(row)
        if progress.ends_with(row, trained):
            break

    if trained is not model:
        model.load_state_dict(trained.state_dict())
    result.samples_per_s = len(splits.x_train) * len(result.rows) / max(loop_seconds, 1e-9)
    return result
