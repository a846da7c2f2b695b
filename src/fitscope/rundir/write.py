"""What the trainer writes into a run folder: epoch rows flushed as they come, JSON and configs
written atomically, never through a symlink. No torch."""

from __future__ import annotations

import contextlib
import csv
import errno
import json
import os
import secrets
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from omegaconf import OmegaConf

from fitscope.rundir.files import DamagedFileError
from fitscope.rundir.names import CONFIG_FILE, HYDRA_DIR

_NO_LINK = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def open_new(path: Path, mode: str = "w") -> IO[Any]:
    """`path` opened for writing from its start, never through a symlink (`DamagedFileError`
    naming it instead: fitscope writes through no link it did not make)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _NO_LINK, 0o666)
    except OSError as error:
        if error.errno == errno.ELOOP and path.is_symlink():
            raise DamagedFileError(
                f"{path}: a symlink (to {os.readlink(path)}); fitscope never writes through a "
                "link it did not make: remove it"
            ) from None
        raise
    text = "b" not in mode
    return os.fdopen(fd, mode, encoding="utf-8" if text else None, newline="" if text else None)


@contextlib.contextmanager
def atomic_file(path: Path, mode: str = "w") -> Iterator[IO[Any]]:
    """A file written beside `path` and moved onto it once complete, so that readers see the old
    file or the new one, never a part, and a link at `path` is replaced, never written through.
    It gets the permissions of any file this process creates (0644 under the usual umask), not
    tempfile's private 0600."""
    tmp = path.with_name(f".{path.name[:64]}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NO_LINK, 0o666)
    try:
        with _naming(path), os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as file:
            yield file
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _naming(path: Path) -> Iterator[None]:
    """An OSError of a write (a full disk) names the file it was writing: the OS does not."""
    try:
        yield
    except OSError as error:
        if error.filename is None and error.errno is not None:
            raise OSError(error.errno, error.strerror, str(path)) from None
        raise


class MetricsWriter:
    """Appends epoch rows to `metrics.csv`, flushing each one to the file system."""

    def __init__(self, path: Path, columns: Sequence[str]) -> None:
        self._path = path
        self._file = open_new(path)
        self._writer = csv.DictWriter(self._file, fieldnames=list(columns))
        self._writer.writeheader()
        self._file.flush()

    def write(self, row: Mapping[str, Any]) -> None:
        with _naming(self._path):
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
    with atomic_file(path) as file:
        json.dump(data, file, indent=2, allow_nan=False, default=str)
        file.write("\n")


def write_config(cfg: Any, run_dir: Path) -> None:
    """The run's resolved config as `config.yaml` (atomically)."""
    with atomic_file(run_dir / CONFIG_FILE) as file:
        file.write(OmegaConf.to_yaml(cfg, resolve=True))


def write_hydra_files(run_dir: Path, task: Any, hydra: Any, overrides: Any) -> None:
    """A job's `.hydra/` files as Hydra writes them when a job starts (config.yaml, as composed
    and unresolved; hydra.yaml; overrides.yaml), each atomically. fitscope writes them itself,
    once it knows the run is to be trained (`hydra.output_subdir` is null in conf/config.yaml),
    so that a run it skips or refuses keeps its record as it was."""
    folder = run_dir / HYDRA_DIR
    folder.mkdir(exist_ok=True)
    for name, node in (("config.yaml", task), ("hydra.yaml", hydra), ("overrides.yaml", overrides)):
        with atomic_file(folder / name) as file:
            file.write(OmegaConf.to_yaml(node))


def finite_or_none(value: float | None) -> float | None:
    """JSON has no NaN or infinity: those become null."""
    if value is None or value != value or value in (float("inf"), float("-inf")):
        return None
    return value
