"""Packed training: the same-shape runs of a sweep trained together, one batched pass per step.

A pack's members are MLPs of one shape. Layer l's weights of all members are stacked into one
tensor of shape [members, in, out] (biases [members, 1, out]), so one `torch.baddbmm` runs the
layer for every member: on a GPU, where a small MLP's step is bound by kernel launches, not by
arithmetic, M members cost about what one costs. Each member gets exactly what it would get
alone:

- its own initial weights (its model is built as a run alone builds it, `trainer.seed` first,
  and copied into its slice) and its own batch order (a generator of its own, seeded with its
  `trainer.seed`, the same permutations a run alone draws);
- its own activation: the matmuls are shared, the elementwise activation is applied to each
  run of members that share one (members are ordered so that these are contiguous slices);
- its own optimizer settings (`PackOptimizer`: lr, weight decay, momentum, Adam's betas and
  eps, gradient clipping as per-member tensors; the same update rules as torch.optim's SGD,
  Adam and AdamW), its own dropout probability (masks from a generator of its own, so they do
  not depend on who shares the pack), its own data split (`data.fold`);
- its own end: a member that completes its epochs, stops early or diverges is frozen by a mask
  (no update, nothing more written; its weights are zeroed so that a NaN costs nothing) while
  the others go on.

Everything a member's run folder holds is measured on the member's own model (`MemberModel`:
its `nn.Sequential`, into which the stacked weights are copied after each epoch) with the code
a run alone uses, so `metrics.csv`'s columns and values are those of the basic launcher's run,
within float rounding (batched matmuls may sum in another order).

The step is written like the single-run graph step (`fitscope.train.graph`): fixed shapes
(ragged last batches and members with fewer steps padded with rows of weight 0), the step
number, learning rates and masks as device tensors, so on CUDA the whole step is captured as
one CUDA graph and replayed; where capture fails, the pack trains with eager steps.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
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
from fitscope.train.loop import (
    FitResult,
    Progress,
    _epoch_measures,
    _row,
    _to_host,
    _TrainTimer,
    initial_row,
    metric_columns,
)
from fitscope.train.models import make_activation
from fitscope.train.settings import TrainerSettings
from fitscope.train.steps import autocast

log = logging.getLogger("fitscope")

OPTIMIZER_KINDS = ("sgd", "momentum", "adam", "adamw")


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
class PackTiming:
    """What the pack's line says: members, epochs, seconds per epoch (training and evaluation),
    the training phase alone, and how the steps ran."""

    members: int
    epochs: int = 0
    seconds: float = 0.0
    train_seconds: float = 0.0
    compile: str = "none"
    member_epochs: int = 0  # epochs trained, summed over the members


def _per_member(values: Sequence[float], device: torch.device) -> torch.Tensor:
    """A [members, 1, 1] float32 tensor, broadcast against stacked [members, a, b] tensors."""
    return torch.tensor([float(v) for v in values], device=device).view(-1, 1, 1)


class PackOptimizer:
    """SGD, SGD with momentum, Adam or AdamW over stacked parameters ([members, ...]), each
    member with its own hyperparameters, updating only the members marked active. The update
    rules are torch.optim's (`torch/optim/sgd.py`, `adam.py`), elementwise, so each member's
    slice gets what its own optimizer would give it; every operation is a device tensor op, so
    the step can be captured in a CUDA graph."""

    def __init__(self, params: Sequence[torch.Tensor], configs: Sequence[Mapping[str, Any]]):
        kinds = {c["name"] for c in configs}
        if len(kinds) != 1 or next(iter(kinds)) not in OPTIMIZER_KINDS:
            raise ValueError(f"a pack needs one optimizer kind of {OPTIMIZER_KINDS}, got {kinds}")
        self.kind = next(iter(kinds))
        device = params[0].device
        self.params = list(params)
        self.lr = _per_member([c["lr"] for c in configs], device)
        self.weight_decay = _per_member([c.get("weight_decay", 0.0) for c in configs], device)
        self.decays = any(c.get("weight_decay", 0.0) for c in configs)
        if self.kind == "momentum":
            self.momentum = _per_member([c["momentum"] for c in configs], device)
            self.nesterov = bool(configs[0]["nesterov"])
            self.buffers = [torch.zeros_like(p) for p in self.params]
        if self.kind in ("adam", "adamw"):
            self.beta1 = _per_member([c["betas"][0] for c in configs], device)
            self.beta2 = _per_member([c["betas"][1] for c in configs], device)
            self.eps = _per_member([c["eps"] for c in configs], device)
            self.steps = torch.zeros(len(configs), 1, 1, device=device)
            self.exp_avg = [torch.zeros_like(p) for p in self.params]
            self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]

    def state(self) -> list[torch.Tensor]:
        """Every state tensor (zeroed for a fresh start)."""
        if self.kind == "momentum":
            return self.buffers
        if self.kind in ("adam", "adamw"):
            return [self.steps, *self.exp_avg, *self.exp_avg_sq]
        return []

    @torch.no_grad()
    def step(self, active: torch.Tensor) -> None:
        """One update of the members where `active` ([members, 1, 1] bool) is set. The others
        are left exactly as they are: their step size and mixing weights are 0 (their
        gradients are finite: a member that ended is zeroed), so every update is one in-place
        pass over the stacked tensors, as torch.optim's own."""
        on = active.float()
        if self.kind in ("adam", "adamw"):
            self._adam(active, on)
            return
        lr = self.lr * on
        keep = torch.where(active, self.momentum, 1.0) if self.kind == "momentum" else None
        for i, p in enumerate(self.params):
            d_p = p.grad
            if self.decays and self.kind != "adamw":
                d_p = torch.addcmul(d_p, p, self.weight_decay)
            if self.kind == "momentum":
                buf = self.buffers[i]
                buf.mul_(keep).addcmul_(d_p, on)
                d_p = torch.addcmul(d_p, buf, self.momentum) if self.nesterov else buf
            p.addcmul_(d_p, lr, value=-1)

    def _adam(self, active: torch.Tensor, on: torch.Tensor) -> None:
        self.steps.add_(on)
        step = self.steps.clamp(min=1)
        bias_correction2_sqrt = (1 - self.beta2.pow(step)).sqrt()
        step_size = self.lr / (1 - self.beta1.pow(step)) * on
        first, second = (1 - self.beta1) * on, (1 - self.beta2) * on
        for p, m, v in zip(self.params, self.exp_avg, self.exp_avg_sq, strict=True):
            grad = p.grad
            if self.decays and self.kind == "adamw":
                p.mul_(1 - self.lr * self.weight_decay * on)
            elif self.decays:
                grad = torch.addcmul(grad, p, self.weight_decay)
            m.lerp_(grad, first)
            v.lerp_(grad * grad, second)
            denom = v.sqrt().div_(bias_correction2_sqrt).add_(self.eps)
            p.addcdiv_(m * step_size, denom, value=-1)


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
        self.device = device = members[0].splits.x_train.device
        self.size = len(members)
        self.batch_size = batch = settings.batch_size
        self.precision = settings.precision
        # the stacked parameters, W [members, in, out] and b [members, 1, out] per layer
        layers = [linear_layers(m.model) for m in members]
        self.params: list[torch.Tensor] = []
        for depth in range(len(layers[0])):
            weight = torch.stack([ls[depth].weight.detach().t() for ls in layers]).contiguous()
            bias = torch.stack([ls[depth].bias.detach()[None] for ls in layers]).contiguous()
            self.params += [weight.requires_grad_(), bias.requires_grad_()]
        self.final_activation = has_final_activation(members[0].model)
        self.optimizer = PackOptimizer(self.params, [m.optimizer for m in members])
        # each data split once, and the runs of neighbouring members that share an activation
        self.data: list[Splits] = []
        self.member_data: list[int] = []
        for member in members:
            if not any(s is member.splits for s in self.data):
                self.data.append(member.splits)
            self.member_data.append(next(i for i, s in enumerate(self.data) if s is member.splits))
        self.activations: list[_Segment] = []
        for index, member in enumerate(members):
            last = self.activations[-1] if self.activations else None
            if last and dict(members[last.start].activation) == dict(member.activation):
                last.stop = index + 1
            else:
                activation = make_activation(member.activation)
                self.activations.append(_Segment(index, index + 1, activation))
        # per-member batch tables: order (indices into its training part) and weights
        self.train_sizes = [len(m.splits.x_train) for m in members]
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
        self.alive = torch.ones(self.size, dtype=torch.bool, device=device)
        self.index = torch.zeros(1, dtype=torch.long, device=device)
        self.losses = torch.zeros(self.size, self.steps, device=device)
        # dropout: per-member probability and generator
        self.dropout = [m.dropout for m in members]
        self.generators = [
            _dropout_generator(m.settings.seed, device) if m.dropout > 0 else None for m in members
        ]
        # gradient norms and clipping, per member
        clips = [m.optimizer.get("grad_clip") for m in members]
        self.clips = any(c is not None for c in clips)
        self.grad_clip = torch.tensor(
            [math.inf if c is None else float(c) for c in clips], device=device
        )
        self.clipping = torch.tensor([c is not None for c in clips], device=device)
        self.diagnostics = settings.diagnostics
        self.captured = stream is not None
        self.strides = [measure_stride(s, self.captured) for s in self.member_steps]
        rows = max(math.ceil(s / k) for s, k in zip(self.member_steps, self.strides, strict=True))
        self.norms = torch.zeros(rows, self.size, len(self.params), device=device)
        self.totals = torch.zeros(self.steps, self.size, device=device)
        self.monitors = [self._monitor(m, i, clips[i]) for i, m in enumerate(members)]
        self.graph: torch.cuda.CUDAGraph | None = None
        self.stream = stream
        self.eager_step = 0
        self._prepare()

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


