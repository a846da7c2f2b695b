"""Faults that shared clusters, full disks and folders from someone else bring, one class each
(docs/faults.md): fitscope never writes through a symlink it did not make; a refused or skipped
resume changes no completed run; resume checks a completed run before it skips it; SIGTERM is
Ctrl-C; the machine's no is one line; numbers the model cannot use are refused; files from
elsewhere are data, never code or paths. `test_fault_properties.py` damages a completed sweep
at random."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hypothesis import given
from hypothesis import strategies as st

from conftest import QUICK, REPORT_PY, RUN_PY, compose_cfg, quick_cfg, read_summary, run_cli
from fitscope.config import ConfigError
from fitscope.report import cli
from fitscope.report.frames import collect
from fitscope.rundir import RunFolderError, hydra_quoted
from fitscope.rundir.logfile import CONSOLE_ONLY, RunLog
from fitscope.synthetic import write_sweep
from fitscope.train.runner import run
from fitscope.train.settings import validate

CANARY = b"a file outside every folder fitscope writes\n"


@pytest.fixture
def canary(tmp_path) -> Path:
    path = tmp_path / "outside" / "canary.txt"
    path.parent.mkdir()
    path.write_bytes(CANARY)
    return path


def cfg(*overrides: str):
    return quick_cfg("trainer.epochs=2", "trainer.device=cpu", *overrides)


def trained(folder: Path, *overrides: str) -> Path:
    run(cfg(*overrides), folder)
    return folder


def files_of(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (its lock aside) and its bytes."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def report_cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(args))
    return code, out.getvalue(), err.getvalue()


# ------------------------------------------------------------------------------- symlinks


@pytest.mark.parametrize(
    "name",
    [".lock", "metrics.csv", "summary.json", "config.yaml", "best.pt", "run.log", "tensorboard"],
)
def test_no_file_of_a_run_folder_is_written_through_a_symlink(tmp_path, canary, name):
    folder = tmp_path / "sweep" / "0"
    folder.mkdir(parents=True)
    (folder / name).symlink_to(canary)
    with pytest.raises(RunFolderError, match=rf"{name} is a symlink \(to .*canary.txt\)"):
        run(cfg(), folder)
    assert canary.read_bytes() == CANARY
    assert sorted(p.name for p in folder.iterdir()) == [name]  # nothing else was written


def test_a_completed_run_with_a_linked_file_is_refused_not_skipped(tmp_path, canary):
    folder = trained(tmp_path / "sweep" / "0")
    canary.write_bytes((folder / "metrics.csv").read_bytes())
    (folder / "metrics.csv").unlink()
    (folder / "metrics.csv").symlink_to(canary)
    before = canary.read_bytes()
    with pytest.raises(RunFolderError, match="metrics.csv is a symlink"):
        run(cfg(), folder)
    assert canary.read_bytes() == before


def test_a_run_folder_that_is_a_symlink_is_refused_with_a_line(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "0").symlink_to(elsewhere)
    with pytest.raises(RunFolderError, match=r"sweep/0: the run folder is a symlink \(to "):
        run(cfg(), tmp_path / "sweep" / "0")
    assert list(elsewhere.iterdir()) == []


def test_the_report_names_a_linked_run_folder_and_writes_through_no_link(tmp_path, canary):
    trained(tmp_path / "sweep" / "0")
    copy = trained(tmp_path / "elsewhere" / "1", "model.width=32")
    (tmp_path / "sweep" / "1").symlink_to(copy)
    code, _, err = report_cli(str(tmp_path / "sweep"), "--dir", str(tmp_path / "reports"))
    assert code == 0, err
    [line] = [line for line in err.splitlines() if "sweep/1" in line]
    assert "the run folder is a symlink" in line and "not read" in line
    # a report folder that is a link is refused; what it points to stays as it was
    (tmp_path / "reports" / "linked").symlink_to(canary.parent)
    code, _, err = report_cli(
        str(tmp_path / "sweep"), "--dir", str(tmp_path / "reports"), "--name", "linked"
    )
    assert code == 2 and "is a symlink" in err and err.count("\n") == 1
    assert [p.name for p in canary.parent.iterdir()] == ["canary.txt"]


def test_run_log_is_opened_late_never_through_a_link_and_never_for_a_skipped_run(tmp_path, canary):
    (tmp_path / "run.log").symlink_to(canary)
    handler = RunLog(str(tmp_path / "run.log"))
    handler.emit(logging.makeLogRecord({"msg": "a line", "levelno": logging.INFO}))
    handler.close()
    assert canary.read_bytes() == CANARY
    plain = RunLog(str(tmp_path / "plain.log"))
    assert not (tmp_path / "plain.log").exists()  # opened at its first line
    plain.emit(logging.makeLogRecord({"msg": "skipped", **CONSOLE_ONLY}))
    assert not (tmp_path / "plain.log").exists()
    plain.emit(logging.makeLogRecord({"msg": "trained"}))
    plain.close()
    assert (tmp_path / "plain.log").read_text() == "trained\n"


# ------------------------------------------------------------------------ resume and skip


@pytest.mark.slow
def test_resume_with_display_keys_or_another_config_changes_no_completed_run(tmp_path):
    sweep = ["-m", *QUICK, "activation=relu,tanh", "trainer.epochs=2", "hydra.sweep.dir=sw"]
    first = run_cli(*sweep, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    records = {job: files_of(tmp_path / "sw" / job) for job in "01"}
    assert all(".hydra/config.yaml" in r and "run.log" in r for r in records.values())
    # display keys only: a resume that skips both runs and writes nothing of theirs
    again = run_cli(*sweep, "trainer.console=runs", "report.patience=3", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("skipped, already completed") == 2
    assert {job: files_of(tmp_path / "sw" / job) for job in "01"} == records
    report = collect([tmp_path / "sw"])
    assert not report.runs["status"].eq("damaged").any()
    assert [r.problems for r in report.sweep.records] == [[], []]  # no "disagrees" note
    # another config: refused, and the completed runs keep their record byte for byte
    other = run_cli(*sweep, "model.width=32", cwd=tmp_path)
    assert other.returncode != 0
    assert "holds a completed run of another config" in other.stderr
    assert "Traceback" not in other.stdout + other.stderr
    assert {job: files_of(tmp_path / "sw" / job) for job in "01"} == records


def _cut_metrics(folder: Path) -> str:
    lines = (folder / "metrics.csv").read_text().splitlines(keepends=True)
    (folder / "metrics.csv").write_text("".join(lines[:-1]))
    return "summary.json says 2 epochs ran, metrics.csv holds epochs up to 1"


def _flip_checkpoint(folder: Path) -> str:
    data = bytearray((folder / "best.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / "best.pt").write_bytes(bytes(data))
    return "best.pt does not match the checksum recorded when it was written"


def _no_checkpoint(folder: Path) -> str:
    (folder / "best.pt").unlink()
    return "best.pt is missing, though summary.json records a best epoch"


def _edit_config(folder: Path) -> str:
    text = (folder / "config.yaml").read_text()
    (folder / "config.yaml").write_text(text.replace("width: 16", "width: 17"))
    return "is not the config summary.json records"


def _lie_about_best(folder: Path) -> str:
    summary = json.loads((folder / "summary.json").read_text())
    summary["best"]["val_loss"] /= 2  # a better result than the run had
    (folder / "summary.json").write_text(json.dumps(summary))
    return "summary.json's best val_loss"


def _garble_summary(folder: Path) -> str:
    text = (folder / "summary.json").read_text()
    (folder / "summary.json").write_text(text.replace('"params": ', '"params": "many", "x": '))
    return 'summary.json: "params" is "many"'


@pytest.mark.parametrize(
    "damage",
    [
        _cut_metrics,
        _flip_checkpoint,
        _no_checkpoint,
        _edit_config,
        _lie_about_best,
        _garble_summary,
    ],
)
def test_a_completed_run_that_is_not_whole_is_trained_again_its_files_kept(
    tmp_path, caplog, damage
):
    folder = trained(tmp_path / "sweep" / "0")
    reason = damage(folder)
    damaged = files_of(folder)
    [record] = collect([tmp_path / "sweep"]).sweep.records  # the report says what resume says
    assert record.status == "damaged" and reason in record.damage[0]
    with caplog.at_level(logging.WARNING, logger="fitscope"):
        summary = run(cfg(), folder)
    assert summary["status"] == "completed" and not summary.get("skipped")
    [aside] = folder.glob(".replaced-*")
    assert files_of(aside) == damaged  # nothing already written is lost
    [line] = [r.getMessage() for r in caplog.records if "not skipped" in r.getMessage()]
    assert reason in line and aside.name in line
    assert collect([tmp_path / "sweep"]).runs["status"].tolist() == ["completed"]


def test_a_foreign_hydra_record_never_replaces_the_config_a_completed_run_records(tmp_path):
    folder = trained(tmp_path / "sweep" / "0")
    (folder / ".hydra").mkdir()
    (folder / ".hydra" / "config.yaml").write_text("model:\n  width: 4096\ndata:\n  name: digits\n")
    [record] = collect([tmp_path / "sweep"]).sweep.records
    assert record.config["model"]["width"] == 16 and record.status == "completed"
    assert record.problems == [
        ".hydra/config.yaml disagrees with config.yaml on model.width: read config.yaml, the "
        "config summary.json records"
    ]
    os.unlink(folder / ".hydra" / "config.yaml")
    os.mkfifo(folder / ".hydra" / "config.yaml")
    [record] = collect([tmp_path / "sweep"]).sweep.records
    assert record.problems == [
        ".hydra/config.yaml: a FIFO, not a regular file: not read: read config.yaml"
    ]


# -------------------------------------------------------------------------------- signals


@given(st.text(max_size=30))
def test_the_go_on_command_gives_hydra_back_any_sweep_folder(folder):
    arg = f"hydra.sweep.dir={hydra_quoted(folder)}"
    [pasted] = shlex.split(shlex.join([arg]))  # through the shell ...
    assert OverridesParser.create().parse_override(pasted).value() == folder  # ... and Hydra


@pytest.mark.slow
def test_the_go_on_command_works_pasted_for_a_folder_with_spaces_and_quotes(tmp_path):
    folder = 'my runs/it\'s "new" ü'
    args = ["-m", *QUICK, "activation=relu", "trainer.epochs=10000"]  # a sweep of one job
    args += ["trainer.console=quiet", f"hydra.sweep.dir={hydra_quoted(folder)}"]
    proc = subprocess.Popen(
        [sys.executable, str(RUN_PY), *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while not list((tmp_path / folder).glob("*/metrics.csv")) and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143
    go_on = err.strip().split("to finish it (completed runs are skipped): ")[1].split(" ; ")[0]
    words = shlex.split(go_on)  # pasted into a shell: Hydra gets these words
    assert words[:3] == ["python", "src/run.py", "-m"]
    shown = subprocess.run(  # what Hydra makes of them (--cfg prints it instead of a sweep)
        [sys.executable, str(RUN_PY), *words[3:], "--cfg", "hydra", "--package", "hydra.sweep"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    assert yaml.safe_load(shown.stdout)["dir"] == folder


@pytest.mark.slow
def test_a_report_build_killed_leaves_no_staging_folder_for_good(tmp_path):
    write_sweep(tmp_path / "sweep", {"activation.name": ["relu", "tanh"], "trainer.seed": [0, 1]})
    reports = tmp_path / "reports"
    proc = subprocess.Popen(
        [sys.executable, str(REPORT_PY), str(tmp_path / "sweep"), "--dir", str(reports)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while not list(reports.glob(".fitscope-staging-*/*")) and time.time() < deadline:
        time.sleep(0.05)
    proc.kill()  # SIGKILL: no cleanup of its own
    proc.wait(timeout=30)
    [dead] = list(reports.glob(".fitscope-staging-*"))
    old = time.time() - 60  # older than a build that has just made its folder
    os.utime(dead, (old, old))
    code, _, err = report_cli(str(tmp_path / "sweep"), "--dir", str(reports))
    assert code == 0, err
    assert not dead.exists()
    assert [p.name for p in reports.iterdir()] == ["sweep"]


def test_staging_folders_of_running_builds_are_left_and_names_stay_short(tmp_path):
    import fcntl

    write_sweep(tmp_path / "sweep", {"activation.name": ["relu", "tanh"]}, epochs=8)
    reports = tmp_path / "reports"
    live = reports / ".fitscope-staging-1-0123abcd"  # a build that runs now holds its lock
    live.mkdir(parents=True)
    old = time.time() - 60
    os.utime(live, (old, old))
    fd = os.open(live, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        name = "r" * 255  # the longest name a folder may have: its staging name stays short
        code, _, err = report_cli(str(tmp_path / "sweep"), "--dir", str(reports), "--name", name)
    finally:
        os.close(fd)
    assert code == 0, err
    assert live.is_dir() and (reports / name / "report.html").is_file()


# --------------------------------------------------------------------- the machine says no


@pytest.mark.slow
def test_a_run_that_cannot_write_its_checkpoint_fails_in_its_summary_and_one_line(tmp_path):
    """A file-size limit stands in for a full disk: best.pt (about 1 MB) cannot be written, the
    small files can. The run says failed and why; nothing half-written stays."""
    import resource

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past it fail with EFBIG

    result = run_cli(
        *QUICK, "model.width=256", "trainer.epochs=1", "hydra.run.dir=r", cwd=tmp_path,
        preexec_fn=limited,
    )  # fmt: skip
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    assert "run: failed: " in result.stderr and "best.pt" in result.stderr
    summary = read_summary(tmp_path / "r")
    assert summary["status"] == "failed" and "File too large" in summary["error"]
    assert (
        sorted(p.name for p in (tmp_path / "r").iterdir() if p.name.endswith((".pt", ".tmp"))) == []
    )


def test_run_and_report_say_no_in_one_line_when_a_folder_cannot_be_made(tmp_path):
    (tmp_path / "afile").write_text("not a folder")
    result = run_cli("hydra.run.dir=afile/run", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "cannot write runs there: afile/run: a part of the path is a file, not a folder"
    )
    write_sweep(tmp_path / "sweep", {"activation.name": ["relu", "tanh"]}, epochs=8)
    for where, cause in (
        (tmp_path / "afile" / "reports", "a part of the path is a file, not a folder"),
        (tmp_path / ("x" * 300) / "reports", "a name too long for the file system"),
    ):
        code, _, err = report_cli(str(tmp_path / "sweep"), "--dir", str(where))
        assert code == 2 and err.count("\n") == 1 and cause in err, err


# ------------------------------------------------------------------- numbers and messages


@pytest.mark.parametrize(
    "overrides, words",
    [
        (["activation=leaky", "activation.negative_slope=1e308"], "the init gain overflows"),
        (["activation=leaky", "activation.negative_slope=1e38"], "non-finite outputs"),
        (["activation=elu", "activation.alpha=1e300"], "cannot be converted to type float"),
        (["model.width=1000000000000"], "more than this cpu device's"),
        ([f"model.width={10**200}"], "1.00e\\+400 parameters"),  # beyond a float
        (["model.width=3000000", "model.depth=4"], "parameters, about"),
    ],
)
def test_numbers_that_pass_the_rules_but_break_the_model_are_refused(overrides, words):
    with pytest.raises(ConfigError, match=words) as refused:
        validate(compose_cfg(*overrides, "trainer.device=cpu"))
    assert "\n" not in str(refused.value) and "expected" in str(refused.value)


def test_report_py_says_what_is_wrong(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    code, _, err = report_cli(str(tmp_path / "a.txt"))
    assert code == 2 and "a.txt: a file, not a folder" in err
    code, _, err = report_cli("diff", str(tmp_path / "missing"), str(tmp_path))
    assert code == 2 and "missing: no such folder" in err
    write_sweep(tmp_path / "sweep", {"activation.name": ["relu", "tanh"]}, epochs=8)
    code, _, err = report_cli(str(tmp_path / "sweep"), "--name", "a\nb")
    assert code == 2 and err.count("\n") == 1 and "report.name='a\\nb' is invalid" in err


# -------------------------------------------------------------------- files from elsewhere


def test_a_foreign_multirun_yaml_never_says_where_a_report_goes(tmp_path, monkeypatch):
    write_sweep(tmp_path / "sweep", {"activation.name": ["relu", "tanh"]}, epochs=8)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    (tmp_path / "sweep" / "multirun.yaml").write_text(
        "report:\n  dir: ${oc.env:HOME}/evil\n  name: evil\n  patience: 3\n"
        "  min_delta: ${oc.env:HOME}\n"
    )
    monkeypatch.chdir(tmp_path)
    code, out, err = report_cli(str(tmp_path / "sweep"))
    assert code == 0, err
    assert list(home.iterdir()) == []
    assert (tmp_path / "reports" / "sweep" / "report.html").is_file()
    assert "patience 3" in (tmp_path / "reports" / "sweep" / "report.md").read_text()


@pytest.mark.parametrize(
    "text, why",
    [
        ("a: " + "[" * 300 + "]" * 300, "nested deeper than 64 levels"),
        ('s: &x "' + "y" * 1000 + '"\nl:\n' + "- *x\n" * 1000, "an alias (*name)"),
        ("a: &a {b: 1}\nc: *a\n", "an alias (*name)"),
    ],
)
def test_yaml_that_expands_or_nests_without_bound_is_refused_unbuilt(tmp_path, text, why):
    write_sweep(tmp_path / "sweep", {"trainer.seed": [0, 1]}, epochs=4)
    (tmp_path / "sweep" / "0" / "config.yaml").write_text(text)
    (tmp_path / "sweep" / "multirun.yaml").write_text(text)
    code, _, err = report_cli(str(tmp_path / "sweep"), "--dir", str(tmp_path / "reports"))
    assert code == 0, err
    [line] = [line for line in err.splitlines() if line.startswith("damaged run")]
    assert "sweep/0: " in line and f"config.yaml: {why}" in line


def test_a_checkpoint_changed_after_a_build_is_damaged_in_the_rebuild(tmp_path):
    folder = trained(tmp_path / "sweep" / "0")
    args = [str(tmp_path / "sweep"), "--dir", str(tmp_path / "reports")]
    code, _, err = report_cli(*args)
    assert code == 0 and "damaged run" not in err, err
    _flip_checkpoint(folder)  # the rebuild reads the run again, not its indexed record
    code, _, err = report_cli(*args)
    assert code == 0 and "best.pt does not match the checksum" in err, err


def test_fifos_devices_and_huge_files_are_named_not_read(tmp_path):
    write_sweep(tmp_path / "sweep", {"trainer.seed": [0, 1, 2, 3]}, epochs=8)
    os.unlink(tmp_path / "sweep" / "0" / "metrics.csv")
    os.mkfifo(tmp_path / "sweep" / "0" / "metrics.csv")  # reading it would wait forever
    os.unlink(tmp_path / "sweep" / "1" / "summary.json")
    os.symlink("/dev/zero", tmp_path / "sweep" / "1" / "summary.json")  # it never ends
    with open(tmp_path / "sweep" / "2" / "config.yaml", "ab") as file:
        file.truncate(600 * 2**20)  # sparse: 600 MiB that take no disk
    started = time.monotonic()
    code, _, err = report_cli(str(tmp_path / "sweep"), "--dir", str(tmp_path / "reports"))
    assert code == 0, err
    assert time.monotonic() - started < 120
    damaged = [line for line in err.splitlines() if line.startswith("damaged run")]
    lines = {line.split(":")[0].rsplit("/", 1)[1]: line for line in damaged}
    assert "a FIFO, not a regular file" in lines["0"]
    assert "summary.json: a symlink (to /dev/zero)" in lines["1"]
    assert "more than the 512 MiB" in lines["2"]
    assert "3" not in lines
