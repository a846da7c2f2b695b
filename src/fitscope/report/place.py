"""Where a report goes and how it gets there: a staging folder beside the target, then the
move into place. Nothing that is not the report's own is lost or written through.

- The report folder `<report.dir>/<name>` is fitscope's to make: one that is a symlink is
  refused (a report is never written through a link it did not make). `report.dir` itself is
  the user's choice and may be a link.
- A build stages its files in `<report.dir>/.fitscope-staging-<pid>-<random>`, a short name
  whatever the report's name (a valid name must never fail because its staging name is too
  long), and holds an OS lock on it while it builds. A build killed by SIGKILL or a power cut
  leaves its staging folder; the next build into that `report.dir` removes every staging
  folder whose lock is free (its build is dead).
- Rebuilding replaces the files the previous build listed (`manifest.json`) and removes only
  those; a folder that is not a fitscope report, a report of other runs (`sources.json`), or
  one whose runs are not recorded (a committed example on a fresh clone) is refused unless
  `force`. Builds into one `report.dir` take turns for the check and the move (an OS lock on
  that folder).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from fitscope import FitscopeError
from fitscope.rundir import RunFolderError, read_json

try:
    import fcntl
except ImportError:  # Windows: builds do not take turns, staging folders are not locked
    fcntl = None

SOURCES_FILE = "sources.json"  # the run folders a report was built from
MANIFEST_FILE = "manifest.json"  # the files a report wrote: the only ones a rebuild removes
STAGING_PREFIX = ".fitscope-staging-"
FRESH_S = 10.0  # a staging folder younger than this is never taken for a dead build's
# what builds before this module named their staging folders: .<name>.<pid>.<hex>.tmp
_OLD_STAGING = re.compile(r"^\..+\.(\d+)\.[0-9a-f]{8}\.tmp$")


class ReportError(FitscopeError):
    pass


def check_target(folder: Path) -> None:
    """`ReportError` when the report folder is not one fitscope may write: a symlink, or a
    file."""
    if folder.is_symlink():
        raise ReportError(
            f"{folder} is a symlink (to {os.readlink(folder)}): fitscope never writes a report "
            "through a link it did not make; remove the link or choose another name (--name, or "
            "report.name=)"
        )
    if folder.exists() and not folder.is_dir():
        raise ReportError(f"{folder} is a file, not a report folder; choose another name")


@contextlib.contextmanager
def staging_folder(parent: Path) -> Iterator[Path]:
    """A new, empty folder in `parent` to build a report in, locked while the build runs and
    removed after it (with what is left in it); dead builds' staging folders are removed
    first."""
    remove_dead_stagings(parent)
    staging = parent / f"{STAGING_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
    staging.mkdir()  # mode from the umask, like any folder (tempfile's would be private)
    fd = os.open(staging, os.O_RDONLY)
    try:
        if fcntl is not None:
            with contextlib.suppress(OSError):  # a file system without flock
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield staging
    finally:
        os.close(fd)
        _remove_staging(staging)


def remove_dead_stagings(parent: Path) -> list[str]:
    """Remove the staging folders in `parent` whose build is dead: unlocked (or, for the old
    names, whose process is gone). Returns their names."""
    removed = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    for entry in entries:
        if not entry.is_dir(follow_symlinks=False):
            continue
        old = _OLD_STAGING.match(entry.name)
        if _seconds_old(entry) < FRESH_S:  # a build may be between making it and locking it
            continue
        if entry.name.startswith(STAGING_PREFIX):
            dead = _unlocked(Path(entry.path))
        elif old:
            dead = not _alive(int(old.group(1)))
        else:
            continue
        if dead:
            _remove_staging(Path(entry.path))
            removed.append(entry.name)
    return removed


def _seconds_old(entry: os.DirEntry) -> float:
    try:
        return time.time() - entry.stat(follow_symlinks=False).st_mtime
    except OSError:
        return 0.0


def _unlocked(folder: Path) -> bool:
    if fcntl is None:
        return False  # no lock to tell a dead build by: left as it is
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:  # held: its build runs (or no flock here: left alone)
        return False
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process
        return True
    return True


def _remove_staging(staging: Path) -> None:
    """A staging folder and the files in it (a build writes nothing else there)."""
    with contextlib.suppress(OSError):
        for leftover in os.scandir(staging):
            if not leftover.is_dir(follow_symlinks=False):
                os.unlink(leftover.path)
        staging.rmdir()


@contextlib.contextmanager
def builds_take_turns(parent: Path) -> Iterator[None]:
    """An OS lock on the folder that holds the reports, for the check and the move."""
    if fcntl is None:
        yield
        return
    fd = os.open(parent, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):  # a file system without flock: builds do not wait
            fcntl.flock(fd, fcntl.LOCK_EX)  # waits for a build in progress (seconds)
        yield
    finally:
        os.close(fd)


def previous_files(folder: Path, sources: Sequence[str], force: bool) -> list[str]:
    """The files an earlier build of `folder` wrote (its manifest): the ones a rebuild may
    remove. `ReportError` when `folder` is not ours to replace, unless `force`."""
    check_target(folder)
    if not folder.exists() or not any(folder.iterdir()):
        return []
    manifest = _listed(folder / MANIFEST_FILE, "files")
    previous_runs = _listed(folder / SOURCES_FILE, "runs")
    choose = "choose another name (--name, or report.name=)"
    if not force:
        if manifest is None and previous_runs is None:
            raise ReportError(f"{folder} holds files that are not a fitscope report; {choose}")
        if previous_runs is None:
            raise ReportError(
                f"{folder} holds a report whose runs are not recorded here (a committed "
                f"example?); {choose} or pass --force to replace it"
            )
        if not set(previous_runs) <= set(sources):
            raise ReportError(
                f"{folder} holds a report of other runs; {choose} or pass --force to replace it"
            )
    if manifest is None:
        return []  # a report of an older fitscope, or not a report: nothing of it is removed
    return [f for f in manifest if f not in ("", ".", "..") and f == Path(f).name]


def _listed(path: Path, key: str) -> list[str] | None:
    """The list of strings under `key` in a JSON file; None when it is missing or unreadable
    (a symlink, a FIFO or a device among them)."""
    try:
        value = read_json(path).get(key)
    except (OSError, ValueError, AttributeError, RunFolderError):
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return None
    return value


def move_into_place(staging: Path, folder: Path, previous: Sequence[str]) -> None:
    """The staged report becomes `folder`: at once when there is none yet; else file by file
    (each replaced atomically: a link in its place is replaced, never written through), then
    the previous build's files that this one did not write are removed. Nothing else in
    `folder` is touched."""
    check_target(folder)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
    if not folder.exists():
        os.rename(staging, folder)
        return
    written = sorted(p.name for p in staging.iterdir())
    for name in sorted(written, key=lambda n: n == MANIFEST_FILE):  # the manifest last
        os.replace(staging / name, folder / name)
    for name in set(previous) - set(written):
        stale = folder / name
        if stale.is_file() or stale.is_symlink():  # a file the previous build wrote, nothing else
            stale.unlink(missing_ok=True)
