"""`hydra/launcher=slurm`: Hydra's submitit SLURM launcher, waiting for every job of the sweep.

Hydra's `submitit_slurm` collects the jobs' results in job order and raises at the first job
that ended without one (cancelled with `scancel`, killed for its memory, out of time, its node
lost): the sweep command stops there with submitit's traceback while later jobs still run, and
the run of that job keeps `"status": "running"` in its summary.json for ever. `SlurmLauncher`
submits exactly as Hydra's does (one job array, the same sbatch parameters, the same folders),
then waits for every job. A job that ended without a result gets one line (its SLURM state,
its run folder, its log), its summary.json says `failed` with that state (when it still said
`running` and no process holds the run), and Hydra's callbacks hear of it as of any failed job.
Then Hydra ends as for any failed run: the report callback prints the command that builds the
report, and running the same command into the same `hydra.sweep.dir` runs only what is not
completed.

A job that SLURM requeues (preemption, `scontrol requeue`, or submitit's own requeue when it
gets the preemption signal) starts its run again from its first epoch in the same folder;
`metrics.csv` is written anew, so no epoch is there twice.

Hydra imports every module of `hydra_plugins` when it starts: without hydra-submitit-launcher
(the `launchers` extra) this module imports and defines nothing (the preset, whose defaults
name `submitit_slurm`, then cannot be composed: Hydra says it cannot load that config).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra.errors import CompactHydraException
from omegaconf import OmegaConf, open_dict

from fitscope.rundir import display_path, mark_ended

log = logging.getLogger(__name__)

try:
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import (
        SlurmLauncher as SubmititSlurmLauncher,
    )
except ImportError:  # the `launchers` extra is not installed
    SubmititSlurmLauncher = None


class JobEndedWithoutResult(CompactHydraException):
    """A SLURM job ended without returning its run's result (one line, no traceback)."""


def _state(job: Any) -> str:
    """The job's final SLURM state as sacct reports it (`CANCELLED by 0`, `TIMEOUT`, ...)."""
    try:
        return str(job.state)
    except Exception:  # sacct unavailable: submitit knows no state
        return "UNKNOWN"


def _reason(error: BaseException) -> str:
    """The last line of submitit's message: the exception the job's process died of."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


if SubmititSlurmLauncher is not None:

    class SlurmLauncher(SubmititSlurmLauncher):
        """Hydra's submitit SLURM launcher that waits for every job and records the jobs that
        ended without a result (see the module's docstring)."""

        def launch(
            self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
        ) -> Sequence[JobReturn]:
            jobs = self._submit(job_overrides, initial_job_idx)
            returns = []
            try:
                for idx, (job, overrides) in enumerate(
                    zip(jobs, job_overrides, strict=True), start=initial_job_idx
                ):
                    try:
                        returns.append(job.results()[0])
                    except Exception as error:  # UncompletedJobError, FailedJobError
                        returns.append(self._ended_without_result(job, idx, overrides, error))
            except KeyboardInterrupt:
                self._interrupted(jobs)
            return returns

        def _interrupted(self, jobs: Sequence[Any]) -> None:
            """Ctrl-C while waiting: the jobs go on in SLURM; say so, how to cancel them and
            how to build the report when they end, and exit (130) without a traceback."""
            assert self.config is not None
            sweep = display_path(Path(str(self.config.hydra.sweep.dir)))
            arrays = sorted({str(job.job_id).split("_")[0] for job in jobs})
            print(
                f"interrupted: the sweep's SLURM jobs go on without this command (job "
                f"{', '.join(arrays)}); to cancel them: scancel {' '.join(arrays)} ; "
                f"its report once they end: python src/report.py {sweep} ; running the same "
                f"command with hydra.sweep.dir={sweep} trains what is not completed by then",
                file=sys.stderr,
            )
            raise SystemExit(130)

        def _submit(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list:
            """Submit the sweep as one job array: the submission half of Hydra's
            `BaseSubmititLauncher.launch` (hydra-submitit-launcher 1.2), unchanged."""
            import submitit

            assert self.config is not None
            assert len(job_overrides) > 0
            init_params = {"folder": self.params["submitit_folder"]}
            specific_init_keys = {"max_num_timeout"}
            init_params.update(
                **{
                    f"{self._EXECUTOR}_{x}": y
                    for x, y in self.params.items()
                    if x in specific_init_keys
                }
            )
            init_keys = specific_init_keys | {"submitit_folder"}
            executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init_params)
            baseparams = set(OmegaConf.structured(BaseQueueConf).keys())
            params = {
                x if x in baseparams else f"{self._EXECUTOR}_{x}": y
                for x, y in self.params.items()
                if x not in init_keys
            }
            executor.update_parameters(**params)
            sweep_dir = Path(str(self.config.hydra.sweep.dir))
            log.info(f"Submitit '{self._EXECUTOR}' sweep output dir : {sweep_dir}")
            sweep_dir.mkdir(parents=True, exist_ok=True)
            if "mode" in self.config.hydra.sweep:
                os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
            job_params: list[Any] = []
            for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
                log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
                job_params.append(
                    (
                        list(overrides),
                        "hydra.sweep.dir",
                        idx,
                        f"job_id_for_{idx}",
                        Singleton.get_state(),
                    )
                )
            return executor.map_array(self, *zip(*job_params, strict=True))

        def _ended_without_result(
            self, job: Any, idx: int, overrides: Sequence[str], error: BaseException
        ) -> JobReturn:
            """One line for the job, its run marked `failed`, Hydra's callbacks told; the
            failed job's return value, which Hydra's sweeper raises when all jobs have ended."""
            assert self.config is not None and self.hydra_context is not None
            sweep_dir = Path(str(self.config.hydra.sweep.dir))
            config = self.hydra_context.config_loader.load_sweep_config(
                self.config, list(overrides)
            )
            with open_dict(config.hydra.job):  # the job's own config, as its process had it
                config.hydra.job.num = idx
            run_dir = sweep_dir / str(config.hydra.sweep.subdir)
            state = _state(job)
            cause = f"SLURM job {job.job_id} ended {state} without a result"
            if "CANCELLED" not in state and "TIMEOUT" not in state:
                cause += f" ({_reason(error)})"
            status = mark_ended(run_dir, cause, sent_sigterm=True)
            where = {
                None: "it left no run",
                "completed": f"its run in {display_path(run_dir)} had completed",
            }.get(status, f"its run folder {display_path(run_dir)} keeps the epochs it finished")
            label = f"#{idx} {' '.join(filter_overrides(overrides))}"
            log.error(
                f"{label}: {cause}; {where}; its log: {display_path(Path(job.paths.stderr))}. "
                f"To run it again, run the same command with "
                f"hydra.sweep.dir={display_path(sweep_dir)}"
            )
            job_return = JobReturn(
                overrides=list(overrides),
                cfg=config,
                working_dir=str(run_dir),
                task_name=str(self.config.hydra.job.name),
                status=JobStatus.FAILED,
                _return_value=JobEndedWithoutResult(f"{label}: {cause}"),
            )
            self.hydra_context.callbacks.on_job_end(config=config, job_return=job_return)
            return job_return
