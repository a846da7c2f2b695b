"""Reading run folders back, tolerantly: a missing, empty, cut-short or unreadable file is a
problem of that run, reported with it, never an exception that stops a report (see
`fitscope.rundir`). No torch."""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fitscope.config import container_hash, flatten_config, show_value
from fitscope.rundir.files import (
    DamagedFileError,
    RunFolderError,
    first_line,
    load_yaml,
    read_text,
)
from fitscope.rundir.names import (
    CONFIG_FILE,
    HYDRA_CONFIG,
    REQUIRED_COLUMNS,
    RUN_MARKERS,
    STATUSES,
    SUMMARY_FILE,
    SWEEP_FILE,
)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number_or_null(value: Any) -> bool:
    return value is None or _is_number(value)


def _test_results(value: Any) -> bool:
    return value is None or (
        isinstance(value, dict) and all(_number_or_null(value.get(k)) for k in ("loss", "acc"))
    )


# The summary.json fields the report reads and what each may hold (any of them may be absent;
# NaN and huge numbers are numbers). The others are the run's record, never read by the report.
SUMMARY_FIELDS: dict[str, tuple[Any, str]] = {
    "status": (lambda v: isinstance(v, str) and v in STATUSES, "one of " + ", ".join(STATUSES)),
    "error": (lambda v: v is None or isinstance(v, str), "a string or null"),
    "command": (lambda v: isinstance(v, str), "a string"),
    "overrides": (
        lambda v: isinstance(v, list) and all(isinstance(o, str) for o in v),
        "a list of strings",
    ),
    "choices": (
        lambda v: isinstance(v, dict) and all(c is None or isinstance(c, str) for c in v.values()),
        "an object of strings",
    ),
    "params": (_number_or_null, "a number"),
    "classes": (_number_or_null, "a number"),
    "wall_time_s": (_number_or_null, "a number"),
    "samples_per_s": (_number_or_null, "a number"),
    "test_best": (_test_results, 'an object with numbers "loss" and "acc"'),
    "test_last": (_test_results, 'an object with numbers "loss" and "acc"'),
}


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    return "null" if value is None else "a number"


def _shown(value: Any, limit: int = 40) -> str:
    """A JSON value in one short line."""
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def read_summary(path: Path) -> dict[str, Any] | None:
    """A run's summary.json, None when there is none. `DamagedFileError` when it is not a JSON
    object (summary.json is written atomically: one cut short is damaged, not unfinished) or a
    field the report reads holds the wrong type (`SUMMARY_FIELDS`)."""
    try:
        text = read_text(path, path.name)
    except FileNotFoundError:
        return None
    if not text.strip():
        raise DamagedFileError(f"{path.name}: empty")
    try:
        summary = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise DamagedFileError(f"{path.name}: not valid JSON ({first_line(error)})") from None
    if not isinstance(summary, dict):
        raise DamagedFileError(f"{path.name}: {_json_kind(summary)}, not a JSON object")
    for key, (check, allowed) in SUMMARY_FIELDS.items():
        if key in summary and not check(summary[key]):
            raise DamagedFileError(
                f'{path.name}: "{key}" is {_shown(summary[key])}, expected {allowed}'
            )
    return summary


def completed_summary(run_dir: Path) -> dict[str, Any] | None:
    """The run folder's summary if it records a completed run, else None."""
    try:
        summary = read_summary(run_dir / SUMMARY_FILE)
    except RunFolderError:
        return None
    return summary if summary and summary.get("status") == "completed" else None


def _natural_key(path: Path) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def _runs_under(folder: Path) -> set[Path]:
    """The run folders in or below `folder`, found in one walk. A symlinked folder is not
    followed: it is returned as it is (unresolved), for `read_run` to report as a link."""
    found = set()
    for root, dirs, files in os.walk(folder):
        if any(marker in files or marker in dirs for marker in RUN_MARKERS):
            found.add(Path(root))
        found |= {Path(root) / d for d in dirs if os.path.islink(os.path.join(root, d))}
        dirs[:] = [d for d in dirs if not d.startswith(".")]  # .hydra, set-aside files
    return found


