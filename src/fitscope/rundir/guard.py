"""What fitscope checks before it writes into a run folder or skips one as done. No torch.

- `check_run_folder`: a run folder that is a symlink, or whose files are symlinks, FIFOs or
  devices, is someone else's doing: fitscope writes into it through nothing it did not make,
  and says so in one line instead.
- `completed_problems`: "completed" in summary.json is a claim. A completed run is whole when
  its folder holds what its summary says: metrics.csv up to the last epoch it ran, best.pt with
  the checksum recorded when it was written, config.yaml of the config hash it recorded. Resume
  and the report ask the same question and give the same answer.
- `set_aside`: the files of a run that is not whole, moved into `.replaced-<time>/` in its own
  folder before it is trained again: nothing already written is lost.
"""

from __future__ import annotations

import errno
import hashlib
import math
import os
import stat
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from fitscope.config import container_hash
from fitscope.rundir.files import DamagedFileError, RunFolderError, load_yaml, read_text
from fitscope.rundir.names import (
    ASIDE_PREFIX,
    CHECKPOINT_FILE,
    CONFIG_FILE,
    HYDRA_DIR,
    LOCK_FILE,
    LOG_FILE,
    METRICS_FILE,
    SUMMARY_FILE,
    display_path,
)

# the files fitscope writes into a run folder, and Hydra's record of the job
RUN_FILES = (LOCK_FILE, SUMMARY_FILE, METRICS_FILE, CONFIG_FILE, CHECKPOINT_FILE, LOG_FILE)
FOLDERS = (HYDRA_DIR, "tensorboard")  # the folders a run writes into (logger=tensorboard)
HYDRA_FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")


def _kind(mode: int) -> str | None:
    """What a file is when it is not a regular file: `a symlink`, `a FIFO`, ..."""
    if stat.S_ISLNK(mode):
        return "a symlink"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a folder"
    return None


def check_run_folder(run_dir: Path) -> None:
    """`RunFolderError` (one line naming the path) when fitscope may not write into `run_dir`:
    the folder is a symlink, or one of the files it writes there is not a regular file (a
    symlink, a FIFO, a device, a folder). A folder that does not exist yet is fine."""
    if run_dir.is_symlink():
        raise RunFolderError(
            f"{display_path(run_dir)}: the run folder is a symlink (to {os.readlink(run_dir)}); "
            "fitscope never writes through a link it did not make: remove the link, or run "
            "into another folder"
        )
    names = [*RUN_FILES, *FOLDERS, *(f"{HYDRA_DIR}/{name}" for name in HYDRA_FILES)]
    for name in names:
        try:
            mode = os.lstat(run_dir / name).st_mode
        except (FileNotFoundError, NotADirectoryError):
            continue
        kind = _kind(mode)
        if kind is not None and not (name in FOLDERS and kind == "a folder"):
            target = f" (to {os.readlink(run_dir / name)})" if kind == "a symlink" else ""
            raise RunFolderError(
                f"{display_path(run_dir / name)} is {kind}{target}, not a file fitscope wrote: "
                "the run is not trained into this folder; remove it, or run into another folder"
            )


