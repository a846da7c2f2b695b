"""Damaged run folders never break a report: a property-based test damages random files of a
real sweep's run folders and checks that the report builds, lists exactly the damaged runs and
leaves the other runs as they would be without them."""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from conftest import quick_cfg
from fitscope.config import show_value
from fitscope.report import cli
from fitscope.report.frames import collect
from fitscope.train.runner import run

SETUPS = [("relu", 1), ("relu", 2), ("tanh", 1), ("tanh", 2)]
REQUIRED = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc"]
HUGE = [math.nan, math.inf, -math.inf, 1e308, -1e308, 1e-308]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """Four real runs, each with the .hydra/ record a Hydra sweep writes beside it."""
    root = tmp_path_factory.mktemp("sweep")
    for i, (activation, depth) in enumerate(SETUPS):
        overrides = [f"activation={activation}", f"model.depth={depth}"]
        cfg = quick_cfg("trainer.epochs=3", "trainer.device=cpu", *overrides)
        choices = {"activation": activation, "model": "mlp", "data": "digits"}
        folder = root / str(i)
        run(cfg, folder, overrides, choices)
        (folder / ".hydra").mkdir()
        OmegaConf.save(cfg, folder / ".hydra" / "config.yaml")
        OmegaConf.save(OmegaConf.create(overrides), folder / ".hydra" / "overrides.yaml")
        record = {"hydra": {"runtime": {"choices": {**choices, "hydra/launcher": "basic"}}}}
        OmegaConf.save(OmegaConf.create(record), folder / ".hydra" / "hydra.yaml")
    return root


# ------------------------------------------------------------------------ damage, one file
# Each strategy draws (what it does, a function that does it to a file, whether the run counts
# as damaged afterwards).


@st.composite
def truncate(draw):
    def cut(path: Path) -> None:
        data = path.read_bytes()
        path.write_bytes(data[: at % max(1, len(data.rstrip()))])  # shorter than its content

    at = draw(st.integers(0, 10_000))
    return f"truncate at {at}", cut


@st.composite
def garbage(draw):
    """Bytes that are not UTF-8, put in at some place."""
    junk = draw(st.binary(max_size=8)) + b"\xff" + draw(st.binary(max_size=8))
    at = draw(st.integers(0, 10_000))

    def insert(path: Path) -> None:
        data = path.read_bytes()
        i = at % (len(data) + 1)
        path.write_bytes(data[:i] + junk + data[i:])

    return f"garbage {junk!r} at {at}", insert


def rewrite(text: str):
    def write(path: Path) -> None:
        path.write_text(text)

    return write


def json_not_object():
    values = st.one_of(
        st.lists(st.integers(), max_size=3), st.text(max_size=5), st.integers(), st.none()
    )
    return values.map(lambda v: (f"summary.json {v!r}", rewrite(json.dumps(v) + "\n")))


# Values of the wrong type for the summary.json fields the report reads.
WRONG_TYPES = {
    "status": st.one_of(
        st.sampled_from(["done", "", "COMPLETED"]), st.integers(), st.lists(st.none())
    ),
    "error": st.one_of(st.integers(), st.lists(st.text(max_size=3))),
    "command": st.one_of(st.none(), st.integers(), st.lists(st.text(max_size=3), max_size=2)),
    "overrides": st.one_of(st.text(max_size=5), st.lists(st.integers(), min_size=1)),
    "choices": st.one_of(
        st.lists(st.text(max_size=3)),
        st.dictionaries(st.text(max_size=3), st.integers(), min_size=1),
    ),
    "params": st.one_of(st.text(max_size=5), st.booleans(), st.lists(st.integers())),
    "wall_time_s": st.one_of(st.text(max_size=5), st.booleans()),
    "test_best": st.one_of(
        st.lists(st.floats()), st.text(max_size=5), st.fixed_dictionaries({"loss": st.text()})
    ),
    "test_last": st.one_of(st.integers(), st.fixed_dictionaries({"acc": st.booleans()})),
}
# Numbers that are data, not damage: a diverged run's NaN, an overflowing loss.
NUMBER_FIELDS = ["params", "wall_time_s", "samples_per_s"]