def find_run_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """Every run folder in or under `paths` (a run folder holds summary.json, metrics.csv or
    .hydra/), resolved, in natural order (job 2 before job 10); a symlinked folder under a
    sweep folder is listed unresolved (`read_run` names it a link and reads nothing of it)."""
    found: set[Path] = set()
    for given in paths:
        path = Path(given)
        if path.exists() and not path.is_dir():
            raise RunFolderError(f"{path}: a file, not a folder: pass sweep or run folders")
        if not path.is_dir():
            raise RunFolderError(f"{path}: no such folder")
        if any((path / marker).exists() for marker in RUN_MARKERS):
            found.add(path.resolve())
            continue
        runs = _runs_under(path.resolve())
        if not runs:
            raise RunFolderError(
                f"{path}: no run folders in it (a run folder holds {', '.join(RUN_MARKERS)})"
            )
        found |= runs
    return sorted(found, key=_natural_key)


MAX_EPOCH = 2**31


def _plain_csv(text: str) -> pd.DataFrame | None:
    """`text` as a frame when it is what fitscope writes: a header of distinct names, then rows
    of as many numbers; None for anything else (quotes, empty or text cells, ragged rows)."""
    lines = [line.removesuffix("\r") for line in text.split("\n")[:-1]]  # csv writes \r\n
    if len(lines) < 2 or '"' in text or "\r" in "".join(lines):
        return None
    header = lines[0].split(",")
    rows = [line.split(",") for line in lines[1:]]
    if len(set(header)) != len(header) or any(len(row) != len(header) for row in rows):
        return None
    try:
        values = np.array(rows, dtype=float)
    except ValueError:
        return None
    return pd.DataFrame(values, columns=header)


def read_metrics(path: Path) -> pd.DataFrame:
    """Epoch rows of a metrics.csv. A last line cut short (a run killed while writing it) is
    left out; a missing or empty file, or one without a complete line, gives no rows. Values
    that are not numbers become NaN. `DamagedFileError` when the file is not UTF-8 CSV, lacks
    one of `REQUIRED_COLUMNS`, or an epoch is not a whole number >= 0."""
    empty = pd.DataFrame(columns=list(REQUIRED_COLUMNS))
    try:
        text = read_text(path, path.name)
    except FileNotFoundError:
        return empty
    text = text[: text.rfind("\n") + 1]  # rows always end with a newline
    frame = _plain_csv(text)
    if frame is None:  # anything but the plain numbers fitscope writes: pandas' parser
        try:
            frame = pd.read_csv(io.StringIO(text), on_bad_lines="skip")
        except pd.errors.EmptyDataError:
            return empty
        except Exception as error:  # pandas' parser on a file that is not what fitscope writes
            raise DamagedFileError(f"{path.name}: not CSV ({first_line(error)})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        plural = "s" if len(missing) > 1 else ""
        raise DamagedFileError(f"{path.name}: no {', '.join(missing)} column{plural}")
    text_columns = [c for c, kind in frame.dtypes.items() if kind.kind not in "biuf"]
    if text_columns:  # values that are not numbers become NaN
        frame[text_columns] = frame[text_columns].apply(pd.to_numeric, errors="coerce")
    epochs = frame["epoch"].to_numpy(float)
    if np.isnan(epochs).any():
        frame, epochs = frame[~np.isnan(epochs)], epochs[~np.isnan(epochs)]
    wrong = (epochs % 1 != 0) | (epochs < 0) | (epochs >= MAX_EPOCH)
    if wrong.any():
        first = frame["epoch"].to_numpy()[wrong][0]  # as written: -1, not -1.0
        raise DamagedFileError(f"{path.name}: epoch {show_value(first)} is not a whole number >= 0")
    frame = frame.reset_index(drop=True)
    frame["epoch"] = epochs.astype(np.int64)
    return frame


def _load_yaml(run_dir: Path, name: str) -> Any:
    """A YAML file of the run folder as plain containers (`load_yaml`), interpolations left as
    written (`${oc.env:X}` is text, never resolved); `DamagedFileError` when YAML cannot read it;
    an empty file is an empty mapping."""
    value = load_yaml(read_text(run_dir / name, name), name)
    return {} if value is None else value


def _load_config(run_dir: Path, name: str) -> dict[str, Any]:
    config = _load_yaml(run_dir, name)
    if not isinstance(config, dict):
        kind = "a list" if isinstance(config, list) else "a single value"
        raise DamagedFileError(f"{name}: {kind}, not a mapping of config keys")
    if not config:
        raise DamagedFileError(f"{name}: empty")
    return config


def _differences(composed: Mapping[str, Any], written: Mapping[str, Any]) -> list[str]:
    """The keys of `composed` (.hydra/config.yaml), in its order, whose value `written`
    (config.yaml, its resolved copy) lacks or changes; interpolations are not compared."""
    written = flatten_config(written)
    return [
        key
        for key, value in flatten_config(composed).items()
        if not (isinstance(value, str) and "${" in value)
        and (key not in written or show_value(written[key]) != show_value(value))
    ]


def read_config(
    run_dir: Path, summary: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any], str | None]:
    """(the run's config as nested containers, a note when one of its two records is damaged or
    they disagree). Values as written: interpolations are not resolved.

    config.yaml is the config fitscope resolved; .hydra/config.yaml is Hydra's record of it.
    The report reads config.yaml when its hash is the one `summary` records, or when it agrees
    with .hydra/config.yaml (a difference in the last value alone is .hydra/config.yaml cut
    short); otherwise .hydra/config.yaml (config.yaml cut short or damaged). `DamagedFileError`
    when neither file gives a mapping.
    """
    found: dict[str, dict[str, Any]] = {}
    damage: dict[str, str] = {}
    for name in (CONFIG_FILE, HYDRA_CONFIG):
        try:
            found[name] = _load_config(run_dir, name)
        except FileNotFoundError:
            pass
        except DamagedFileError as error:
            damage[name] = str(error)
    written, composed = found.get(CONFIG_FILE), found.get(HYDRA_CONFIG)
    recorded = (summary or {}).get("config_hash")
    if written is not None and composed is not None:
        differences = _differences(composed, written)
        # only .hydra/config.yaml's last value differs: it is the file cut short
        if differences in ([], list(flatten_config(composed))[-1:]):
            return written, None
        if recorded is not None and container_hash(written) == recorded:
            return written, (
                f"{HYDRA_CONFIG} disagrees with config.yaml on {differences[0]}: read config.yaml, "
                "the config summary.json records"
            )
        return composed, (
            f"config.yaml disagrees with .hydra/config.yaml on {differences[0]}: "
            "read .hydra/config.yaml"
        )
    if written is not None:
        note = damage.get(HYDRA_CONFIG)
        return written, (f"{note}: read config.yaml" if note else None)
    if composed is not None:
        note = damage.get(CONFIG_FILE)
        return composed, (f"{note}: read .hydra/config.yaml" if note else None)
    if damage:
        raise DamagedFileError("; ".join(damage.values()))
    raise DamagedFileError(f"no config: neither {CONFIG_FILE} nor {HYDRA_CONFIG}")


