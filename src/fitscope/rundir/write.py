"""What the trainer writes into a run folder: epoch rows flushed as they come, JSON written
atomically, the resolved config. No torch."""

from __future__ import annotations

import csv
import json
import os
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from fitscope.rundir.names import CONFIG_FILE


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
