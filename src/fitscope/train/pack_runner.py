"""Packed sweeps, run by run: which jobs of a sweep share a pack (`plan`), and a pack trained
into its members' run folders (`run_pack`), each folder exactly what the runner writes for a
run alone (`fitscope.train.runner`), plus summary.json's `pack`.

What may differ inside a pack (`MAY_DIFFER`): the seed, the activation and its parameters, the
learning rate, weight decay, momentum, Adam's betas and eps, gradient clipping, the init, the
dropout probability, the fold, the epochs or step budget, early stopping, the divergence bound,
what is shown and logged. Any other key splits packs: the model's shape, the optimizer kind
(and Nesterov), the batch sizes, the dataset and its split, the device, precision and math
modes, diagnostics, the step mode.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from fitscope import FitscopeError
from fitscope.config import flatten_config
from fitscope.rundir import check_run_folder, run_lock
from fitscope.rundir.logfile import RunLog
from fitscope.train.console import Console
from fitscope.train.data import Splits, make_splits
from fitscope.train.loop import FitResult
from fitscope.train.pack_step import Member
from fitscope.train.packed import PackTiming, fit_pack
from fitscope.train.record import Record, current_gpu, start_record
from fitscope.train.resume import completed_run
from fitscope.train.settings import TrainerSettings, validate
from fitscope.train.steps import math_modes

log = logging.getLogger("fitscope")

# Config keys (a key, or a prefix ending in ".") that may differ between the members of a pack.
MAY_DIFFER = (
    "trainer.seed",
    "trainer.epochs",
    "trainer.steps",
    "trainer.early_stopping.",
    "trainer.divergence_loss",
    "trainer.console",
    "activation.",
    "optimizer.lr",
    "optimizer.weight_decay",
    "optimizer.momentum",
    "optimizer.betas",
    "optimizer.eps",
    "optimizer.grad_clip",
    "model.init",
    "model.dropout",
    "data.fold",
    "logger.",
    "report.",
)
# Without a known free memory (the CPU), at most this many members per pack.
CPU_MAX_MEMBERS = 64
MAX_MEMBERS = 512


@dataclass
class PackJob:
    """One job of a packed sweep: its composed config (without `hydra`), its run folder, what
    the runner records of it; `summary` once it has trained."""

    cfg: DictConfig
    out_dir: Path
    overrides: Sequence[str] = ()
    choices: Mapping[str, str] = field(default_factory=dict)
    label: str = "run"
    number: int = 0  # the job number
    summary: dict[str, Any] | None = None
    prepare: Callable[[], None] | None = None  # once its folder is locked: the launcher's files
    log_file: Path | None = None  # its log (run.log), and the format of its lines
    log_format: tuple[str | None, str | None] = (None, None)


def splits_packs(key: str) -> bool:
    """True when config key `key` (dotted) must be equal for runs to share a pack."""
    return not any(key == k or (k.endswith(".") and key.startswith(k)) for k in MAY_DIFFER)


def pack_key(plain: Mapping[str, Any]) -> str:
    """The values of every key that splits packs, as one string: runs with the same key may
    share a pack."""
    flat = flatten_config(plain)
    return json.dumps({k: v for k, v in sorted(flat.items()) if splits_packs(k)}, default=str)


def plan(
    jobs: Sequence[PackJob], max_members: int | None, skip: set[int] = frozenset()
) -> tuple[list[list[int]], list[int]]:
    """(packs, alone): the jobs, but those in `skip`, grouped into packs (indices into `jobs`;
    each pack at most `max_members`, a larger group split into packs of near-equal size,
    members ordered by activation), and the jobs that train alone: those refused by validation
    (they fail with their one line, as any run), those that ask for what a pack does not do
    (`packable`), and those that share a pack with no other job."""
    groups: dict[str, list[int]] = {}
    alone = []
    for index, job in enumerate(jobs):
        if index in skip:
            continue
        try:
            plain, settings = validate(job.cfg)
        except Exception:  # noqa: BLE001 - the job itself says what is wrong
            alone.append(index)
            continue
        if not packable(plain, settings):
            alone.append(index)
            continue
        groups.setdefault(pack_key(plain), []).append(index)
    packs = []
    for members in groups.values():
        if len(members) == 1:
            alone.append(members[0])
            continue
        limit = max_members or default_max_members(jobs[members[0]].cfg)
        count = math.ceil(len(members) / max(1, limit))
        size = math.ceil(len(members) / count)
        for start in range(0, len(members), size):
            part = members[start : start + size]
            packs.append(sorted(part, key=lambda i: _activation_key(jobs[i].cfg)))
    return packs, sorted(alone)


def packable(plain: Mapping[str, Any], settings: TrainerSettings) -> bool:
    """False for a run that asks for what a pack does not do: `trainer.compile=torch_compile`
    (a pack's step is not compiled), or a CUDA graph that must be captured
    (`trainer.compile=graph`) with dropout (a pack with dropout trains with eager steps)."""
    if settings.compile == "torch_compile":
        return False
    needs_graph = settings.compile == "graph" and not settings.graph_fallback
    return not (needs_graph and plain["model"]["dropout"] > 0)


def _activation_key(cfg: DictConfig) -> str:
    return json.dumps(dict(cfg["activation"]), sort_keys=True, default=str)


def member_bytes(plain: Mapping[str, Any], in_features: int = 784, classes: int = 10) -> int:
    """Device memory one member of a pack takes, roughly: parameters with their gradients,
    optimizer state, best and evaluation copies, and a step's activations."""
    model, batch = plain["model"], plain["trainer"]["batch_size"]
    depth, width = model["depth"], model["width"]
    fans = [in_features] + [width] * depth + [classes]
    params = sum((a + 1) * b for a, b in zip(fans, fans[1:], strict=False))
    activations = batch * (in_features + 4 * width * depth + 3 * classes)
    return 4 * (8 * params + 2 * activations)


def default_max_members(cfg: DictConfig) -> int:
    """`hydra.launcher.max_members=null`: as many members as half the device's free memory
    holds (at most `MAX_MEMBERS`); `CPU_MAX_MEMBERS` on the CPU."""
    plain, settings = validate(cfg)
    if settings.device.type != "cuda":
        return CPU_MAX_MEMBERS
    free, _ = torch.cuda.mem_get_info(settings.device)
    return max(1, min(MAX_MEMBERS, int(free // 2 // member_bytes(plain))))


@dataclass
class _Running:
    """A member of a pack while it trains: its job, its folder's record and lock."""

    job: PackJob
    record: Record
    lock: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def close(self) -> None:
        """Its summary written and files closed (`Record.close`), then its folder unlocked."""
        try:
            self.record.close()
        finally:
            self.lock.close()
            self.job.summary = self.record.summary


def run_pack(
    jobs: Sequence[PackJob],
    pack: Mapping[str, Any],
    on_end: Callable[[PackJob], None] | None = None,
) -> tuple[list[PackJob], PackTiming | None]:
    """Train `jobs` as one pack, each into its run folder; `pack` (`number`, `of`) goes into
    their summaries with the pack's size and jobs. `on_end(job)` as soon as a job has ended,
    its folder complete and unlocked, `job.summary` set. Returns the jobs that were not packed
    (a folder another process holds, or where it has completed the run meanwhile: they are left
    to the caller, which runs them as the basic launcher does), and the pack's timing (None when
    nothing trained).

    A pack that raises marks its unfinished members failed with the reason and raises again."""
    running: list[_Running] = []
    refused: list[PackJob] = []
    try:
        for job in jobs:
            member = _start(job)
            if member is None:
                refused.append(job)
            else:
                running.append(member)
        if not running:
            return refused, None
        info = {**pack, "size": len(running), "jobs": [m.job.number for m in running]}
        data: dict[str, Splits] = {}  # each split once, however many members share it
        members = [_member(m, info, data) for m in running]
        settings = running[0].record.settings
        timing = PackTiming(len(members))

        def ended(index: int, result: FitResult) -> None:
            _finish(running[index], members[index], result)
            if on_end is not None:
                on_end(running[index].job)

        with math_modes(settings), current_gpu(settings.device):
            if settings.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(settings.device)
            fit_pack(members, ended, timing)
        return refused, timing
    except BaseException as error:
        for member in running:
            if not member.record.closed:
                member.record.fail(error)
                if isinstance(error, KeyboardInterrupt):  # what each run kept, in its run.log too
                    record = member.record
                    record.console.finished(member.job.label, record.summary, record.where())
                member.close()
        raise


def _start(job: PackJob) -> _Running | None:
    """Lock the job's folder and write what a run writes when it starts; None when another
    process holds the folder or, by now, has completed its run there (the caller runs the job
    as the basic launcher does, which says so)."""
    plain, settings = validate(job.cfg)
    lock = contextlib.ExitStack()
    try:  # a folder it may not write, one another process holds, a completed or refused run:
        check_run_folder(job.out_dir)  # the job runs alone, and says which in its line
        job.out_dir.mkdir(parents=True, exist_ok=True)
        lock.enter_context(run_lock(job.out_dir))
        done = completed_run(job.cfg, job.out_dir, job.label) is not None
    except FitscopeError:
        lock.close()
        return None
    except BaseException:
        lock.close()
        raise
    if done:
        lock.close()
        return None
    try:  # from here on, whatever fails releases the lock and the run's log
        log_handler = _member_log(job)
        if log_handler is not None:
            lock.callback(_remove_handler, log_handler)
        if job.prepare is not None:
            job.prepare()
        console = Console(plain["trainer"]["console"], True, settings.epochs, label=job.label)
        record = start_record(
            job.cfg, plain, settings, job.out_dir, job.overrides, job.choices, console, job.label
        )
    except BaseException:
        lock.close()
        raise
    return _Running(job, record, lock)


def _member_log(job: PackJob) -> logging.Handler | None:
    """A handler that writes to the job's log (run.log) what fitscope says of this member while
    its pack trains, and what it says of the whole pack (a line not about another run)."""
    if job.log_file is None:
        return None
    handler = RunLog(str(job.log_file))
    handler.setFormatter(logging.Formatter(*job.log_format))
    mine = f"{job.label}:"

    def about_this_member(record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return message.startswith(mine) or not message.startswith("#")

    handler.addFilter(about_this_member)
    logging.getLogger("fitscope").addHandler(handler)
    return handler


def _remove_handler(handler: logging.Handler) -> None:
    logging.getLogger("fitscope").removeHandler(handler)
    handler.close()


def _member(running: _Running, pack: Mapping[str, Any], data: dict[str, Splits]) -> Member:
    """The pack member of a started job: its data (from `data` when a member before it has the
    same split), its model built as a run alone builds it (`Record.build`), and the callbacks
    that write its rows."""
    record = running.record
    plain, settings = record.plain, record.settings
    key = json.dumps([plain["data"], settings.train_eval_samples], sort_keys=True, default=str)
    if key not in data:
        data[key] = make_splits(plain["data"], settings.device, settings.train_eval_samples)
    record.summary.update(pack=dict(pack))
    model = record.build(data[key])
    return Member(
        model=model,
        splits=data[key],
        optimizer=plain["optimizer"],
        settings=record.settings,
        activation=plain["activation"],
        dropout=plain["model"]["dropout"],
        on_epoch=record.on_epoch,
        on_steps=record.steps_callback(),
    )


def _finish(running: _Running, member: Member, result: FitResult) -> None:
    """What a run writes when its epochs end (`Record.finish`); then its folder is closed and
    unlocked."""
    try:
        running.record.finish(member.model, member.splits, result)
    except BaseException as error:
        running.record.fail(error)
        raise
    finally:
        running.close()
