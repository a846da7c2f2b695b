"""The CUDA-graph train step (`trainer.compile=graph`, what `auto` picks on CUDA).

The whole step, from gathering the batch to the optimizer's update, is recorded once as a CUDA
graph and replayed for every batch, so a step costs one launch instead of a hundred; for small
models the launches, not the arithmetic, are the limit. What capture needs, and how it is met:

- one shape for every step: the epoch's permutation goes into a (steps, batch_size) table on
  the device and the last, ragged batch is padded with rows of weight 0; the loss is the
  weighted mean, which equals the ragged batch's mean, gradients included;
- fixed addresses: batch table, step counter, per-step losses, the gradient-norm table and the
  learning rate (a device tensor, so a new lr needs no new graph) are made before capture;
- optimizer state made before capture: a few warm-up steps create it (on a side stream, as
  PyTorch's CUDA-graph docs do), then weights and state are restored in place, so the warm-up
  leaves no trace in the run;
- optimizers that may be captured: SGD `fused=True`, Adam/AdamW `fused=True, capturable=True`;
  weight decay, gradient-norm diagnostics and clipping run inside the graph.

Where CUDA graphs do not exist the same step runs uncaptured: that is how the tests check its
logic on the CPU. The settings refuse `graph` off CUDA, where it would only be slower.

A process keeps the last `GRAPH_CACHE_SIZE` graph steps (`GRAPH_CACHE`): a run whose model,
optimizer settings (all but the lr), batch size, precision and data match an earlier run of the
same process reuses its captured graph after loading its own initial weights; a sweep over
seeds or learning rates captures once.

Capture streams. cuBLAS keeps one workspace (tens of MiB) per stream it has run on, and a
captured graph keeps using the workspace of the stream it was captured on. Some PyTorch
releases never free those workspaces, so a fresh stream per graph (PyTorch hands out 32 in
turn) held up to 32 of them, about 2 GiB on an H100; others free a stream's workspaces when a
graph captured on it is destroyed, so one stream shared by every graph would pull the workspace
from under the graphs still cached. Hence one capture stream per cache slot: a cached graph
never shares its stream with another live one, an evicted graph is destroyed at once
(`GraphStep.release`, not whenever the garbage collector gets to it), and at most
`GRAPH_CACHE_SIZE` workspaces are held, whichever the release.
"""

from __future__ import annotations

import contextlib
import copy
from collections import OrderedDict
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fitscope.train.settings import TrainerSettings
from fitscope.train.steps import Step, autocast, make_optimizer

WARMUP_STEPS = 3
GRAPH_CACHE_SIZE = 4
# Extra optimizer arguments that make its step capturable (with a tensor lr).
GRAPH_OPTIMIZER_ARGS: dict[str, dict[str, bool]] = {
    "sgd": {"fused": True},
    "momentum": {"fused": True},
    "adam": {"fused": True, "capturable": True},
    "adamw": {"fused": True, "capturable": True},
}


