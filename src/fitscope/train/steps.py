"""The train step: what every way of running an optimizer step shares, and the eager step.

`trainer.compile` picks how each optimizer step runs (`TrainerSettings.compile`):

- `none`: eager PyTorch, one kernel launch per operation (`EagerStep`). The reference the
  others must match.
- `graph` (what `auto` picks on CUDA): the whole step recorded once as a CUDA graph and
  replayed for every batch (`fitscope.train.graph`).
- `torch_compile`: the model's forward and backward compiled by `torch.compile`; the optimizer
  step stays eager. Each new shape pays a compilation (tens of seconds on a small CPU).

`trainer.precision=bf16` runs forward passes under bfloat16 autocast (weights, gradients and
optimizer state stay float32; the loss is computed in float32). `trainer.tf32` lets CUDA
float32 matrix products use TF32 tensor cores.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fitscope.config import OPTIMIZERS
from fitscope.train.diagnostics import GradientMonitor, measure_stride
from fitscope.train.settings import TrainerSettings


def make_optimizer(
    params: Any, optimizer: Mapping[str, Any], **extra: Any
) -> torch.optim.Optimizer:
    """The torch optimizer an `optimizer` config describes (`extra`: more torch arguments)."""
    name = optimizer["name"]
    common = {"lr": optimizer["lr"], "weight_decay": optimizer.get("weight_decay", 0.0), **extra}
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


def autocast(precision: str, device: torch.device, cache_enabled: bool = True):
    """bfloat16 autocast for `precision=bf16`, a no-op context for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=cache_enabled)


def set_math_modes(settings: TrainerSettings) -> None:
    """Deterministic algorithms (`trainer.deterministic`), TF32 (`trainer.tf32`, CUDA only) and
    denormals flushed to zero (`trainer.flush_denormal`, the CPU's float arithmetic) as the
    settings ask, process-wide."""
    device = settings.device
    torch.set_flush_denormal(settings.flush_denormal)
    if settings.deterministic and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(settings.deterministic)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = settings.tf32
        torch.backends.cudnn.allow_tf32 = settings.tf32


@contextlib.contextmanager
def math_modes(settings: TrainerSettings) -> Iterator[None]:
    """`set_math_modes` for the run inside; then denormals are no longer flushed, as in any
    Python process, so that what the process computes next (the end-of-sweep report's numpy
    arithmetic, which the CPU's flush mode changes too) does not depend on a run before it."""
    set_math_modes(settings)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


class Step:
    """What every kind of step shares: the optimizer, diagnostics, clipping, precision."""

    mode = "none"
    measures_every_step = False  # gradient diagnostics on every step, or a sample of them

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        settings: TrainerSettings,
        grad_clip: float | None,
        x: torch.Tensor,
        y: torch.Tensor,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.x, self.y = x, y
        self.device = x.device
        self.batch_size = settings.batch_size
        self.steps = math.ceil(len(x) / self.batch_size)
        self.precision = settings.precision
        self.grad_clip = grad_clip
        stride = measure_stride(self.steps, self.measures_every_step)
        self.monitor = (
            GradientMonitor(model, grad_clip, self.steps, stride) if settings.diagnostics else None
        )
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.losses = torch.zeros(self.steps, device=self.device)

    def _update(self, loss: torch.Tensor, step: int | torch.Tensor) -> None:
        """Backward, gradient norms (recorded as the epoch's step `step`) and clipping,
        optimizer step."""
        loss.backward()
        if self.monitor is not None:
            self.monitor.clip(self.monitor.step(step))
        elif self.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.optimizer.step()

    def run_epoch(self, permutation: torch.Tensor) -> torch.Tensor:
        """Train on every batch of `permutation` (indices into the training part); returns the
        device tensor of the epoch's per-step training losses. No host sync."""
        raise NotImplementedError


class EagerStep(Step):
    """The plain step: slice the permutation, gather the batch, forward, backward, update.
    With `compiled=True`, the forward (and so the backward) goes through `torch.compile`."""

    def __init__(
        self,
        model: nn.Module,
        optimizer_cfg: Mapping[str, Any],
        settings: TrainerSettings,
        x: torch.Tensor,
        y: torch.Tensor,
        compiled: bool = False,
    ) -> None:
        optimizer = make_optimizer(model.parameters(), optimizer_cfg)
        super().__init__(model, optimizer, settings, optimizer_cfg.get("grad_clip"), x, y)
        self.mode = "torch_compile" if compiled else "none"
        self.forward = torch.compile(model) if compiled else model

    def run_epoch(self, permutation: torch.Tensor) -> torch.Tensor:
        self.model.train()
        for step, start in enumerate(range(0, len(permutation), self.batch_size)):
            rows = permutation[start : start + self.batch_size]
            with autocast(self.precision, self.device):
                logits = self.forward(self.x.index_select(0, rows))
            loss = F.cross_entropy(logits.float(), self.y.index_select(0, rows))
            self.losses[step] = loss.detach()
            self.optimizer.zero_grad(set_to_none=True)
            self._update(loss, step)
        return self.losses