def edit_summary(key: str, value, nested: str | None = None):
    def write(path: Path) -> None:
        summary = json.loads(path.read_text())
        if nested:
            summary[key][nested] = value
        else:
            summary[key] = value
        path.write_text(json.dumps(summary))

    return write


@st.composite
def summary_damage(draw):
    kind = draw(st.sampled_from(["truncate", "garbage", "not an object", "wrong type", "number"]))
    if kind == "truncate":
        return (*draw(truncate()), True)
    if kind == "garbage":
        return (*draw(garbage()), True)
    if kind == "not an object":
        return (*draw(json_not_object()), True)
    if kind == "wrong type":
        key = draw(st.sampled_from(sorted(WRONG_TYPES)))
        value = draw(WRONG_TYPES[key])
        return f"summary.json {key}={value!r}", edit_summary(key, value), True
    value = draw(st.sampled_from([*HUGE, 10**30]))
    if draw(st.booleans()):
        key, nested = draw(st.sampled_from(["test_best", "test_last"])), "loss"
    else:
        key, nested = draw(st.sampled_from(NUMBER_FIELDS)), None
    return f"summary.json {key}.{nested}={value!r}", edit_summary(key, value, nested), False


def edit_metrics(change):
    def write(path: Path) -> None:
        rows = list(csv.DictReader(io.StringIO(path.read_text())))
        columns, rows = change(list(rows[0]), rows)
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        path.write_text(out.getvalue())

    return write


@st.composite
def metrics_damage(draw):
    kind = draw(st.sampled_from(["truncate", "garbage", "drop column", "values"]))
    if kind == "truncate":  # fewer epochs than the completed run's summary says it ran
        return (*draw(truncate()), True)
    if kind == "garbage":
        return (*draw(garbage()), True)
    if kind == "drop column":
        column = draw(st.sampled_from([*REQUIRED, "lr", "seconds", "grad_rms_1", "dead_1"]))
        drop = edit_metrics(lambda cols, rows: ([c for c in cols if c != column], rows))
        return f"metrics.csv without {column}", drop, column in REQUIRED
    cells = draw(
        st.lists(
            st.tuples(
                st.integers(0, 2),
                st.sampled_from(["train_loss", "train_acc", "val_loss", "val_acc", "lr"]),
                st.sampled_from([*map(str, HUGE), ""]),
            ),
            min_size=1,
            max_size=4,
        )
    )

    def change(columns, rows):
        for row, column, value in cells:
            rows[row % len(rows)][column] = value
        return columns, rows

    return f"metrics.csv values {cells}", edit_metrics(change), False


@st.composite
def unreadable_config(draw):
    """A config file that gives no mapping: not UTF-8, not YAML, a list, a value, empty."""
    kind = draw(st.sampled_from(["garbage", "yaml", "list", "value", "empty"]))
    if kind == "garbage":
        return draw(garbage())
    text = {"yaml": "model: [unclosed\n", "list": "- a\n- b\n", "value": "3\n", "empty": ""}
    return f"config {kind}", rewrite(text[kind])


@st.composite
def config_damage(draw):
    """(file, what, do) pairs and whether the run is damaged: .hydra/config.yaml damaged
    (config.yaml is read), config.yaml damaged (no longer the config the completed run's
    summary records), or both."""
    which = draw(st.sampled_from(["config.yaml", ".hydra/config.yaml", "both"]))
    if which == "both":
        return [
            ("config.yaml", *draw(unreadable_config())),
            (".hydra/config.yaml", *draw(unreadable_config())),
        ], True
    damage = draw(st.one_of(truncate(), unreadable_config()))
    return [(which, *damage)], which == "config.yaml"


