"""The sweep index: every run folder a report reads, as one table of runs and one table of epoch
rows, kept beside the report (`index-runs.parquet`, `index-epochs.parquet`) so that a rebuild
reads only the runs whose files changed.

A run's files are known by their size, modification time and inode (its *signature*). A
rebuild reads again every run whose signature differs from the index's, and takes the others'
records from it. The index is data like any file from elsewhere: one that cannot be read, or
was written by another version of this format, is ignored (every run is read again).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fitscope.rundir import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    HYDRA_CONFIG,
    METRICS_FILE,
    REQUIRED_COLUMNS,
    SUMMARY_FIELDS,
    SUMMARY_FILE,
    RunRecord,
    find_run_dirs,
    read_run,
)

log = logging.getLogger("fitscope")

INDEX_VERSION = "4"  # bump when what a record holds, or how a run folder is read, changes
RUNS_INDEX = "index-runs.parquet"
EPOCHS_INDEX = "index-epochs.parquet"
INDEX_FILES = (RUNS_INDEX, EPOCHS_INDEX)
WATCHED = (
    SUMMARY_FILE,
    METRICS_FILE,
    CHECKPOINT_FILE,  # a completed run's best.pt is checked against its recorded checksum
    CONFIG_FILE,
    HYDRA_CONFIG,
    ".hydra/hydra.yaml",
    ".hydra/overrides.yaml",
)
RECORD_FIELDS = ("summary", "config", "choices", "overrides", "problems", "damage")
# what the report reads of a summary.json (the rest is the run's record, not the report's)
REPORTED_SUMMARY = (*SUMMARY_FIELDS, "stopped_early", "epochs_run")


def signature(run_dir: Path) -> str:
    """Size, modification time and inode of each file of the run that the report reads."""
    if os.path.islink(run_dir):
        return f"link:{os.readlink(run_dir)}"
    parts = []
    for name in WATCHED:
        try:
            stat = os.lstat(run_dir / name)  # a file swapped for a link changes it
            parts.append(f"{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ino}")
        except OSError:
            parts.append("-")
    return "|".join(parts)


@dataclass
class Sweep:
    """The runs of a report: their records (`metrics` left empty) and every epoch row in one
    wide table, `epochs`, whose `run` column is the record's position, rows in run order."""

    records: list[RunRecord]
    epochs: pd.DataFrame
    signatures: list[str]
    read: int  # runs read from their folders; the others came from the index
    # each run's analysis (its verdict, epochs and flags: `fitscope.report.frames.run_row` but
    # for its keys) under the settings `analysed_with`, from the index; None where not known
    analyses: list[dict[str, Any] | None] = field(default_factory=list)
    analysed_with: str = ""

    def bounds(self) -> np.ndarray:
        """Where each run's rows start in `epochs`, and the end: run i is rows [b[i], b[i+1])."""
        runs = self.epochs["run"].to_numpy()
        return np.searchsorted(runs, np.arange(len(self.records) + 1))


# --------------------------------------------------------------------------- encoding records


def _plain_keys(value: Any) -> bool:
    """True when every mapping in `value` has text keys only: plain JSON keeps it whole."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain_keys(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_plain_keys(v) for v in value)
    return True


def _encode(value: Any) -> Any:
    """A YAML or JSON value as JSON that keeps what JSON would lose: a mapping's key types and
    order (a list of pairs)."""
    if isinstance(value, dict):
        return {"map": [[_encode(k), _encode(v)] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        return {_decode(k): _decode(v) for k, v in value["map"]}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _dump(value: Any) -> str:
    """`value` as text: plain JSON where that keeps it whole (the usual case), else encoded."""
    if _plain_keys(value):
        return "plain:" + json.dumps(value)
    return "typed:" + json.dumps(_encode(value))


def _load(text: str) -> Any:
    kind, _, body = text.partition(":")
    if kind == "plain":
        return json.loads(body)
    if kind == "typed":
        return _decode(json.loads(body))
    raise ValueError(f"not an index value: {text[:20]}")


def _record_row(path: Path, record: RunRecord, signature: str) -> dict[str, str]:
    """A run's record as the index keeps it: the summary's fields the report reads only."""
    row = {"path": str(path), "signature": signature}
    for name in RECORD_FIELDS:
        value = getattr(record, name)
        if name == "summary" and value is not None:
            value = {k: v for k, v in value.items() if k in REPORTED_SUMMARY}
        row[name] = _dump(value)
    return row


def _record(row: dict[str, Any]) -> RunRecord:
    fields = {name: _load(row[name]) for name in RECORD_FIELDS}
    return RunRecord(Path(row["path"]), metrics=pd.DataFrame(), **fields)


# ----------------------------------------------------------------------------- reading, writing


def _block(columns: list[str], values: np.ndarray) -> tuple[list[str], np.ndarray]:
    """A run's rows as (column names, float array) without the columns it has no value in (but
    for the epoch, loss and accuracy columns, which every run has), whether read from its
    metrics.csv or from the index's wide table."""
    kept = ~np.isnan(values).all(axis=0) | np.isin(columns, REQUIRED_COLUMNS)
    return [c for c, k in zip(columns, kept, strict=True) if k], values[:, kept]


