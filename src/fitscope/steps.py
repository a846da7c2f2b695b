"""The train step: eager, captured in a CUDA graph, or compiled by torch.compile.

`trainer.compile` picks how each optimizer step runs (`resolve_compile`):

- `none`: eager PyTorch, one kernel launch per operation. The reference the others must match.
- `graph` (what `auto` picks on CUDA): the whole step, from gathering the batch to the optimizer's
  update, is recorded once as a CUDA graph and replayed for every batch, so a step costs one
  launch instead of a hundred; for small models the launches, not the arithmetic, are the limit.
  What capture needs, and how it is met here:
  - one shape for every step: the epoch's permutation goes into a (steps, batch_size) table on
    the device and the last, ragged batch is padded with rows of weight 0; the loss is the
    weighted mean, which equals the ragged batch's mean, gradients included;
  - fixed addresses: batch table, step counter, per-step losses, gradient-norm sums and the
    learning rate (a device tensor, so a new lr needs no new graph) are made before capture;
  - optimizer state made before capture: a few warm-up steps create it (on a side stream, as
    PyTorch's CUDA-graph docs do), then weights and state are restored in place, so the warm-up
    leaves no trace in the run;
  - optimizers that may be captured: SGD `fused=True`, Adam/AdamW `fused=True, capturable=True`;
    weight decay, gradient-norm diagnostics and clipping run inside the graph.
  Where CUDA graphs do not exist the same step runs uncaptured: that is how the tests check its
  logic on the CPU. The config refuses `graph` off CUDA, where it would only be slower.
- `torch_compile`: the model's forward and backward compiled by `torch.compile`; the optimizer
  step stays eager. Each new shape pays a compilation (tens of seconds on a small CPU).

A process keeps the last `GRAPH_CACHE_SIZE` graph steps (`GRAPH_CACHE`): a run whose model,
optimizer settings (all but the lr), batch size, precision and data match an earlier run of the
same process reuses its captured graph after loading its own initial weights; a sweep over
seeds or learning rates captures once.

`trainer.precision=bf16` runs forward passes under bfloat16 autocast (weights, gradients and
optimizer state stay float32; the loss is computed in float32). `trainer.tf32` lets CUDA
float32 matrix products use TF32 tensor cores.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
from collections import OrderedDict
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fitscope.diagnostics import GradientMonitor

COMPILE_MODES = ("auto", "graph", "torch_compile", "none")
PRECISIONS = ("fp32", "bf16")
WARMUP_STEPS = 3
GRAPH_CACHE_SIZE = 4
OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
# Extra optimizer arguments that make its step capturable (with a tensor lr).
GRAPH_OPTIMIZER_ARGS: dict[str, dict[str, bool]] = {
    "sgd": {"fused": True},
    "momentum": {"fused": True},
    "adam": {"fused": True, "capturable": True},
    "adamw": {"fused": True, "capturable": True},
}

log = logging.getLogger("fitscope")


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


def resolve_compile(mode: str, device: torch.device) -> str:
    """The step `trainer.compile=mode` means on `device`: `auto` is graph on CUDA, else none."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"trainer.compile={mode}: allowed: {', '.join(COMPILE_MODES)}")
    if mode == "auto":
        return "graph" if device.type == "cuda" else "none"
    return mode


def autocast(precision: str, device: torch.device, cache_enabled: bool = True):
    """bfloat16 autocast for `precision=bf16`, a no-op context for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=cache_enabled)


def set_tf32(device: torch.device, enabled: bool) -> None:
    """Let CUDA float32 matrix products (and cuDNN) use TF32 tensor cores, or forbid it."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled


class _Step:
    """What every kind of step shares: the optimizer, diagnostics, clipping, precision."""

    mode = "none"

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        trainer_cfg: Mapping[str, Any],
        grad_clip: float | None,
        x: torch.Tensor,
        y: torch.Tensor,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.x, self.y = x, y
        self.device = x.device
        self.batch_size = trainer_cfg["batch_size"]
        self.steps = math.ceil(len(x) / self.batch_size)
        self.precision = trainer_cfg.get("precision", "fp32")
        self.grad_clip = grad_clip
        self.monitor = (
            GradientMonitor(model, grad_clip) if trainer_cfg.get("diagnostics", False) else None
        )
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.losses = torch.zeros(self.steps, device=self.device)

    def _update(self, loss: torch.Tensor) -> None:
        """Backward, gradient norms and clipping, optimizer step."""
        loss.backward()
        if self.monitor is not None:
            self.monitor.clip(self.monitor.step())
        elif self.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.optimizer.step()

    def run_epoch(self, permutation: torch.Tensor) -> torch.Tensor:
        """Train on every batch of `permutation` (indices into the training part); returns the
        device tensor of the epoch's per-step training losses. No host sync."""
        raise NotImplementedError


