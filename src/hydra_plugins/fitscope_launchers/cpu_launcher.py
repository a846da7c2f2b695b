"""`hydra/launcher=cpu`: Hydra's joblib launcher, with the longest runs handed out first.

The runs of a sweep differ in length (a 784-400-400-400 MLP trains ten times longer than a
784-100 one). joblib hands them to its workers in the sweep's order, so the longest may start
last while the other workers sit idle until it ends. `CpuLauncher` hands them out longest first
(the longest-processing-time rule), estimating each run's work from its composed config
(`run_work`), and changes nothing else: job numbers, run folders, the returned results' order.
It also starts no more workers than the sweep has runs, and gives each worker its share of the
cores as threads (cores // workers), so a sweep of fewer runs than cores still uses them all.

Hydra imports every module of `hydra_plugins` when it starts, so this one imports joblib and
the joblib launcher's internals (a private module: fitscope pins the plugin's minor version)
only when a sweep is launched.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, filter_overrides, setup_globals
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher

log = logging.getLogger(__name__)

# (features, samples) per dataset, for estimating a run's work; other datasets count as MNIST.
DATASET_SIZES = {"digits": (64, 1_797), "mnist5k": (784, 5_000)}
MNIST_SIZE = (784, 70_000)


def run_work(config: Any) -> float:
    """A run's work in multiply-adds, roughly: weights x samples trained on (epochs x training
    samples, or `trainer.steps` x batch size)."""
    features, samples = DATASET_SIZES.get(config.data.name, MNIST_SIZE)
    depth, width = int(config.model.depth), int(config.model.width)
    classes = 10
    if depth == 0:
        weights = features * classes
    else:
        weights = features * width + (depth - 1) * width * width + width * classes
    steps = config.trainer.get("steps")
    trained = (
        steps * config.trainer.batch_size
        if steps
        else config.trainer.epochs * samples * (1 - config.data.get("val_fraction", 0.1))
    )
    return float(weights * trained)


def longest_first(launcher: JoblibLauncher, job_overrides: Sequence[Sequence[str]]) -> list[int]:
    """The jobs' indices, the most work first; ties keep the sweep's order, and configs that
    cannot be composed (they fail at once in their job) go last."""
    work = []
    for overrides in job_overrides:
        try:
            config = launcher.hydra_context.config_loader.load_sweep_config(
                launcher.config, list(overrides)
            )
            work.append(run_work(config))
        except Exception:  # noqa: BLE001 - the job itself reports what is wrong
            work.append(0.0)
    return sorted(range(len(job_overrides)), key=lambda i: -work[i])


def mark_interrupted(sweep_dir: Path, stop: KeyboardInterrupt, wait_s: float = 10.0) -> None:
    """After an interrupt, the runs of the sweep that still say `running` once no worker holds
    them (a worker killed before it could say so) say `failed` (interrupted), with a line
    each."""
    from fitscope.rundir import SUMMARY_FILE, display_path, mark_ended
    from fitscope.signals import interrupt_reason  # no torch: the parent process has none

    reason = interrupt_reason(stop)
    pending = [p.parent for p in sweep_dir.glob(f"*/{SUMMARY_FILE}") if _summary(p.parent)]
    pending = [run_dir for run_dir in pending if _summary(run_dir).get("status") == "running"]
    deadline = time.monotonic() + wait_s
    while pending and time.monotonic() < deadline:
        still = []
        for run_dir in pending:
            if mark_ended(run_dir, reason) == "running":  # a live worker holds it yet
                still.append(run_dir)
            elif "finished_at" not in _summary(run_dir):  # marked here, not by its worker
                log.warning(f"{display_path(run_dir)}: interrupted; its summary.json says failed")
        pending = still
        if pending:
            time.sleep(0.2)


def _summary(run_dir: Path) -> dict:
    from fitscope.rundir import SUMMARY_FILE, RunFolderError, read_summary

    try:
        return read_summary(run_dir / SUMMARY_FILE) or {}
    except RunFolderError:
        return {}


class CpuLauncher(JoblibLauncher):
    """Hydra's joblib launcher (same settings: `n_jobs`, `batch_size`, ...) that hands out the
    longest runs first. Adapted from `hydra_joblib_launcher._core.launch`."""

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        from hydra_plugins.hydra_joblib_launcher._core import execute_job, process_joblib_cfg
        from joblib import Parallel, cpu_count, delayed, parallel_config

        setup_globals()
        assert self.config is not None and self.task_function is not None
        assert self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        joblib_cfg = dict(self.joblib)
        joblib_cfg.pop("backend", None)  # loky, below: threads are incompatible with Hydra
        process_joblib_cfg(joblib_cfg)
        cores = cpu_count()
        workers = int(joblib_cfg.get("n_jobs") or -1)
        workers = max(1, cores + 1 + workers if workers < 0 else workers)
        workers = min(workers, max(1, len(job_overrides)))
        joblib_cfg["n_jobs"] = workers
        threads = max(1, cores // workers)
        log.info(
            f"Joblib.Parallel({','.join(f'{k}={v}' for k, v in joblib_cfg.items())}) is launching "
            f"{len(job_overrides)} jobs, the longest first, {threads} thread(s) each"
        )
        log.info(f"Launching jobs, sweep output dir : {sweep_dir}")
        for idx, overrides in enumerate(job_overrides):
            log.info(f"\t#{initial_job_idx + idx} : {' '.join(filter_overrides(overrides))}")
        # with a worker per run, every run starts at once: no order to choose
        order = (
            longest_first(self, job_overrides)
            if len(job_overrides) > workers
            else list(range(len(job_overrides)))
        )
        singleton_state = Singleton.get_state()
        # the sweep's own config in this process, whose jobs run in workers: what src/run.py's
        # line after Ctrl-C or SIGTERM reads the sweep folder from
        HydraConfig.instance().set_config(self.config)
        try:
            with parallel_config(backend="loky", inner_max_num_threads=threads):
                results = Parallel(**joblib_cfg)(
                    delayed(execute_job)(
                        initial_job_idx + idx,
                        job_overrides[idx],
                        self.hydra_context,
                        self.config,
                        self.task_function,
                        singleton_state,
                    )
                    for idx in order
                )
        except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM: no run is left saying running
            mark_interrupted(sweep_dir, stop)
            raise
        runs: list[JobReturn] = [None] * len(job_overrides)  # type: ignore[list-item]
        for idx, result in zip(order, results, strict=True):
            runs[idx] = result
        return runs