def fit_pack(
    members: Sequence[Member],
    on_end: Callable[[int, FitResult], None] | None = None,
    timing: PackTiming | None = None,
) -> list[FitResult]:
    """Train every member of the pack for its `settings.epochs` (fewer where early stopping is
    enabled or it diverges), as `fitscope.train.loop.fit` trains a run alone: each member's
    `on_epoch` gets its rows (epoch 0 first), `on_steps` its steps' losses; `on_end(m, result)`
    is called as soon as member m has ended, its model then holding its last epoch's weights.
    Settings that split packs (batch size, precision, device, diagnostics, step mode) are the
    first member's."""
    settings = members[0].settings
    device = settings.device
    timing = timing or PackTiming(len(members))
    columns = [metric_columns(m.model, settings.diagnostics) for m in members]
    results = []
    for member, member_columns in zip(members, columns, strict=True):
        initial = initial_row(
            member.model, member.splits, member.optimizer, member.settings, member_columns
        )
        if member.on_epoch is not None:
            member.on_epoch(initial)
        results.append(FitResult(status="completed", initial=initial))
    setup_start = time.perf_counter()
    step = make_pack_step(members, settings)
    timing.compile = step.mode
    setup_seconds = time.perf_counter() - setup_start
    generators = [torch.Generator(device=device).manual_seed(m.settings.seed) for m in members]
    progress = [Progress(m.settings, r) for m, r in zip(members, results, strict=True)]
    live = list(range(len(members)))
    timer = _TrainTimer(device)
    try:
        epoch = 0
        while live:
            epoch += 1
            start = time.perf_counter()
            timer.start()
            permutations = [
                torch.randperm(step.train_sizes[m], device=device, generator=generators[m])
                if m in live
                else None
                for m in range(len(members))
            ]
            losses = step.run_epoch(permutations)
            timer.stop()
            step.copy_to_members(live)
            measures = {}
            for m in live:
                for name, value in _member_measures(step, m, losses).items():
                    measures[(m, name)] = value
            host = _to_host(measures)
            seconds = time.perf_counter() - start
            train_seconds = timer.seconds()
            timing.epochs, timing.seconds = epoch, timing.seconds + seconds
            timing.train_seconds += train_seconds
            timing.member_epochs += len(live)
            share, train_share = seconds / len(live), train_seconds / len(live)
            for m in list(live):
                member, result = members[m], results[m]
                mine = {
                    name: host[(m, name)]
                    for name in ("train", "val", "gradients", "activations", "step_losses")
                    if (m, name) in host
                }
                row = _row(columns[m], epoch, mine, member.optimizer["lr"], share)
                result.rows.append(row)
                result.train_seconds.append(train_share)
                if member.on_steps is not None:
                    member.on_steps(epoch, mine["step_losses"][: step.member_steps[m]])
                if member.on_epoch is not None:
                    member.on_epoch(row)
                if progress[m].ends_with(row, member.model) or epoch >= member.settings.epochs:
                    live.remove(m)
                    step.freeze(m)
                    result.compile = step.mode
                    result.setup_seconds = setup_seconds
                    trained = len(result.rows)
                    samples = step.train_sizes[m] * trained
                    result.samples_per_s = samples / max(
                        sum(r["seconds"] for r in result.rows), 1e-9
                    )
                    if on_end is not None:
                        on_end(m, result)
    finally:
        step.release()
    return results


def _member_measures(step: PackStep, m: int, losses: torch.Tensor) -> dict[str, torch.Tensor]:
    """Member m's epoch measures on its own model, as `fitscope.train.loop` measures a run."""
    member = step.members[m]
    view = SimpleNamespace(monitor=step.monitors[m], steps=step.member_steps[m])
    step_losses = losses[m] if member.on_steps is not None else None
    return _epoch_measures(view, member.model, member.splits, member.settings, step_losses)