@st.composite
def other_damage(draw):
    """best.pt (its checksum is in summary.json: damaged), or a Hydra file the report does not
    need while summary.json is there (not damaged)."""
    name = draw(st.sampled_from(["best.pt", ".hydra/overrides.yaml", ".hydra/hydra.yaml"]))
    return (name, *draw(st.one_of(truncate(), garbage(), unreadable_config()))), name == "best.pt"


@st.composite
def run_damage(draw):
    """What happens to one run folder: [(file, what, do)], and whether it is damaged."""
    changes, damaged = [], False
    for name, strategy in (("summary.json", summary_damage()), ("metrics.csv", metrics_damage())):
        if draw(st.integers(0, 3)) == 0:
            what, do, breaks = draw(strategy)
            changes.append((name, what, do))
            damaged |= breaks
    if draw(st.integers(0, 3)) == 0:
        files, breaks = draw(config_damage())
        changes += files
        damaged |= breaks
    if draw(st.integers(0, 4)) == 0:
        change, breaks = draw(other_damage())
        changes.append(change)
        damaged |= breaks
    return changes, damaged


def _varying_values(runs: pd.DataFrame, varying: list[str]) -> dict:
    """Each run's values of the varying keys, with their Python types."""
    return {
        row["run"]: [(type(row[k]).__name__, show_value(row[k])) for k in varying]
        for _, row in runs.iterrows()
    }


@pytest.mark.slow
# About 2 s an example (the whole report, charts included): 20 fit in CI's minute.
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(damage=st.lists(run_damage(), min_size=len(SETUPS), max_size=len(SETUPS)))
def test_damaged_files_damage_only_their_run(sweep, damage):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        shutil.copytree(sweep, tmp / "sweep")
        expected = set()
        for i, (changes, damaged) in enumerate(damage):
            for name, _what, do in changes:
                do(tmp / "sweep" / str(i) / name)
            if damaged:
                expected.add(str(i))
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = cli.main([str(tmp / "sweep"), "--dir", str(tmp / "reports"), "--name", "r"])
        assert code == 0, err.getvalue()
        folder = tmp / "reports" / "r"

        runs = pd.read_csv(folder / "runs.csv", dtype=str, keep_default_na=False)
        assert set(runs.loc[runs["status"] == "damaged", "run"]) == expected
        lines = [line for line in err.getvalue().splitlines() if line.startswith("damaged run")]
        assert sorted(line.split(":")[0].rsplit("/", 1)[1] for line in lines) == sorted(expected)
        markdown = (folder / "report.md").read_text()
        assert ("## Damaged runs" in markdown) == bool(expected)
        assert ("Damaged runs" in (folder / "report.html").read_text()) == bool(expected)
        if expected:  # its table: one row per damaged run, the run id first
            section = markdown.split("## Damaged runs")[1].splitlines()
            listed = [line.split("|")[1].strip() for line in section if line.startswith("| ")]
            assert sorted(listed[1:]) == sorted(expected)

        healthy = [str(i) for i in range(len(SETUPS)) if str(i) not in expected]
        if not healthy:
            return
        # The other runs are reported as they are without the damaged ones: the same rows ...
        for i in healthy:
            shutil.copytree(tmp / "sweep" / i, tmp / "alone" / i)
        alone = collect([tmp / "alone"]).runs
        expected_rows = pd.read_csv(
            io.StringIO(alone.to_csv(index=False)), dtype=str, keep_default_na=False
        ).drop(columns="path")
        rows = runs[runs["run"].isin(healthy)].drop(columns="path").reset_index(drop=True)
        assert rows.equals(expected_rows)
        # ... and their labels, varying keys and values as in the undamaged sweep
        for i in healthy:
            shutil.copytree(sweep / i, tmp / "pristine" / i)
        pristine = collect([tmp / "pristine"])
        report = collect([tmp / "sweep"])
        assert report.varying == pristine.varying
        compared = report.runs[report.runs["run"].isin(healthy)]
        assert compared["label"].tolist() == pristine.runs["label"].tolist()
        assert _varying_values(compared, report.varying) == _varying_values(
            pristine.runs, pristine.varying
        )