class EagerStep(_Step):
    """The plain step: slice the permutation, gather the batch, forward, backward, update.
    With `compiled=True`, the forward (and so the backward) goes through `torch.compile`."""

    def __init__(
        self,
        model: nn.Module,
        optimizer_cfg: Mapping[str, Any],
        trainer_cfg: Mapping[str, Any],
        x: torch.Tensor,
        y: torch.Tensor,
        compiled: bool = False,
    ) -> None:
        optimizer = make_optimizer(model.parameters(), optimizer_cfg)
        super().__init__(model, optimizer, trainer_cfg, optimizer_cfg.get("grad_clip"), x, y)
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
            self._update(loss)
        return self.losses


class GraphStep(_Step):
    """The whole step recorded as one CUDA graph (see the module docstring); with
    `capture=False` the same step runs eagerly, batch by batch."""

    mode = "graph"

    def __init__(
        self,
        model: nn.Module,
        optimizer_cfg: Mapping[str, Any],
        trainer_cfg: Mapping[str, Any],
        x: torch.Tensor,
        y: torch.Tensor,
        capture: bool,
    ) -> None:
        device = x.device
        self.lr = torch.tensor(float(optimizer_cfg["lr"]), device=device)
        optimizer = make_optimizer(
            model.parameters(),
            {**optimizer_cfg, "lr": self.lr},
            **GRAPH_OPTIMIZER_ARGS[optimizer_cfg["name"]],
        )
        super().__init__(model, optimizer, trainer_cfg, optimizer_cfg.get("grad_clip"), x, y)
        n, batch = len(x), self.batch_size
        self.order = torch.zeros(self.steps, batch, dtype=torch.long, device=device)
        weight = torch.zeros(self.steps * batch, device=device)
        weight[:n] = 1.0
        weight = weight.view(self.steps, batch)
        self.weight = weight / weight.sum(dim=1, keepdim=True)  # each step's mean, pads at 0
        self.index = torch.zeros(1, dtype=torch.long, device=device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self._prepare(capture)

    def _step(self) -> None:
        rows = self.order.index_select(0, self.index).view(-1)
        weight = self.weight.index_select(0, self.index).view(-1)
        with autocast(self.precision, self.device, cache_enabled=False):
            logits = self.model(self.x.index_select(0, rows))
        per_sample = F.cross_entropy(logits.float(), self.y.index_select(0, rows), reduction="none")
        loss = (per_sample * weight).sum()
        self._update(loss)
        self.losses.index_copy_(0, self.index, loss.detach().view(1))
        self.index += 1

    def _prepare(self, capture: bool) -> None:
        """Warm up (creating the optimizer state), capture if asked, restore the weights."""
        self.model.train()
        initial = [t.detach().clone() for t in self._weights()]
        side = torch.cuda.Stream(self.device) if capture else None
        if side is not None:
            side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side) if side is not None else contextlib.nullcontext():
            for _ in range(WARMUP_STEPS):
                self.index.zero_()
                self.optimizer.zero_grad(set_to_none=True)
                self._step()
        if side is not None:
            torch.cuda.current_stream(self.device).wait_stream(side)
            self.index.zero_()
            self.optimizer.zero_grad(set_to_none=True)  # backward allocates grads in the pool
            graph = torch.cuda.CUDAGraph()
            # captured on the warm-up's stream: handles and workspaces made lazily per stream
            # (cuBLAS, cuBLASLt) already exist, none is created mid-capture
            with torch.cuda.graph(graph, stream=side):
                self._step()
            self.graph = graph
        self.load(initial, float(self.lr))

    def _weights(self) -> list[torch.Tensor]:
        return [*self.model.parameters(), *self.model.buffers()]

    @torch.no_grad()
    def load(self, weights: Sequence[torch.Tensor], lr: float) -> None:
        """Start a run: these initial weights, fresh optimizer state, this learning rate.
        Everything is written in place, so a captured graph stays valid."""
        for target, source in zip(self._weights(), weights, strict=True):
            target.copy_(source)
        for state in self.optimizer.state.values():
            for value in state.values():
                if torch.is_tensor(value):
                    value.zero_()  # Adam's step and moments, SGD's momentum buffer
        if self.monitor is not None:
            self.monitor.sums.zero_()
        self.losses.zero_()
        self.index.zero_()
        self.lr.fill_(lr)

    def run_epoch(self, permutation: torch.Tensor) -> torch.Tensor:
        self.model.train()
        self.order.view(-1)[: len(permutation)].copy_(permutation)
        self.index.zero_()
        for _ in range(self.steps):
            if self.graph is not None:
                self.graph.replay()
            else:
                self.optimizer.zero_grad(set_to_none=True)
                self._step()
        return self.losses