class GraphStep(Step):
    """The whole step recorded as one CUDA graph on `stream` (see the module docstring); with
    no stream the same step runs eagerly, batch by batch."""

    mode = "graph"
    measures_every_step = True  # recorded once in the graph: the norms cost next to nothing

    def __init__(
        self,
        model: nn.Module,
        optimizer_cfg: Mapping[str, Any],
        settings: TrainerSettings,
        x: torch.Tensor,
        y: torch.Tensor,
        stream: torch.cuda.Stream | None,
    ) -> None:
        device = x.device
        self.lr = torch.tensor(float(optimizer_cfg["lr"]), device=device)
        optimizer = make_optimizer(
            model.parameters(),
            {**optimizer_cfg, "lr": self.lr},
            **GRAPH_OPTIMIZER_ARGS[optimizer_cfg["name"]],
        )
        super().__init__(model, optimizer, settings, optimizer_cfg.get("grad_clip"), x, y)
        n, batch = len(x), self.batch_size
        self.order = torch.zeros(self.steps, batch, dtype=torch.long, device=device)
        weight = torch.zeros(self.steps * batch, device=device)
        weight[:n] = 1.0
        weight = weight.view(self.steps, batch)
        self.weight = weight / weight.sum(dim=1, keepdim=True)  # each step's mean, pads at 0
        self.index = torch.zeros(1, dtype=torch.long, device=device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.stream = stream
        self._prepare()

    def _step(self) -> None:
        rows = self.order.index_select(0, self.index).view(-1)
        weight = self.weight.index_select(0, self.index).view(-1)
        with autocast(self.precision, self.device, cache_enabled=False):
            logits = self.model(self.x.index_select(0, rows))
        per_sample = F.cross_entropy(logits.float(), self.y.index_select(0, rows), reduction="none")
        loss = (per_sample * weight).sum()
        self._update(loss, self.index)
        self.losses.index_copy_(0, self.index, loss.detach().view(1))
        self.index += 1

    def _prepare(self) -> None:
        """Warm up (creating the optimizer state), capture if there is a capture stream,
        restore the weights."""
        self.model.train()
        initial = [t.detach().clone() for t in self._weights()]
        side = self.stream
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

    def release(self) -> None:
        """Destroy the captured graph now: its memory pool goes back and, on PyTorch releases
        that do so, its stream's cuBLAS workspace is freed before another graph is captured on
        that stream."""
        if self.graph is not None:
            self.graph.reset()
            self.graph = None

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
            self.monitor.reset()
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


class GraphCache(OrderedDict):
    """Graph steps of this process, most recently used last. Whatever leaves it (eviction,
    `clear`) is released at once."""

    def popitem(self, last: bool = True) -> tuple[Hashable, GraphStep]:
        key, step = super().popitem(last=last)
        step.release()
        return key, step

    def clear(self) -> None:
        for step in self.values():
            step.release()
        super().clear()


GRAPH_CACHE: GraphCache = GraphCache()
# One capture stream per cache slot and device, made once (see the module docstring).
_CAPTURE_STREAMS: dict[torch.device, list[torch.cuda.Stream]] = {}


def capture_stream(device: torch.device) -> torch.cuda.Stream:
    """A capture stream of `device` that no cached graph step uses."""
    if device not in _CAPTURE_STREAMS:
        # consecutive streams of PyTorch's pool (32 per device), so all distinct
        _CAPTURE_STREAMS[device] = [torch.cuda.Stream(device) for _ in range(GRAPH_CACHE_SIZE)]
    used = {step.stream for step in GRAPH_CACHE.values() if step.stream is not None}
    return next(s for s in _CAPTURE_STREAMS[device] if s not in used)


def _graph_key(
    model: nn.Module,
    optimizer_cfg: Mapping[str, Any],
    settings: TrainerSettings,
    x: torch.Tensor,
    y: torch.Tensor,
    capture: bool,
) -> Hashable:
    """What a captured graph depends on: every module (its repr holds its settings) and
    parameter shape, every optimizer setting but the lr, the step's settings, the math modes
    read when kernels are launched (TF32, deterministic algorithms), the data tensors."""
    layers = tuple((repr(m), tuple(p.shape for p in m.parameters())) for m in model.children())
    optimizer = tuple(sorted((k, str(v)) for k, v in optimizer_cfg.items() if k != "lr"))
    step = (settings.batch_size, settings.precision, settings.diagnostics)
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
    settings: TrainerSettings,
    x: torch.Tensor,
    y: torch.Tensor,
    capture: bool,
) -> GraphStep:
    """A graph step training a twin of `model` (same weights; copy them back when done), from
    `GRAPH_CACHE` when one of the same key exists, else newly warmed up and captured."""
    key = _graph_key(model, optimizer_cfg, settings, x, y, capture)
    step = GRAPH_CACHE.pop(key, None)
    if step is None:
        while len(GRAPH_CACHE) >= GRAPH_CACHE_SIZE:
            GRAPH_CACHE.popitem(last=False)  # before capture, so its stream is free again
        stream = capture_stream(x.device) if capture else None
        step = GraphStep(copy.deepcopy(model), optimizer_cfg, settings, x, y, stream)
    else:
        step.load([*model.parameters(), *model.buffers()], float(optimizer_cfg["lr"]))
    GRAPH_CACHE[key] = step
    return step