def checksum(path: Path) -> str:
    """The SHA-256 of a regular file, read without following a symlink (`DamagedFileError`
    otherwise)."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise
    except OSError as error:
        what = "a symlink" if error.errno == errno.ELOOP else (error.strerror or str(error))
        raise DamagedFileError(f"{path.name}: {what}: not read") from None
    digest = hashlib.sha256()
    with os.fdopen(fd, "rb") as file:
        kind = _kind(os.fstat(fd).st_mode)
        if kind is not None:
            raise DamagedFileError(f"{path.name}: {kind}, not a regular file: not read")
        os.set_blocking(fd, True)
        for block in iter(lambda: file.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def completed_problems(
    run_dir: Path, summary: Mapping[str, Any], metrics: pd.DataFrame | RunFolderError
) -> list[str]:
    """What in `run_dir` contradicts its summary's claim to be completed (one line each);
    empty when it is whole. Checks what the summary records: `epochs_run` against `metrics`
    (its metrics.csv as the caller read it, or why it could not), `best` and
    `checkpoint_sha256` against best.pt, `config_hash` against config.yaml."""
    problems = []
    ran = summary.get("epochs_run")
    if isinstance(ran, int) and not isinstance(ran, bool):
        if isinstance(metrics, RunFolderError):
            problems.append(str(metrics))
        else:
            last = int(metrics["epoch"].max()) if len(metrics) else None
            if last != ran:
                held = "no epoch" if last is None else f"epochs up to {last}"
                problems.append(f"summary.json says {ran} epochs ran, metrics.csv holds {held}")
            else:
                problems += _lying_losses(summary, metrics)
    if isinstance(summary.get("best"), dict):
        problems += _checkpoint_problems(run_dir / CHECKPOINT_FILE, summary)
    recorded = summary.get("config_hash")
    if isinstance(recorded, str):
        try:
            config = load_yaml(read_text(run_dir / CONFIG_FILE, CONFIG_FILE), CONFIG_FILE)
            found = container_hash(config) if isinstance(config, dict) else "not a mapping"
        except FileNotFoundError:
            found = "missing"
        except RunFolderError as error:
            problems.append(str(error))
            found = recorded
        if found != recorded:
            problems.append(
                f"config.yaml ({found}) is not the config summary.json records (hash {recorded})"
            )
    return problems


def _lying_losses(summary: Mapping[str, Any], metrics: pd.DataFrame) -> list[str]:
    """The best and last validation losses summary.json records, against metrics.csv's rows
    of those epochs (both are written from the same numbers)."""
    rows = {"last": metrics.iloc[-1]}
    best_epoch = summary.get("best_epoch")
    if isinstance(best_epoch, int) and not isinstance(best_epoch, bool):
        found = metrics[metrics["epoch"] == best_epoch]
        rows["best"] = found.iloc[-1] if len(found) else None
    problems = []
    for name, row in rows.items():
        recorded = summary.get(name)
        if not isinstance(recorded, dict) or not isinstance(recorded.get("val_loss"), float):
            continue
        if row is None:
            problems.append(f"summary.json's best epoch {best_epoch} is not in metrics.csv")
            continue
        held = float(row["val_loss"])
        if not math.isclose(held, recorded["val_loss"], rel_tol=1e-6) and not (
            math.isnan(held) and math.isnan(recorded["val_loss"])
        ):
            where = f"epoch {best_epoch}" if name == "best" else "the last epoch"
            problems.append(
                f"summary.json's {name} val_loss {recorded['val_loss']:.6g} is not metrics.csv's "
                f"{held:.6g} at {where}"
            )
    return problems


def _checkpoint_problems(path: Path, summary: Mapping[str, Any]) -> list[str]:
    try:
        found = checksum(path)
    except FileNotFoundError:
        return [f"{CHECKPOINT_FILE} is missing, though summary.json records a best epoch"]
    except RunFolderError as error:
        return [str(error)]
    recorded = summary.get("checkpoint_sha256")
    if isinstance(recorded, str) and found != recorded:
        return [f"{CHECKPOINT_FILE} does not match the checksum recorded when it was written"]
    return []


def set_aside(run_dir: Path) -> Path:
    """Move every file of `run_dir` (its lock and earlier set-aside folders excepted) into a
    new `.replaced-<time>/` folder in it; return that folder. Links are moved as links."""
    aside = run_dir / f"{ASIDE_PREFIX}{datetime.now():%Y%m%d-%H%M%S-%f}"
    aside.mkdir()
    for entry in os.scandir(run_dir):
        if entry.name == LOCK_FILE or entry.name.startswith(ASIDE_PREFIX):
            continue
        os.rename(entry.path, aside / entry.name)
    return aside
