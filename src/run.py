"""fitscope's command line: `python src/run.py [-m] [group=option ...] [key=value ...]`.

One job trains one MLP into its own run folder under multirun/. `--help` lists every key.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from fitscope import FitscopeError
from fitscope.conf_keys import command_line_problem, default_options, help_text
from fitscope.config import ConfigError
from fitscope.rundir import (
    ENTRY_POINT,
    LOCK_FILE,
    display_path,
    hydra_quoted,
    os_error_line,
    run_lock,
    write_hydra_files,
)
from fitscope.signals import EXIT_CODE as TERMINATED_EXIT
from fitscope.signals import Terminated, terminate_as_interrupt

# What a refused job's folder may hold and still be removed: Hydra's record of a job (written by
# fitscope only for a run it trains, so present here only in folders of older versions).
HYDRA_FILES = {".hydra": {"config.yaml", "hydra.yaml", "overrides.yaml"}, "run.log": None}
# Where the interrupted job was, for the line printed when Ctrl-C ends the process.
_JOB: dict[str, str] = {}


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """Train one run; returns its best validation loss (inf when it has none), the value that
    hyperparameter sweepers such as hparams_search=lr_optuna minimize."""
    hydra_cfg = HydraConfig.get()
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    overrides = OmegaConf.to_container(hydra_cfg.overrides.task)  # as typed: ${...} unresolved
    choices = {k: v for k, v in hydra_cfg.runtime.choices.items() if not k.startswith("hydra/")}
    label = f"#{hydra_cfg.job.num} {' '.join(overrides)}".strip() if in_sweep else "run"
    out_dir = Path(hydra_cfg.runtime.output_dir)
    folder = hydra_cfg.sweep.dir if in_sweep else display_path(out_dir)
    _JOB.update(key="hydra.sweep.dir" if in_sweep else "hydra.run.dir", folder=folder)
    terminate_as_interrupt()  # in a parallel launcher's worker too: SIGTERM ends a run as Ctrl-C
    # torch is imported here, for a job that trains: --help, --cfg and refusals start quicker
    from fitscope.train.runner import run
    from fitscope.train.settings import gpu_slot

    def prepare() -> None:  # Hydra's record of a job, for a run that is trained (not skipped)
        hydra_node = OmegaConf.masked_copy(OmegaConf.create({"hydra": hydra_cfg}), "hydra")
        write_hydra_files(out_dir, cfg, hydra_node, hydra_cfg.overrides.task)

    try:
        # a single run has no job number (hydra.job.num is ???)
        slot = gpu_slot(str(hydra_cfg.launcher._target_), hydra_cfg.job.num) if in_sweep else None
        summary = run(cfg, out_dir, overrides, choices, in_sweep, label, slot, prepare)
    except FitscopeError as error:
        if isinstance(error, ConfigError):  # refused before any work: no run folder stays
            _remove_fresh_job_folder(out_dir, remove_parent=not in_sweep)
        # One line, no traceback (Hydra prints compact errors as they are).
        raise CompactHydraException(str(error)) from None
    except OSError as error:  # the machine says no (disk full, read-only, ...): one line
        raise CompactHydraException(f"{label}: failed: {os_error_line(error)}") from None
    best = summary.get("best")
    return best["val_loss"] if best else float("inf")


def output_folder_problem(argv: list[str]) -> str | None:
    """One line when the folder the runs go to cannot be made (a part of its path is a file, a
    read-only or full file system, a name too long): `hydra.run.dir=` or `hydra.sweep.dir=` as
    given, else multirun/ (the default's first folder). Checked by making it, as Hydra would."""
    if {"--cfg", "-c", "--info", "-i", "--resolve"} & set(argv):
        return None  # nothing is run
    keys = ("hydra.run.dir=", "hydra.sweep.dir=")
    given = [a for a in argv if a.startswith(keys)]
    folder = "multirun"
    if given:
        try:
            folder = str(OverridesParser.create().parse_override(given[-1]).value())
        except Exception:  # noqa: BLE001 - Hydra says what is wrong with the override
            return None
    if "${" in folder:
        return None  # Hydra resolves it, and says what is wrong
    path = Path(folder)
    made = [p for p in (path, *path.parents) if not os.path.lexists(p)]
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return f"cannot write runs there: {os_error_line(error)}"
    for part in made:  # a check, not a change: Hydra makes them when the runs start
        with contextlib.suppress(OSError):
            part.rmdir()
    return None


def _remove_fresh_job_folder(folder: Path, remove_parent: bool) -> None:
    """Remove a job folder that holds only what Hydra wrote before the job started (so nothing
    of a user's or of an earlier run), and a single run's time and date folders left empty."""
    cwd = Path.cwd().resolve()
    if folder.resolve() in (cwd, *cwd.parents):  # hydra.run.dir=. : never the working folder
        return
    try:
        with run_lock(folder):  # not while another process trains it
            entries = {p.name: p for p in folder.iterdir() if p.name != LOCK_FILE}
            if not set(entries) <= set(HYDRA_FILES):
                return
            hydra_dir = entries.get(".hydra")
            if hydra_dir and not {p.name for p in hydra_dir.iterdir()} <= HYDRA_FILES[".hydra"]:
                return
            shutil.rmtree(folder)
        # a single run's <time> folder, then its <date> folder, when it left them empty
        time_dir = folder.parent
        if remove_parent and re.fullmatch(r"\d\d-\d\d-\d\d(\.\d+)?", time_dir.name):
            time_dir.rmdir()  # OSError when not empty
            if re.fullmatch(r"\d{4}-\d\d-\d\d", time_dir.parent.name):
                time_dir.parent.rmdir()
    except (OSError, FitscopeError):  # locked by another process, a link, the machine's no
        pass  # left as it is: the error line says what went wrong


def _sweep_of_this_command() -> str | None:
    """The sweep folder of this multirun command, once Hydra has composed it (a launcher that
    trains outside the task function, such as the packed one, never sets `_JOB`)."""
    try:
        hydra_cfg = HydraConfig.get()
        return str(hydra_cfg.sweep.dir) if hydra_cfg.mode == RunMode.MULTIRUN else None
    except Exception:  # noqa: BLE001 - not composed yet: the general line
        return None


def _interrupted() -> str:
    """The line for Ctrl-C: how to go on and, for a sweep, how to build its report."""
    sweep = None if _JOB else _sweep_of_this_command()
    if sweep is not None:
        _JOB.update(key="hydra.sweep.dir", folder=sweep)
    if not _JOB:  # before the first run, or runs in other processes (a parallel launcher)
        return (
            "interrupted; a sweep goes on where it stopped when you run the same command with "
            "hydra.sweep.dir=<its folder>"
        )
    args = [a for a in sys.argv[1:] if not a.startswith(f"{_JOB['key']}=")]
    folder = f"{_JOB['key']}={hydra_quoted(_JOB['folder'])}"  # for Hydra's lexer, then the shell's
    again = shlex.join([*ENTRY_POINT.split(), *args, folder])
    if _JOB["key"] == "hydra.run.dir":
        return f"interrupted; to run it again into the same folder: {again}"
    report = shlex.join(["python", "src/report.py", display_path(Path(_JOB["folder"]))])
    return (
        f"sweep interrupted; to finish it (completed runs are skipped): {again} ; "
        f"its report so far: {report}"
    )


CONF = Path(__file__).resolve().parent.parent / "conf"

if __name__ == "__main__":
    if {"--help", "-h"} & set(sys.argv[1:]):  # every key of every group, with its comment
        print(help_text(CONF, default_options(CONF)))
        sys.exit(0)
    problem = command_line_problem(sys.argv[1:], CONF) or output_folder_problem(sys.argv[1:])
    if problem:  # a misspelled key, before Hydra composes (and advises +key=value); a folder
        print(problem, file=sys.stderr)  # Hydra could not make (it would print a traceback)
        sys.exit(1)
    terminate_as_interrupt()
    try:
        main()
    except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM (`Terminated`)
        print(_interrupted(), file=sys.stderr)
        sys.exit(TERMINATED_EXIT if isinstance(stop, Terminated) else 130)
