"""A completed sweep damaged at random (docs/faults.md): files cut short, symlinks pointing in
and out, FIFOs, permissions, foreign YAML with interpolations and aliases, summaries that lie,
linked run folders. Whatever the damage, resume and the report print no traceback, write
nothing outside the sweep and report folders, and name every damaged run; resume never skips a
damaged run as if it were whole."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import QUICK, quick_cfg, run_cli
from fitscope import FitscopeError
from fitscope.report import cli
from fitscope.report.frames import collect
from fitscope.train.runner import run

pytestmark = pytest.mark.slow

ACTIVATIONS = ("relu", "tanh", "selu")  # one completed run each: sweep/0, sweep/1, sweep/2
FILES = ("metrics.csv", "summary.json", "best.pt", "config.yaml", ".hydra/config.yaml")
YAML_FILES = ("config.yaml", ".hydra/config.yaml", ".hydra/overrides.yaml")
# A YAML document that expands without bound if a reader follows its aliases, and values that a
# reader that resolves interpolations would turn into paths and environment variables
FOREIGN_YAML = """\
a: &a [x, x, x, x, x, x, x, x, x]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: [*d, *d, *d, *d, *d, *d, *d, *d, *d]
trainer: {epochs: "${oc.env:HOME}", console: "${oc.decode:'{a: 1}'}"}
report: {dir: "${oc.env:HOME}/evil", name: evil}
hydra: {sweep: {dir: "${oc.env:HOME}/evil"}, run: {dir: /tmp/evil}}
"""
LIES = ("epochs_run", "best", "checkpoint_sha256", "config_hash")
KINDS = ("cut", "link_out", "link_in", "fifo", "no_read", "foreign_yaml", "lie", "link_folder")


def cfg(run: int):
    return quick_cfg("trainer.epochs=2", "trainer.device=cpu", f"activation={ACTIVATIONS[run]}")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """A completed sweep as `run.py -m` writes it (.hydra/ files and multirun.yaml)."""
    folder = tmp_path_factory.mktemp("pristine")
    args = ["-m", *QUICK, "trainer.epochs=2", "trainer.device=cpu", "report.enabled=false"]
    args += ["activation=" + ",".join(ACTIVATIONS), "hydra.sweep.dir=sweep"]
    result = run_cli(*args, cwd=folder)
    assert result.returncode == 0, result.stderr
    return folder / "sweep"


damages = st.lists(
    st.tuples(
        st.integers(0, len(ACTIVATIONS) - 1),
        st.sampled_from(KINDS),
        st.sampled_from(FILES),
        st.floats(0, 0.9),
        st.sampled_from(LIES),
    ),
    min_size=1,
    max_size=3,
)


def damage(sweep: Path, outside: Path, run: int, kind: str, name: str, cut: float, lie: str):
    """Do one damage to run `run` of `sweep`. True when the run is no longer what it claims
    (the report must name it, resume must not skip it); "named" when only its Hydra record is
    damaged (the report names it; its results are whole, so resume may skip it); False when
    nothing changed that matters."""
    folder = sweep / str(run)
    if folder.is_symlink() or not folder.is_dir():
        return False
    path = folder / name
    if kind == "link_folder":
        copy = outside / f"copy-of-{run}"
        if copy.exists():
            return False
        shutil.copytree(folder, copy, symlinks=True)
        shutil.rmtree(folder)
        folder.symlink_to(copy)
        return True
    if kind == "foreign_yaml":
        if name not in YAML_FILES:
            (sweep / "multirun.yaml").write_text(FOREIGN_YAML)  # the sweep's own YAML
            return False
        path.unlink(missing_ok=True)
        path.write_text(FOREIGN_YAML)
        return "named" if name.startswith(".hydra") else True
    if kind == "lie":
        summary_file = folder / "summary.json"
        if summary_file.is_symlink() or not summary_file.is_file():
            return False
        try:
            summary = json.loads(summary_file.read_text())
        except ValueError:
            return False
        if summary.get("status") != "completed":
            return False
        if lie == "epochs_run":
            summary["epochs_run"] += 1
        elif lie == "best":
            summary["best"]["val_loss"] /= 2
        else:
            summary[lie] = "0" * len(summary[lie])
        summary_file.write_text(json.dumps(summary))
        return True
    if path.is_symlink() or not path.is_file():
        return False
    if kind == "cut":
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * cut)])
    elif kind == "link_out":
        path.unlink()
        path.symlink_to(outside / "canary.txt")
    elif kind == "link_in":
        other = sweep / str((run + 1) % len(ACTIVATIONS)) / name
        path.unlink()
        path.symlink_to(other)
    elif kind == "fifo":
        path.unlink()
        os.mkfifo(path)
    elif kind == "no_read":
        path.chmod(0)
        return os.geteuid() != 0  # root reads it all the same: no damage then
    return "named" if name.startswith(".hydra") else True


def snapshot(folder: Path) -> dict[str, bytes | str]:
    """Every entry under `folder`: a file's bytes, a link's target, a folder's mark."""
    found: dict[str, bytes | str] = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        if path.is_symlink():
            found[key] = "-> " + os.readlink(path)
        elif path.is_dir():
            found[key] = "folder"
        else:
            found[key] = path.read_bytes()
    return found