# Graph steps of this process, most recently used last.
GRAPH_CACHE: OrderedDict[Hashable, GraphStep] = OrderedDict()


def _graph_key(
    model: nn.Module,
    optimizer_cfg: Mapping[str, Any],
    trainer_cfg: Mapping[str, Any],
    x: torch.Tensor,
    y: torch.Tensor,
    capture: bool,
) -> Hashable:
    """What a captured graph depends on: every module (its repr holds its settings) and
    parameter shape, every optimizer setting but the lr, the step's settings, the math modes
    read when kernels are launched (TF32, deterministic algorithms), the data tensors."""
    layers = tuple((repr(m), tuple(p.shape for p in m.parameters())) for m in model.children())
    optimizer = tuple(sorted((k, str(v)) for k, v in optimizer_cfg.items() if k != "lr"))
    step = tuple(str(trainer_cfg.get(k)) for k in ("batch_size", "precision", "diagnostics"))
    math_modes = (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.are_deterministic_algorithms_enabled(),
    )
    data = (x.data_ptr(), tuple(x.shape), y.data_ptr(), str(x.device))
    return layers, optimizer, step, math_modes, data, capture


def graph_step(
    model: nn.Module,
    optimizer_cfg: Mapping[str, Any],
    trainer_cfg: Mapping[str, Any],
    x: torch.Tensor,
    y: torch.Tensor,
    capture: bool,
) -> GraphStep:
    """A graph step training a twin of `model` (same weights; copy them back when done), from
    `GRAPH_CACHE` when one of the same key exists, else newly warmed up and captured."""
    key = _graph_key(model, optimizer_cfg, trainer_cfg, x, y, capture)
    step = GRAPH_CACHE.pop(key, None)
    if step is None:
        step = GraphStep(copy.deepcopy(model), optimizer_cfg, trainer_cfg, x, y, capture)
    else:
        step.load([*model.parameters(), *model.buffers()], float(optimizer_cfg["lr"]))
    GRAPH_CACHE[key] = step
    while len(GRAPH_CACHE) > GRAPH_CACHE_SIZE:
        GRAPH_CACHE.popitem(last=False)
    return step


def make_step(
    model: nn.Module,
    optimizer_cfg: Mapping[str, Any],
    trainer_cfg: Mapping[str, Any],
    x: torch.Tensor,
    y: torch.Tensor,
) -> _Step:
    """The step `trainer.compile` asks for. With `auto`, a graph capture that fails (an
    optimizer or a PyTorch build that cannot be captured) is logged and the run trains eagerly;
    with `graph` it is an error."""
    requested = trainer_cfg.get("compile", "auto")
    mode = resolve_compile(requested, x.device)
    if mode == "graph":
        capture = x.device.type == "cuda"
        try:
            return graph_step(model, optimizer_cfg, trainer_cfg, x, y, capture)
        except RuntimeError as error:
            if requested == "graph":
                raise
            reason = " ".join(str(error).split())[:300]
            log.warning(f"trainer.compile=auto: CUDA graph capture failed ({reason}); eager steps")
            mode = "none"
    return EagerStep(model, optimizer_cfg, trainer_cfg, x, y, compiled=mode == "torch_compile")
