"""A pack's train step: the same-shape runs of a sweep stacked into one batched pass
(`PackStep`), each with its own optimizer settings (`PackOptimizer`), dropout generator, batch
order and end; `make_pack_step` captures it as one CUDA graph where it can (see
`fitscope.train.packed` for what each member gets of its own)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fitscope.train.data import Splits
from fitscope.train.diagnostics import (
    GradientMonitor,
    has_final_activation,
    linear_layers,
    measure_stride,
)
from fitscope.train.graph import GRAPH_CACHE, WARMUP_STEPS, capture_stream
from fitscope.train.models import make_activation
from fitscope.train.pack_optimizer import PackOptimizer
from fitscope.train.settings import TrainerSettings
from fitscope.train.steps import autocast

log = logging.getLogger("fitscope")


@dataclass
class Member:
    """One run of a pack: its model as built alone (initial weights), data, optimizer config
    and settings (`epochs` resolved), and what it is told as it trains."""

    model: nn.Sequential
    splits: Splits
    optimizer: Mapping[str, Any]
    settings: TrainerSettings
    activation: Mapping[str, Any]
    dropout: float = 0.0
    on_epoch: Callable[[dict[str, float]], None] | None = None
    on_steps: Callable[[int, list[float]], None] | None = None


@dataclass
class _Segment:
    """Members [start, stop) that share one activation."""

    start: int
    stop: int
    activation: nn.Module


class PackStep:
    """The pack's train step: gather each member's batch, forward through the stacked layers,
    per-member losses, backward, per-member gradient norms and clipping, `PackOptimizer`.
    Captured as one CUDA graph when given a capture stream (see `fitscope.train.graph`)."""

    def __init__(
        self, members: Sequence[Member], settings: TrainerSettings, stream: Any = None
    ) -> None:
        self.members = members
        self.device = members[0].splits.x_train.device
        self.size = len(members)
        self.batch_size = settings.batch_size
        self.precision = settings.precision
        self.params = self._stacked_parameters()
        self.final_activation = has_final_activation(members[0].model)
        self.optimizer = PackOptimizer(self.params, [m.optimizer for m in members])
        self._share_data_and_activations()
        self._batch_tables()
        self.alive = torch.ones(self.size, dtype=torch.bool, device=self.device)
        self.index = torch.zeros(1, dtype=torch.long, device=self.device)
        self.losses = torch.zeros(self.size, self.steps, device=self.device)
        # dropout: per-member probability and generator
        self.dropout = [m.dropout for m in members]
        self.generators = [
            _dropout_generator(m.settings.seed, self.device) if m.dropout > 0 else None
            for m in members
        ]
        self.diagnostics = settings.diagnostics
        self.captured = stream is not None
        self._gradient_tables()
        self.graph: torch.cuda.CUDAGraph | None = None
        self.stream = stream
        self.eager_step = 0
        self._prepare()

    def _stacked_parameters(self) -> list[torch.Tensor]:
        """The stacked parameters, W [members, in, out] and b [members, 1, out] per layer."""
        layers = [linear_layers(m.model) for m in self.members]
        params: list[torch.Tensor] = []
        for depth in range(len(layers[0])):
            weight = torch.stack([ls[depth].weight.detach().t() for ls in layers]).contiguous()
            bias = torch.stack([ls[depth].bias.detach()[None] for ls in layers]).contiguous()
            params += [weight.requires_grad_(), bias.requires_grad_()]
        return params

    def _share_data_and_activations(self) -> None:
        """Each data split once, and the runs of neighbouring members that share an activation."""
        self.data: list[Splits] = []
        self.member_data: list[int] = []
        for member in self.members:
            if not any(s is member.splits for s in self.data):
                self.data.append(member.splits)
            self.member_data.append(next(i for i, s in enumerate(self.data) if s is member.splits))
        self.activations: list[_Segment] = []
        for index, member in enumerate(self.members):
            last = self.activations[-1] if self.activations else None
            if last and dict(self.members[last.start].activation) == dict(member.activation):
                last.stop = index + 1
            else:
                activation = make_activation(member.activation)
                self.activations.append(_Segment(index, index + 1, activation))

    def _batch_tables(self) -> None:
        """Per-member batch tables: order (indices into its training part) and weights, padded
        to the longest member's steps (rows of weight 0)."""
        batch, device = self.batch_size, self.device
        self.train_sizes = [len(m.splits.x_train) for m in self.members]
        self.member_steps = [math.ceil(n / batch) for n in self.train_sizes]
        self.steps = max(self.member_steps)
        self.order = torch.zeros(self.size, self.steps, batch, dtype=torch.long, device=device)
        weight = torch.zeros(self.size, self.steps * batch, device=device)
        for m, n in enumerate(self.train_sizes):
            weight[m, :n] = 1.0
        weight = weight.view(self.size, self.steps, batch)
        self.weight = weight / weight.sum(dim=2, keepdim=True).clamp(min=1)
        self.step_valid = (
            torch.arange(self.steps, device=device)[None, :]
            < torch.tensor(self.member_steps, device=device)[:, None]
        )  # [members, steps]: the member has this step

    def _gradient_tables(self) -> None:
        """Gradient norms and clipping, per member, and each member's `GradientMonitor`."""
        device = self.device
        clips = [m.optimizer.get("grad_clip") for m in self.members]
        self.clips = any(c is not None for c in clips)
        self.grad_clip = torch.tensor(
            [math.inf if c is None else float(c) for c in clips], device=device
        )
        self.clipping = torch.tensor([c is not None for c in clips], device=device)
        self.strides = [measure_stride(s, self.captured) for s in self.member_steps]
        rows = max(math.ceil(s / k) for s, k in zip(self.member_steps, self.strides, strict=True))
        self.norms = torch.zeros(rows, self.size, len(self.params), device=device)
        self.totals = torch.zeros(self.steps, self.size, device=device)
        self.monitors = [self._monitor(m, i, clips[i]) for i, m in enumerate(self.members)]

    @property
    def mode(self) -> str:
        return "graph" if self.graph is not None else "none"

    def _monitor(self, member: Member, index: int, clip: float | None) -> GradientMonitor | None:
        """The member's `GradientMonitor` (what `epoch_values` gives, as for a run alone), its
        tables views of the pack's."""
        if not self.diagnostics:
            return None
        monitor = GradientMonitor(member.model, clip, self.member_steps[index], self.strides[index])
        monitor.norms = self.norms[:, index, :]
        monitor.totals = self.totals[:, index] if clip is not None else monitor.totals
        return monitor

    # ----------------------------------------------------------------- the step itself

    def _forward(self, x: torch.Tensor, training: bool) -> torch.Tensor:
        """Logits [members, batch, classes] of the stacked layers on x [members, batch, in]."""
        h = x
        hidden = len(self.params) // 2 - 1
        for layer in range(hidden + 1):
            weight, bias = self.params[2 * layer], self.params[2 * layer + 1]
            h = torch.baddbmm(bias, h, weight)
            if layer < hidden or self.final_activation:
                h = self._activate(h)
            if layer < hidden and training and any(p > 0 for p in self.dropout):
                h = h * self._dropout_mask(h.shape[1:]).to(h.dtype)
        return h

    def _activate(self, h: torch.Tensor) -> torch.Tensor:
        """Each member's activation on its slice of h [members, ...]."""
        if len(self.activations) == 1:
            return self.activations[0].activation(h)
        return torch.cat([s.activation(h[s.start : s.stop]) for s in self.activations])

    def _dropout_mask(self, shape: torch.Size) -> torch.Tensor:
        """Per member: 1 / (1 - p) where a unit is kept, 0 where dropped (nn.Dropout's scaling),
        drawn from the member's own generator on the member's own steps only (so its masks do
        not depend on its pack-mates' step counts); ones for members without dropout. Packs
        with dropout train with eager steps: `eager_step` is the step number."""
        masks = []
        for m, (p, generator) in enumerate(zip(self.dropout, self.generators, strict=True)):
            if generator is None or self.eager_step >= self.member_steps[m]:
                masks.append(torch.ones(shape, device=self.device))
            else:
                draw = torch.rand(shape, device=self.device, generator=generator)
                masks.append((draw >= p).float() / (1 - p))
        return torch.stack(masks)

    def _gather(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The step's batches x [members, batch, in], labels and weights [members, batch]."""
        rows = self.order.index_select(1, self.index).view(self.size, self.batch_size)
        weight = self.weight.index_select(1, self.index).view(self.size, self.batch_size)
        if len(self.data) == 1:
            data = self.data[0]
            flat = rows.reshape(-1)
            x = data.x_train.index_select(0, flat).view(self.size, self.batch_size, -1)
            return x, data.y_train.index_select(0, flat).view_as(rows), weight
        xs, ys = [], []
        for m in range(self.size):
            data = self.data[self.member_data[m]]
            xs.append(data.x_train.index_select(0, rows[m]))
            ys.append(data.y_train.index_select(0, rows[m]))
        return torch.stack(xs), torch.stack(ys), weight

    def _step(self) -> None:
        x, y, weight = self._gather()
        with autocast(self.precision, self.device, cache_enabled=False):
            logits = self._forward(x, training=True)
        classes = logits.shape[-1]
        per_sample = F.cross_entropy(
            logits.float().reshape(-1, classes), y.reshape(-1), reduction="none"
        ).view(self.size, self.batch_size)
        losses = (per_sample * weight).sum(dim=1)
        losses.sum().backward()
        self._norms_and_clip()
        active = self.alive & self.step_valid.index_select(1, self.index).view(-1)
        self.optimizer.step(active.view(-1, 1, 1))
        self.losses.index_copy_(1, self.index, losses.detach()[:, None])
        self.index += 1

    def _norms_and_clip(self) -> None:
        """Per member: each parameter's gradient norm (into the diagnostics' table, on the
        steps its stride measures), the global norm, clipping."""
        if not (self.diagnostics or self.clips):
            return
        grads = [p.grad for p in self.params]
        norms = torch.stack(
            [torch.linalg.vector_norm(g.reshape(self.size, -1), dim=1) for g in grads], dim=1
        )  # [members, params]
        if self.diagnostics:
            self._record(norms)
        if self.clips:
            total = torch.linalg.vector_norm(norms, dim=1)
            self.totals.index_copy_(0, self.index, total[None])
            # clip_grads_with_norm_'s coefficient; exactly 1 for members without grad_clip,
            # whatever their norm (inf / inf would be NaN)
            coef = (self.grad_clip / (total + 1e-6)).clamp(max=1.0)
            coef = torch.where(self.clipping, coef, 1.0)
            for g in grads:
                g.mul_(coef.view(-1, 1, 1))

    def _record(self, norms: torch.Tensor) -> None:
        if self.captured:  # stride 1, a device step counter
            self.norms.index_copy_(0, self.index, norms[None])
            return
        step = self.eager_step  # the step counter as a number: eager steps only
        for m, stride in enumerate(self.strides):
            if step % stride == 0 and step < self.member_steps[m]:
                self.norms[step // stride, m] = norms[m]

    def _prepare(self) -> None:
        """With a capture stream: warm up (creating autograd's and the kernels' state), capture
        the step, then restore the weights and optimizer state, so the warm-up leaves no trace.
        Eager steps need nothing."""
        side = self.stream
        if side is None:
            return
        initial = [p.detach().clone() for p in self.params]
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(WARMUP_STEPS):
                self.index.zero_()
                self._zero_grad()
                self._step()
        torch.cuda.current_stream(self.device).wait_stream(side)
        self.index.zero_()
        self._zero_grad()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=side):
            self._step()
        self.graph = graph
        with torch.no_grad():
            for p, value in zip(self.params, initial, strict=True):
                p.copy_(value)
            for state in self.optimizer.state():
                state.zero_()
        self.norms.zero_()
        self.totals.zero_()
        self.losses.zero_()
        self.index.zero_()

    def _zero_grad(self) -> None:
        """Gradients to None: backward then writes them anew (a captured backward into the
        graph's pool, so that each replay writes, not accumulates)."""
        for p in self.params:
            p.grad = None

    def release(self) -> None:
        if self.graph is not None:
            self.graph.reset()
            self.graph = None

    # ----------------------------------------------------------------- per epoch

    def run_epoch(self, permutations: Sequence[torch.Tensor | None]) -> torch.Tensor:
        """Train every live member on its permutation (None: frozen); returns the device table
        [members, steps] of per-step training losses."""
        for m, permutation in enumerate(permutations):
            if permutation is not None:
                self.order[m].view(-1)[: len(permutation)].copy_(permutation)
        self.norms.zero_()
        self.index.zero_()
        for number in range(self.steps):
            if self.graph is not None:
                self.graph.replay()
            else:
                self.eager_step = number
                self._zero_grad()
                self._step()
        return self.losses

    @torch.no_grad()
    def copy_to_members(self, members: Sequence[int]) -> None:
        """The stacked weights of these members into their own models (for evaluation, the
        best weights, the checkpoint)."""
        for m in members:
            for layer, linear in enumerate(linear_layers(self.members[m].model)):
                linear.weight.copy_(self.params[2 * layer][m].t())
                linear.bias.copy_(self.params[2 * layer + 1][m, 0])

    @torch.no_grad()
    def freeze(self, m: int) -> None:
        """Member `m` has ended: no more updates, and its slice zeroed (a diverged member's
        NaN or huge weights would slow the arithmetic of the whole pack on a CPU)."""
        self.alive[m] = False
        for tensor in [*self.params, *self.optimizer.state()]:
            tensor[m].zero_()


def _dropout_seed(seed: int) -> int:
    """The seed of a member's dropout generator: from its `trainer.seed`, apart from the
    shuffling generator's stream."""
    return int(np.random.SeedSequence([seed, 1]).generate_state(1)[0])


def _dropout_generator(seed: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(_dropout_seed(seed))


def make_pack_step(members: Sequence[Member], settings: TrainerSettings) -> PackStep:
    """The pack's step, captured as a CUDA graph when `trainer.compile` is graph (on CUDA);
    a capture that fails is logged and the pack trains with eager steps when `auto` chose the
    graph, an error with `trainer.compile=graph`. A pack with dropout trains with eager steps
    (its members' dropout generators are not captured; `plan` trains such runs alone when
    `trainer.compile=graph` asks for a graph)."""
    if settings.compile != "graph":
        return PackStep(members, settings)
    if any(m.dropout > 0 for m in members):
        log.info("packed: a pack with dropout trains with eager steps (not a CUDA graph)")
        return PackStep(members, settings)
    # the graphs of single runs this process keeps are dropped, so that the pack's capture
    # stream is one no live graph uses (see fitscope.train.graph: capture streams)
    GRAPH_CACHE.clear()
    try:
        return PackStep(members, settings, capture_stream(settings.device))
    except RuntimeError as error:
        if not settings.graph_fallback:
            raise
        reason = " ".join(str(error).split())[:300]
        log.warning(f"packed: CUDA graph capture failed ({reason}); eager steps")
    return PackStep(members, settings)