def read_choices(run_dir: Path, summary: Mapping[str, Any] | None) -> dict[str, str]:
    """The config group options a run was composed from, e.g. {"activation": "relu"}: from
    summary.json, else from .hydra/hydra.yaml (`DamagedFileError` when that cannot be read)."""
    if summary and summary.get("choices"):
        return dict(summary["choices"])
    name = ".hydra/hydra.yaml"
    try:
        choices = _load_yaml(run_dir, name)
    except FileNotFoundError:
        return {}
    for key in ("hydra", "runtime", "choices"):
        choices = choices.get(key) if isinstance(choices, dict) else None
    if not isinstance(choices, dict) or not all(
        v is None or isinstance(v, str) for v in choices.values()
    ):
        raise DamagedFileError(f"{name}: no hydra.runtime.choices mapping")
    return {str(k): v for k, v in choices.items() if not str(k).startswith("hydra/")}


def read_overrides(run_dir: Path, summary: Mapping[str, Any] | None) -> list[str]:
    """The command-line overrides a run was started with: from summary.json, else from
    .hydra/overrides.yaml (`DamagedFileError` when that is not a list of strings)."""
    if summary and "overrides" in summary:
        return list(summary["overrides"])
    name = ".hydra/overrides.yaml"
    try:
        overrides = _load_yaml(run_dir, name)
    except FileNotFoundError:
        return []
    if overrides == {}:  # an empty file
        return []
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise DamagedFileError(f"{name}: not a list of overrides")
    return overrides


def read_sweep_section(sweep_dir: Path, section: str) -> dict[str, Any] | None:
    """One section (e.g. `report`) of a sweep folder's multirun.yaml, as data: plain values,
    interpolations left as text (`${oc.env:HOME}` is never resolved); None when it has none or
    the file cannot be read (a link, a FIFO, aliases, too large: as good as none)."""
    try:
        document = _load_yaml(sweep_dir, SWEEP_FILE)
    except (FileNotFoundError, RunFolderError):
        return None
    value = document.get(section) if isinstance(document, dict) else None
    return value if isinstance(value, dict) else None
