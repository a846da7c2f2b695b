"""The report's PNG charts, drawn in worker processes while the main process writes the pages,
and not drawn at all when a chart is what the previous build drew: each chart's content hash
is kept in `charts.json`, and an unchanged chart's PNG is copied from the previous build."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import pickle
import shutil
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

from fitscope.report.spec import Chart

HASHES_FILE = "charts.json"
WORKERS = 2  # at most: the report's charts are a dozen, each under a second


def chart_hash(chart: Chart) -> str:
    """What a chart holds, as a short hash: equal hashes draw equal PNGs."""
    return hashlib.sha256(pickle.dumps(chart, protocol=5)).hexdigest()[:20]


def _previous_hashes(previous: Path | None) -> dict[str, str]:
    if previous is None:
        return {}
    try:
        found = json.loads((previous / HASHES_FILE).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(found, dict):
        return {}
    return {k: v for k, v in found.items() if isinstance(k, str) and isinstance(v, str)}


class Drawing:
    """PNGs being drawn into a folder; `wait()` returns when every one is written."""

    def __init__(self, futures: list[Future], pool: ProcessPoolExecutor | None) -> None:
        self._futures, self._pool = futures, pool

    def wait(self) -> None:
        try:
            for future in self._futures:
                future.result()
        finally:
            if self._pool is not None:
                self._pool.shutdown(cancel_futures=True)


def _context() -> multiprocessing.context.BaseContext:
    """forkserver where the platform has it (no fork of a process with threads), else spawn."""
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    return multiprocessing.get_context(method)


def start_drawing(charts: Sequence[Chart], folder: Path, previous: Path | None) -> Drawing:
    """Writes each chart as `<folder>/<name>.png` and `charts.json`: a chart that the previous
    build (in `previous`) drew the same is copied from it, the others are drawn, in worker
    processes when there are several."""
    hashes = {chart.name: chart_hash(chart) for chart in charts}
    before = _previous_hashes(previous)
    todo = []
    for chart in charts:
        source = previous / f"{chart.name}.png" if previous is not None else None
        if before.get(chart.name) == hashes[chart.name] and source and source.is_file():
            shutil.copyfile(source, folder / source.name)
        else:
            todo.append(chart)
    (folder / HASHES_FILE).write_text(json.dumps(hashes, indent=2) + "\n")
    workers = min(WORKERS, os.cpu_count() or 1, len(todo))
    from fitscope.report.draw_png import save_png  # matplotlib: only where a chart is drawn

    if workers <= 1:
        for chart in todo:
            save_png(chart, folder)
        return Drawing([], None)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=_context())
    largest_first = sorted(todo, key=lambda c: -len(c.panels))
    return Drawing([pool.submit(save_png, chart, folder) for chart in largest_first], pool)
