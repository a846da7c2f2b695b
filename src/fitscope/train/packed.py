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
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from fitscope.train.loop import (
    FitResult,
    Progress,
    TrainTimer,
    epoch_measures,
    epoch_row,
    initial_row,
    metric_columns,
    to_host,
)
from fitscope.train.pack_step import Member, PackStep, make_pack_step

log = logging.getLogger("fitscope")


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
    timing = timing or PackTiming(len(members))
    columns = [metric_columns(m.model, settings.diagnostics) for m in members]
    results = _initial_rows(members, columns)
    setup_start = time.perf_counter()
    step = make_pack_step(members, settings)
    timing.compile = step.mode
    setup_seconds = time.perf_counter() - setup_start
    generators = [
        torch.Generator(device=settings.device).manual_seed(m.settings.seed) for m in members
    ]
    progress = [Progress(m.settings, r) for m, r in zip(members, results, strict=True)]
    live = list(range(len(members)))
    timer = TrainTimer(settings.device)
    try:
        epoch = 0
        while live:
            epoch += 1
            host, shares = _pack_epoch(step, live, generators, timer, timing)
            timing.epochs = epoch
            for m in list(live):
                member, result = members[m], results[m]
                row = _member_row(step, m, result, columns[m], host, epoch, shares)
                if progress[m].ends_with(row, member.model) or epoch >= member.settings.epochs:
                    live.remove(m)
                    _member_ended(step, m, result, setup_seconds)
                    if on_end is not None:
                        on_end(m, result)
    finally:
        step.release()
    return results


def _initial_rows(members: Sequence[Member], columns: Sequence[list[str]]) -> list[FitResult]:
    """Each member's epoch 0 (its model as built), told to it; a result to fill per member."""
    results = []
    for member, member_columns in zip(members, columns, strict=True):
        initial = initial_row(
            member.model, member.splits, member.optimizer, member.settings, member_columns
        )
        if member.on_epoch is not None:
            member.on_epoch(initial)
        results.append(FitResult(status="completed", initial=initial))
    return results


def _pack_epoch(
    step: PackStep,
    live: list[int],
    generators: Sequence[torch.Generator],
    timer: TrainTimer,
    timing: PackTiming,
) -> tuple[dict, tuple[float, float]]:
    """One epoch of the live members: each its own permutation, the pack's steps, then each
    member's measures on its own model, back on the host in one transfer; (the measures by
    (member, name), each member's share of the epoch's seconds and of its training's)."""
    start = time.perf_counter()
    timer.start()
    permutations = [
        torch.randperm(step.train_sizes[m], device=timer.device, generator=generators[m])
        if m in live
        else None
        for m in range(len(step.members))
    ]
    losses = step.run_epoch(permutations)
    timer.stop()
    step.copy_to_members(live)
    measures = {}
    for m in live:
        for name, value in _member_measures(step, m, losses).items():
            measures[(m, name)] = value
    host = to_host(measures)
    seconds, train_seconds = time.perf_counter() - start, timer.seconds()
    timing.seconds += seconds
    timing.train_seconds += train_seconds
    timing.member_epochs += len(live)
    return host, (seconds / len(live), train_seconds / len(live))


def _member_row(
    step: PackStep,
    m: int,
    result: FitResult,
    columns: list[str],
    host: dict,
    epoch: int,
    shares: tuple[float, float],
) -> dict[str, float]:
    """Member m's row of the epoch, recorded in its result and told to it."""
    member = step.members[m]
    mine = {
        name: host[(m, name)]
        for name in ("train", "val", "gradients", "activations", "step_losses")
        if (m, name) in host
    }
    row = epoch_row(columns, epoch, mine, member.optimizer["lr"], shares[0])
    result.rows.append(row)
    result.train_seconds.append(shares[1])
    if member.on_steps is not None:
        member.on_steps(epoch, mine["step_losses"][: step.member_steps[m]])
    if member.on_epoch is not None:
        member.on_epoch(row)
    return row


def _member_ended(step: PackStep, m: int, result: FitResult, setup_seconds: float) -> None:
    """Member m trains no more: frozen in the pack, its result's timings filled in."""
    step.freeze(m)
    result.compile = step.mode
    result.setup_seconds = setup_seconds
    samples = step.train_sizes[m] * len(result.rows)
    result.samples_per_s = samples / max(sum(r["seconds"] for r in result.rows), 1e-9)


def _member_measures(step: PackStep, m: int, losses: torch.Tensor) -> dict[str, torch.Tensor]:
    """Member m's epoch measures on its own model, as `fitscope.train.loop` measures a run."""
    member = step.members[m]
    step_losses = losses[m] if member.on_steps is not None else None
    return epoch_measures(
        member.model,
        member.splits,
        member.settings,
        step.monitors[m],
        step.member_steps[m],
        step_losses,
    )
