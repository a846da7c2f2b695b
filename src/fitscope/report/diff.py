"""`report.py diff RUN_A RUN_B`: how two runs' configs differ, and how to re-run each."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fitscope import FitscopeError
from fitscope.config import flatten_config, is_display_key, show_value
from fitscope.rundir import read_run

ABSENT = "(absent)"


def _changed(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """The keys (display keys left out) whose values differ, a key only one side has included."""
    return sorted(
        k for k in set(a) | set(b) if not is_display_key(k) and a.get(k, ABSENT) != b.get(k, ABSENT)
    )


def _arrow(key: str, a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
    def shown(values: Mapping[str, Any]) -> str:
        return show_value(values[key]) if key in values else ABSENT

    return f"{key}: {shown(a)} → {shown(b)}"


def diff_runs(run_a: str | Path, run_b: str | Path) -> str:
    """The config keys that differ between two runs (group choices with the leaves under them),
    and the command that re-runs each."""
    for path in (Path(run_a), Path(run_b)):
        if not path.is_dir():
            what = "a file, not a run folder" if path.exists() else "no such folder"
            raise FitscopeError(f"{path}: {what}")
    records = [read_run(Path(p)) for p in (run_a, run_b)]
    for path, record in zip((run_a, run_b), records, strict=True):
        if not record.config:  # damaged: none of its config files gives a mapping
            raise FitscopeError(f"{path}: no config to compare: {'; '.join(record.damage)}")
    flats = [flatten_config(r.config) for r in records]
    choices = [r.choices for r in records]
    lines = []
    leaves = _changed(*flats)
    for group in _changed(*choices):
        lines.append(_arrow(group, *choices))
        lines += ["  " + _arrow(k, *flats) for k in leaves if k.split(".")[0] == group]
        leaves = [k for k in leaves if k.split(".")[0] != group]
    lines += [_arrow(k, *flats) for k in leaves]
    if not lines:
        lines.append("the resolved configs are identical")
    for name, path, record in zip("AB", (run_a, run_b), records, strict=True):
        lines.append(f"re-run {name} ({path}): {record.command}")
    return "\n".join(lines)
