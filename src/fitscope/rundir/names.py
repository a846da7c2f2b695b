"""The run folder's names: its files, the columns of metrics.csv, the statuses of
summary.json, and how a run's command line and path are written. No torch."""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from pathlib import Path

METRICS_FILE = "metrics.csv"
SUMMARY_FILE = "summary.json"
CONFIG_FILE = "config.yaml"
CHECKPOINT_FILE = "best.pt"
SWEEP_FILE = "multirun.yaml"  # in a sweep folder: Hydra's record of the sweep's config
LOCK_FILE = ".lock"
LOG_FILE = "run.log"  # the job's log (hydra.job_logging's file handler)
ASIDE_PREFIX = ".replaced-"  # a run's files set aside when resume finds them not whole
RUN_MARKERS = (SUMMARY_FILE, METRICS_FILE, ".hydra")

EPOCH_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")
SPLIT_METRICS = ("train_loss", "train_acc", "val_loss", "val_acc")
REQUIRED_COLUMNS = ("epoch", *SPLIT_METRICS)  # a metrics.csv without one of them is damaged
STATUSES = ("running", "completed", "diverged", "failed")
HYDRA_DIR = ".hydra"  # Hydra's record of a job, as fitscope writes it (`write_hydra_files`)
HYDRA_CONFIG = ".hydra/config.yaml"  # Hydra's record of the config, as composed (unresolved)
# Per-layer diagnostics: `<measure>_<layer>`, layers `1`, `2`, ... from the input, `out` last.
# grad_norm: whole-matrix gradient norms, in run folders written before grad_rms (per weight).
LAYER_MEASURES = (
    "grad_rms",
    "grad_norm",
    "act_mean",
    "act_std",
    "signal",
    "dead",
    "saturated",
)
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


# what Hydra's override lexer takes as an unquoted value; anything else is quoted for it
_HYDRA_PLAIN = re.compile(r"[A-Za-z0-9_./:+@-]+")


def hydra_quoted(value: str) -> str:
    """`value` as an override's value that Hydra's lexer reads back as `value`: as it is when
    a plain path, else single-quoted, a quote and the backslashes before it or at the end
    escaped (a path with spaces, quotes, `$`, `=`, commas or brackets; a name that would read
    as a number)."""
    if _HYDRA_PLAIN.fullmatch(value) and "/" in value:  # a path: never a number or a bool
        return value
    # inside quotes Hydra reads a backslash as an escape only before a quote or at the end
    escaped = re.sub(r"(\\*)('|$)", lambda m: m.group(1) * 2 + ("\\'" if m.group(2) else ""), value)
    return f"'{escaped}'"


def display_path(path: Path) -> str:
    """`path` relative to the working directory when it lies below it, as a user would type it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