@contextlib.contextmanager
def inside(folder: Path) -> Iterator[None]:
    """Work in `folder`, with HOME its `home/` (where a foreign `${oc.env:HOME}` would point)."""
    before, home = Path.cwd(), os.environ.get("HOME")
    os.chdir(folder)
    os.environ["HOME"] = str(folder / "home")
    try:
        yield
    finally:
        os.chdir(before)
        if home is None:
            os.environ.pop("HOME", None)
        else:
            os.environ["HOME"] = home


def no_traceback(text: str) -> None:
    assert "Traceback" not in text, text


@settings(max_examples=12, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(damages)
def test_a_damaged_sweep_is_named_never_skipped_and_nothing_outside_changes(pristine, done):
    with tempfile.TemporaryDirectory() as work:
        root = Path(work)
        sweep, outside = root / "sweep", root / "outside"
        shutil.copytree(pristine, sweep, symlinks=True)
        outside.mkdir()
        (root / "home").mkdir()
        (outside / "canary.txt").write_text("a file outside every folder fitscope writes\n")
        kinds = [(run, damage(sweep, outside, run, *rest)) for run, *rest in done]
        named = {run for run, kind in kinds if kind}
        broken = {run for run, kind in kinds if kind is True}
        before_outside = snapshot(outside)
        with inside(root):
            # the report: every damaged run named, one line each, no traceback
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = cli.main([str(sweep)])
            no_traceback(out.getvalue() + err.getvalue())
            assert code == 0, err.getvalue()
            records = {r.path.name: r for r in collect([sweep]).sweep.records}
            lines = {
                line.split(":")[0].rsplit("/", 1)[1]
                for line in err.getvalue().splitlines()
                if line.startswith("damaged run")
            }
            for number in named:  # a line of its own, or a note in the report's table
                record = records[str(number)]
                assert (str(number) in lines) == bool(record.damage), (number, done)
                assert record.damage or record.problems, (number, done)
            # resume: a damaged run is refused in one line, or trained again; never skipped
            for number in range(len(ACTIVATIONS)):
                try:
                    summary = run(cfg(number), sweep / str(number))
                except FitscopeError as error:
                    assert "\n" not in str(error)
                    continue
                if number in broken:
                    assert not summary.get("skipped"), (number, done)
            collect([sweep])  # what resume left is read again without an error
        assert snapshot(outside) == before_outside
        assert sorted(p.name for p in root.iterdir()) == ["home", "outside", "reports", "sweep"]
        assert not (root / "home" / "evil").exists()  # matplotlib's cache may be there
        assert [p.name for p in (root / "reports").iterdir()] == ["sweep"]
