"""`hydra/launcher=packed`: the same-shape runs of a sweep trained together, one batched pass
per step (`fitscope.train.packed`), in this process, on one device.

The launcher composes every job of the sweep first, as Hydra's basic launcher would (same job
numbers, same run folders), and validates them all before any work: a refused job fails with
its one line and the others still run. Jobs whose configs differ only in keys a pack allows
(`fitscope.train.pack_runner.MAY_DIFFER`) share a pack, at most `max_members` each; a job that
shares a pack with no other job, and a job whose folder already holds its completed run,
runs as the basic launcher runs it. A pack that fails (a CUDA error, memory) is reported in one
line and its unfinished runs are trained one by one.

As each member of a pack ends, Hydra's job machinery runs for it (`hydra.core.utils.run_job`):
its `run.log` (with the member's line), the callbacks' `on_job_start` and `on_job_end`, its
JobReturn (the best validation loss, as `src/run.py` returns). Its `.hydra/` files are written
when the member starts (`hydra.output_subdir` is null: fitscope writes them). So the report
callback, resume and the report see what a basic sweep gives them.

Hydra imports every module of `hydra_plugins` when it starts: torch and fitscope's training
wing are imported only when a sweep is launched.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import (
    JobReturn,
    configure_log,
    filter_overrides,
    run_job,
    setup_globals,
)
from hydra.errors import CompactHydraException
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

log = logging.getLogger(__name__)


class PackedLauncher(Launcher):
    def __init__(self, max_members: int | None = None) -> None:
        self.max_members = max_members
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        from fitscope.train.pack_runner import plan, run_pack

        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        if self.max_members is not None and (
            not isinstance(self.max_members, int) or self.max_members < 1
        ):
            raise CompactHydraException(
                f"hydra.launcher.max_members={self.max_members} is invalid: expected an integer "
                ">= 1, or null (as many as the device's free memory holds)"
            )
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        # the sweep's own config while no job runs (the basic launcher leaves none): what
        # src/run.py's Ctrl-C line reads the sweep folder from
        HydraConfig.instance().set_config(self.config)
        configs = [
            self._job_config(initial_job_idx + i, overrides)
            for i, overrides in enumerate(job_overrides)
        ]
        jobs = [self._pack_job(config) for config in configs]
        first = [i for i, job in enumerate(jobs) if _refused_or_done(job)]
        packs, alone = plan(jobs, self.max_members, skip=set(first))
        sizes = f" ({' + '.join(str(len(p)) for p in packs)} runs)" if packs else ""
        log.info(
            f"Launching {len(job_overrides)} jobs: {len(packs)} pack(s){sizes}, "
            f"{len(alone) + len(first)} alone; sweep output dir : {self.config.hydra.sweep.dir}"
        )
        for idx, overrides in enumerate(job_overrides):
            log.info(f"\t#{initial_job_idx + idx} : {' '.join(filter_overrides(overrides))}")
        results: dict[int, JobReturn] = {}
        for index in first:  # refused and completed jobs first: a line each, at once
            results[index] = self._run(configs[index])
        waiting = set(alone)
        position = {job.number: i for i, job in enumerate(jobs)}

        def ended(job: Any) -> None:  # a member has ended: Hydra's job machinery for it
            index = position[job.number]
            results[index] = self._member_ended(configs[index], job)

        for number, members in enumerate(packs, start=1):
            info = {"number": number, "of": len(packs)}
            try:
                refused, timing = run_pack([jobs[i] for i in members], info, ended)
            except Exception as error:  # noqa: BLE001 - its runs still train, one by one
                unfinished = [i for i in members if i not in results]
                reason = " ".join(f"{type(error).__name__}: {error}".split())[:300]
                log.error(
                    f"pack {number}/{len(packs)} failed ({reason}); its {len(unfinished)} "
                    "unfinished runs train one by one"
                )
                waiting.update(unfinished)
                continue
            waiting.update(position[job.number] for job in refused)
            if timing is not None and timing.epochs:
                log.info(_pack_line(number, len(packs), timing))
        for index in sorted(waiting):
            results[index] = self._run(configs[index])
        return [results[i] for i in range(len(jobs))]

    def _job_config(self, number: int, overrides: Sequence[str]) -> DictConfig:
        """The job's composed config, as the basic launcher composes it, with its output dir."""
        assert self.config is not None and self.hydra_context is not None
        config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(config):
            config.hydra.job.id = number
            config.hydra.job.num = number
        previous = HydraConfig.instance().cfg
        try:
            HydraConfig.instance().set_config(config)
            folder = Path(str(OmegaConf.select(config, "hydra.sweep.dir")))
            folder = folder / str(OmegaConf.select(config, "hydra.sweep.subdir"))
            with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
                config.hydra.runtime.output_dir = os.path.abspath(folder)
        finally:
            HydraConfig.instance().cfg = previous
        return config

    @staticmethod
    def _pack_job(config: DictConfig) -> Any:
        from fitscope.train.pack_runner import PackJob

        task = copy.deepcopy(config)
        with read_write(task), open_dict(task):
            del task["hydra"]
        overrides = OmegaConf.to_container(config.hydra.overrides.task)
        choices = {
            k: v for k, v in config.hydra.runtime.choices.items() if not k.startswith("hydra/")
        }
        number = int(config.hydra.job.num)
        log_file, log_format = _job_log(config)
        return PackJob(
            cfg=task,
            out_dir=Path(config.hydra.runtime.output_dir),
            overrides=list(overrides),
            choices=choices,
            label=f"#{number} {' '.join(overrides)}".strip(),
            number=number,
            prepare=lambda: _save_job_files(config, task),
            log_file=log_file,
            log_format=log_format,
        )

    def _run(self, config: DictConfig, task_function: TaskFunction | None = None) -> JobReturn:
        """Hydra's job machinery for one job: with `src/run.py`'s task, the job runs as the
        basic launcher runs it."""
        assert self.config is not None and self.hydra_context is not None
        result = run_job(
            hydra_context=self.hydra_context,
            task_function=task_function or self.task_function,
            config=config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return result

    def _member_ended(self, config: DictConfig, job: Any) -> JobReturn:
        """A pack member has ended: its job's Hydra files, run.log line, callbacks and result."""
        from fitscope.rundir import display_path
        from fitscope.train.console import Console

        summary = job.summary

        def ended(cfg: DictConfig) -> float:
            console = Console(str(cfg.trainer.console), True, int(summary.get("epochs", 0)))
            console.finished(job.label, summary, display_path(job.out_dir))
            if summary["status"] == "failed":
                raise CompactHydraException(str(summary.get("error")))
            best = summary.get("best")
            return best["val_loss"] if best else float("inf")

        return self._run(config, ended)


def _save_job_files(config: DictConfig, task: DictConfig) -> None:
    """The job's `.hydra/` files (config, hydra, overrides), as Hydra writes them when a job
    starts; fitscope writes them (`hydra.output_subdir` is null), once the member's folder is
    locked and its run is to be trained."""
    from fitscope.rundir import write_hydra_files

    hydra = OmegaConf.masked_copy(config, "hydra")
    write_hydra_files(
        Path(config.hydra.runtime.output_dir), task, hydra, config.hydra.overrides.task
    )


def _job_log(config: DictConfig) -> tuple[Path | None, tuple[str | None, str | None]]:
    """The job's log file (`hydra.job_logging`'s file handler: run.log) and its line format;
    (None, ...) when the job logging has no file."""
    handler = OmegaConf.select(config, "hydra.job_logging.handlers.file", default=None)
    if handler is None or handler.get("filename") is None:
        return None, (None, None)
    formatter = OmegaConf.select(
        config, f"hydra.job_logging.formatters.{handler.get('formatter', 'simple')}", default={}
    )
    return Path(str(handler.filename)), (formatter.get("format"), formatter.get("datefmt"))


def _refused_or_done(job: Any) -> bool:
    """True when the job is refused by validation or its folder holds its completed run (the
    task says so in a line, at once)."""
    from fitscope.rundir import completed_summary
    from fitscope.train.settings import validate

    try:
        validate(job.cfg)
    except Exception:  # noqa: BLE001
        return True
    return completed_summary(job.out_dir) is not None


def _pack_line(number: int, packs: int, timing: Any) -> str:
    """The pack's line: members, time per epoch, per member-epoch, how the steps ran."""
    per_epoch = timing.seconds / max(timing.epochs, 1)
    per_member = 1000 * timing.train_seconds / max(timing.member_epochs, 1)
    return (
        f"pack {number}/{packs}: {timing.members} runs, {timing.epochs} "
        f"epoch{'' if timing.epochs == 1 else 's'} in "
        f"{timing.seconds:.1f}s ({per_epoch:.2f}s per epoch; training {per_member:.1f} ms per "
        f"member-epoch, {'CUDA graph' if timing.compile == 'graph' else 'eager'} steps)"
    )
