"""`hydra/launcher=cpu`: Hydra's joblib launcher, with the longest runs handed out first.

The runs of a sweep differ in length (a 784-400-400-400 MLP trains ten times longer than a
784-100 one). joblib hands them to its workers in the sweep's order, so the longest may start
last while the other workers sit idle until it ends. `CpuLauncher` hands them out longest first
(the longest-processing-time rule), estimating each run's work from its composed config
(`run_work`), and changes nothing else: job numbers, run folders, the returned results' order.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, filter_overrides, setup_globals
from hydra_plugins.hydra_joblib_launcher._core import execute_job, process_joblib_cfg
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher
from joblib import Parallel, delayed

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
    """The jobs' indices, the most work first (ties and configs that cannot be composed, which
    fail at once in their job, keep the sweep's order)."""
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


class CpuLauncher(JoblibLauncher):
    """Hydra's joblib launcher (same settings: `n_jobs`, `batch_size`, ...) that hands out the
    longest runs first. Adapted from `hydra_joblib_launcher._core.launch`."""

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        setup_globals()
        assert self.config is not None and self.task_function is not None
        assert self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        joblib_cfg = self.joblib
        joblib_cfg["backend"] = "loky"  # threads are incompatible with Hydra
        process_joblib_cfg(joblib_cfg)
        log.info(
            "Joblib.Parallel({}) is launching {} jobs, the longest first".format(
                ",".join(f"{k}={v}" for k, v in joblib_cfg.items()), len(job_overrides)
            )
        )
        log.info(f"Launching jobs, sweep output dir : {sweep_dir}")
        for idx, overrides in enumerate(job_overrides):
            log.info(f"\t#{initial_job_idx + idx} : {' '.join(filter_overrides(overrides))}")
        order = longest_first(self, job_overrides)
        singleton_state = Singleton.get_state()
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
        runs: list[JobReturn] = [None] * len(job_overrides)  # type: ignore[list-item]
        for idx, result in zip(order, results, strict=True):
            runs[idx] = result
        return runs
