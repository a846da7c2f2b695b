"""The run folder: the one interface between training and reporting. This module owns its
format, both sides of it: what the trainer writes and how the report reads it back. No torch.

A run folder holds (names below):
- `metrics.csv`: one row per epoch, `EPOCH_COLUMNS` then the diagnostics' columns
  (`layer_column`), flushed as each epoch ends, so a killed run keeps its finished epochs;
- `summary.json`: status (`running`, `completed`, `diverged`, `failed`) and results, rewritten
  atomically (never half-written);
- `config.yaml`: the resolved config; `.hydra/`: Hydra's own record;
- `best.pt`: the best epoch's weights (written and loaded by `fitscope.train.models`);
- `.lock`: locked (an OS lock, `run_lock`) by the process that trains the run, so two processes
  never write one run folder; it names that process.

Readers are tolerant: a missing, empty, cut-short or unreadable file is a problem of that run,
reported with it, never an exception that stops a report.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import secrets
import shlex
import socket
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import OmegaConf

from fitscope import FitscopeError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

METRICS_FILE = "metrics.csv"
SUMMARY_FILE = "summary.json"
CONFIG_FILE = "config.yaml"
CHECKPOINT_FILE = "best.pt"
SWEEP_FILE = "multirun.yaml"  # in a sweep folder: Hydra's record of the sweep's config
LOCK_FILE = ".lock"
RUN_MARKERS = (SUMMARY_FILE, METRICS_FILE, ".hydra")

EPOCH_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")
SPLIT_METRICS = ("train_loss", "train_acc", "val_loss", "val_acc")
# Per-layer diagnostics: `<measure>_<layer>`, layers `1`, `2`, ... from the input, `out` last.
LAYER_MEASURES = ("grad_norm", "act_mean", "act_std", "dead", "saturated")
GRADIENT_COLUMNS = ("grad_norm_total", "clip_fraction")
_LAYER_COLUMN = re.compile(rf"^({'|'.join(LAYER_MEASURES)})_(\d+|out)$")
ENTRY_POINT = "python src/run.py"


def layer_column(measure: str, layer: str) -> str:
    """The metrics.csv column of a per-layer measure, e.g. `grad_norm_1`, `dead_2`."""
    return f"{measure}_{layer}"


def parse_layer_column(column: str) -> tuple[str, str] | None:
    """(measure, layer) of a per-layer column, None for any other column."""
    match = _LAYER_COLUMN.match(column)
    return (match.group(1), match.group(2)) if match else None


def rerun_command(overrides: Sequence[str]) -> str:
    """The command line that repeats a run with these overrides."""
    return " ".join([ENTRY_POINT, *(shlex.quote(o) for o in overrides)])


def display_path(path: Path) -> str:
    """`path` relative to the working directory when it lies below it, as a user would type it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# ----------------------------------------------------------------------------------- writing


class RunLocked(FitscopeError):
    """Another process trains this run folder."""


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold `run_dir`'s lock while training it; `RunLocked` (naming the holder) when another
    process holds it. An OS lock (flock): the kernel releases it when its process ends, however
    it ends, so a killed run never blocks the next attempt. Where the OS has no flock (Windows)
    the run is not locked."""
    path = run_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = path.read_text(errors="replace").strip() or "another process"
                raise RunLocked(f"{display_path(run_dir)} is being trained by {holder}") from None
        os.ftruncate(fd, 0)
        since = datetime.now().astimezone().isoformat(timespec="seconds")
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {since}\n".encode())
        yield
    finally:
        os.close(fd)  # releases the lock


class MetricsWriter:
    """Appends epoch rows to `metrics.csv`, flushing each one to the file system."""

    def __init__(self, path: Path, columns: Sequence[str]) -> None:
        self._file = open(path, "w", newline="")  # noqa: SIM115 (closed by close())
        self._writer = csv.DictWriter(self._file, fieldnames=list(columns))
        self._writer.writeheader()
        self._file.flush()

    def write(self, row: Mapping[str, Any]) -> None:
        self._writer.writerow(row)
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Write `data` as JSON so that readers see the old file or the new one, never a part. The
    file gets the permissions of any file this process creates (0644 under the usual umask):
    the temporary file is opened like one, not with tempfile's private 0600."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "x") as file:
            json.dump(data, file, indent=2, allow_nan=False, default=str)
            file.write("\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_config(cfg: Any, run_dir: Path) -> None:
    """The run's resolved config as `config.yaml`."""
    OmegaConf.save(cfg, run_dir / CONFIG_FILE, resolve=True)


def finite_or_none(value: float | None) -> float | None:
    """JSON has no NaN or infinity: those become null."""
    if value is None or value != value or value in (float("inf"), float("-inf")):
        return None
    return value


# ----------------------------------------------------------------------------------- reading


class RunFolderError(FitscopeError):
    pass


def read_json(path: Path) -> dict[str, Any]:
    with open(path) as file:
        return json.load(file)