def _epoch_table(blocks: list[tuple[int, list[str], np.ndarray]]) -> pd.DataFrame:
    """One wide table from each run's (position, columns, values), in run order: every column
    any run has, NaN where a run has none."""
    blocks = sorted(blocks, key=lambda block: block[0])
    names = list(dict.fromkeys(["epoch", *(c for _, columns, _ in blocks for c in columns)]))
    where = {name: i for i, name in enumerate(names)}
    total = sum(len(values) for _, _, values in blocks)
    table = np.full((total, len(names)), np.nan)
    runs = np.empty(total, np.int64)
    start = 0
    for run, columns, values in blocks:
        end = start + len(values)
        table[start:end, [where[c] for c in columns]] = values
        runs[start:end] = run
        start = end
    frame = pd.DataFrame(table, columns=names)
    frame.insert(0, "run", runs)
    frame["epoch"] = frame["epoch"].astype(np.int64)
    return frame


def load_index(folder: Path | None) -> tuple[dict[str, tuple[str, dict]], pd.DataFrame]:
    """The index kept in a report `folder`: {run path: (signature, its row)} and the epoch rows
    (a `path` column naming the run); empty when there is none or it cannot be read."""
    if folder is None:
        return {}, pd.DataFrame()
    try:
        import pyarrow.parquet as pq

        runs = pq.read_table(folder / RUNS_INDEX)
        version = (runs.schema.metadata or {}).get(b"fitscope_index", b"").decode()
        if version != INDEX_VERSION:
            return {}, pd.DataFrame()
        rows = runs.to_pandas().to_dict("records")
        epochs = pq.read_table(folder / EPOCHS_INDEX).to_pandas()
        index = {str(r["path"]): (str(r["signature"]), r) for r in rows}
        if "path" not in epochs.columns or "epoch" not in epochs.columns:
            raise ValueError("no path or epoch column")
        return index, epochs
    except FileNotFoundError:
        return {}, pd.DataFrame()
    except Exception as error:  # a damaged index is as good as none
        log.warning(f"report index in {folder} not used ({type(error).__name__}: {error})")
        return {}, pd.DataFrame()


def _cached_blocks(cached: pd.DataFrame, reused: dict[str, int]) -> list:
    """The index's epoch rows of the runs it still holds as they are, as `_epoch_table` blocks."""
    if cached.empty or not reused:
        return []
    kept = cached[cached["path"].isin(list(reused))]
    if kept.empty:
        return []
    columns = [c for c in kept.columns if c != "path"]
    values = kept[columns].to_numpy(dtype=float, na_value=np.nan)
    paths = kept["path"].to_numpy()
    starts = np.flatnonzero(np.r_[True, paths[1:] != paths[:-1]])
    ends = np.r_[starts[1:], len(paths)]
    blocks = []
    for a, b in zip(starts, ends, strict=True):
        blocks.append((reused[paths[a]], *_block(columns, values[a:b])))
    return blocks


def _analysis(row: dict[str, Any], analysed_with: str) -> dict[str, Any] | None:
    """A run's analysis kept in the index, if it was made with the same settings."""
    if row.get("analysed_with") != analysed_with or not isinstance(row.get("analysis"), str):
        return None
    analysis = json.loads(row["analysis"])
    return analysis if isinstance(analysis, dict) else None


def load_sweep(
    paths: Iterable[str | Path], index_folder: Path | None = None, analysed_with: str = ""
) -> Sweep:
    """Every run folder in or under `paths`: runs whose files did not change since the index in
    `index_folder` was written come from it (with their analysis, where it was made with the
    settings `analysed_with`), the others are read from disk."""
    run_dirs = find_run_dirs(paths)
    index, cached = load_index(index_folder)
    records, signatures, blocks, reused, analyses = [], [], [], {}, []
    for i, run_dir in enumerate(run_dirs):
        sign = signature(run_dir)
        hit = index.get(str(run_dir))
        record = None
        analysis = None
        if hit is not None and hit[0] == sign:
            try:
                record = _record(hit[1])
                analysis = _analysis(hit[1], analysed_with)
                reused[str(run_dir)] = i
            except (ValueError, KeyError, TypeError):
                record = None
        if record is None:
            record = read_run(run_dir)
            metrics = record.metrics
            blocks.append((i, *_block(list(metrics), metrics.to_numpy(float, na_value=np.nan))))
            record.metrics = pd.DataFrame()
        records.append(record)
        signatures.append(sign)
        analyses.append(analysis)
    blocks += _cached_blocks(cached, reused)
    table = _epoch_table(blocks)
    read = len(run_dirs) - len(reused)
    return Sweep(records, table, signatures, read, analyses, analysed_with)


def write_index(sweep: Sweep, folder: Path) -> list[str]:
    """The index of `sweep` in `folder`; the names of the files written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = []
    for i, (record, sign) in enumerate(zip(sweep.records, sweep.signatures, strict=True)):
        analysis = sweep.analyses[i] if i < len(sweep.analyses) else None
        rows.append(
            _record_row(record.path, record, sign)
            | {
                "analysis": None if analysis is None else json.dumps(analysis, default=_plain),
                "analysed_with": sweep.analysed_with,
            }
        )
    columns = ["path", "signature", *RECORD_FIELDS, "analysis", "analysed_with"]
    runs = pa.Table.from_pandas(pd.DataFrame(rows, columns=columns))
    runs = runs.replace_schema_metadata({"fitscope_index": INDEX_VERSION})
    pq.write_table(runs, folder / RUNS_INDEX)
    paths = np.array([str(r.path) for r in sweep.records], dtype=object)
    epochs = sweep.epochs.drop(columns="run").assign(path=paths[sweep.epochs["run"].to_numpy()])
    pq.write_table(pa.Table.from_pandas(epochs, preserve_index=False), folder / EPOCHS_INDEX)
    return list(INDEX_FILES)


def _plain(value: Any) -> Any:
    """numpy's numbers as JSON's."""
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    raise TypeError(f"{type(value).__name__} is not JSON")