def completed_summary(run_dir: Path) -> dict[str, Any] | None:
    """The run folder's summary if it records a completed run, else None."""
    try:
        summary = read_json(run_dir / SUMMARY_FILE)
    except (OSError, ValueError):
        return None
    return summary if summary.get("status") == "completed" else None


def _natural_key(path: Path) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def find_run_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """Every run folder in or under `paths` (a run folder holds summary.json, metrics.csv or
    .hydra/), in natural order (job 2 before job 10)."""
    found: set[Path] = set()
    for given in paths:
        path = Path(given)
        if not path.is_dir():
            raise RunFolderError(f"{path}: no such folder")
        if any((path / marker).exists() for marker in RUN_MARKERS):
            found.add(path.resolve())
            continue
        runs = {m.parent.resolve() for marker in RUN_MARKERS for m in path.rglob(marker)}
        if not runs:
            raise RunFolderError(
                f"{path}: no run folders in it (a run folder holds {', '.join(RUN_MARKERS)})"
            )
        found |= runs
    return sorted(found, key=_natural_key)


def read_metrics(path: Path) -> pd.DataFrame:
    """Epoch rows of a metrics.csv. A last line cut short (a run killed while writing it) is
    left out; a missing or empty file gives no rows."""
    empty = pd.DataFrame(columns=["epoch", *SPLIT_METRICS])
    try:
        text = path.read_text()
    except FileNotFoundError:
        return empty
    text = text[: text.rfind("\n") + 1]  # rows always end with a newline
    try:
        frame = pd.read_csv(io.StringIO(text), on_bad_lines="skip")
    except pd.errors.EmptyDataError:
        return empty
    if not {"epoch", *SPLIT_METRICS} <= set(frame.columns):
        return empty
    frame = frame.apply(pd.to_numeric, errors="coerce")
    return frame.dropna(subset=["epoch"]).astype({"epoch": int}).reset_index(drop=True)


def read_config(run_dir: Path) -> dict[str, Any]:
    """A run's resolved config, as nested containers (empty if it has none)."""
    for path in (run_dir / CONFIG_FILE, run_dir / ".hydra" / "config.yaml"):
        if path.is_file():
            return OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    return {}


def read_choices(run_dir: Path, summary: Mapping[str, Any] | None) -> dict[str, str]:
    """The config group options a run was composed from, e.g. {"activation": "relu"}."""
    if summary and summary.get("choices"):
        return dict(summary["choices"])
    hydra_file = run_dir / ".hydra" / "hydra.yaml"
    if hydra_file.is_file():
        choices = OmegaConf.load(hydra_file).hydra.runtime.choices
        return {k: v for k, v in choices.items() if not k.startswith("hydra/")}
    return {}


def read_overrides(run_dir: Path, summary: Mapping[str, Any] | None) -> list[str]:
    """The command-line overrides a run was started with."""
    if summary and "overrides" in summary:
        return list(summary["overrides"])
    overrides = run_dir / ".hydra" / "overrides.yaml"
    return list(OmegaConf.load(overrides)) if overrides.is_file() else []


def read_sweep_section(sweep_dir: Path, section: str) -> dict[str, Any] | None:
    """One section (e.g. `report`) of a sweep folder's multirun.yaml; None when it has none or
    the file cannot be read."""
    path = sweep_dir / SWEEP_FILE
    try:
        node = OmegaConf.load(path).get(section) if path.is_file() else None
    except Exception:  # an unreadable multirun.yaml is as good as none
        return None
    return OmegaConf.to_container(node, resolve=True) if node is not None else None


@dataclass
class RunRecord:
    """One run folder as read from disk."""

    path: Path
    summary: dict[str, Any] | None
    metrics: pd.DataFrame
    config: dict[str, Any]
    choices: dict[str, str]
    overrides: list[str]
    problems: list[str] = field(default_factory=list)

    @property
    def command(self) -> str:
        """The command line that re-runs this run."""
        return (self.summary or {}).get("command") or rerun_command(self.overrides)

    @property
    def status(self) -> str:
        if self.summary is None:
            return "running"
        return self.summary.get("status", "running")


def read_run(path: Path) -> RunRecord:
    """Everything a run folder holds; what could not be read is listed in `problems`."""
    problems = []
    summary = None
    if (path / SUMMARY_FILE).is_file():
        try:
            summary = read_json(path / SUMMARY_FILE)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            problems.append(f"summary.json unreadable ({error})")
    else:
        problems.append("no summary.json: still running, or stopped before it was written")
    metrics = read_metrics(path / METRICS_FILE)
    if metrics.empty:
        reason = "missing" if not (path / METRICS_FILE).is_file() else "has no complete epoch"
        problems.append(f"metrics.csv {reason}")
    try:
        config = read_config(path)
    except Exception as error:  # a broken YAML file must not stop the whole report
        config, problems = {}, [*problems, f"config unreadable ({error})"]
    return RunRecord(
        path,
        summary,
        metrics,
        config,
        read_choices(path, summary),
        read_overrides(path, summary),
        problems,
    )
