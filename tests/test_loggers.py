"""Live loggers against the real things: TensorBoard event files read back with TensorBoard's
own reader, and a real visdom server on a loopback port."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest

from conftest import needs, quick_cfg
from fitscope.train.loggers import LoggerError, make_loggers, run_name
from fitscope.train.runner import run

STEPS = 6  # digits: 1,149 training samples in batches of 200


@pytest.mark.slow
def test_tensorboard_scalars_steps_and_hparams_read_back(tmp_path):
    needs("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    summary = run(
        quick_cfg("trainer.epochs=3", "logger=tensorboard", "activation=tanh"),
        tmp_path,
        overrides=["activation=tanh", "logger=tensorboard"],
    )
    [log_dir] = (tmp_path / "tensorboard").iterdir()
    assert log_dir.name == "activation=tanh"  # readable in TensorBoard's run list
    events = EventAccumulator(str(log_dir))
    events.Reload()
    scalars = events.Tags()["scalars"]
    for tag in (
        "loss/train",
        "loss/val",
        "accuracy/train",
        "accuracy/val",
        "diagnostics/grad_rms_1",
        "train_loss_per_step",
    ):
        assert tag in scalars, tag
    val = [e.value for e in events.Scalars("loss/val")]
    metrics = json.loads((tmp_path / "summary.json").read_text())
    assert val[-1] == pytest.approx(metrics["last"]["val_loss"], rel=1e-6)
    assert [e.step for e in events.Scalars("train_loss_per_step")] == list(range(1, 3 * STEPS + 1))
    assert "validation_images" in events.Tags()["images"]
    # HParams: the run's config with its final metrics.
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")
    [best] = events.Scalars("hparam/best_val_loss")
    assert best.value == pytest.approx(summary["best"]["val_loss"], rel=1e-6)


def test_missing_logger_package_says_which_extra(monkeypatch, tmp_path):
    import builtins

    real_import = builtins.__import__

    def no_visdom(name, *args, **kwargs):
        if name == "visdom":
            raise ImportError("No module named 'visdom'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_visdom)
    with pytest.raises(
        LoggerError,
        match=r"logger=visdom needs the visdom package: "
        r'python -m pip install -e "\.\[visdom\]"',
    ):
        make_loggers({"visdom": {"server": "http://localhost", "port": 1}}, tmp_path, [], "e", {})


def test_logger_run_names_leave_out_display_settings():
    assert (
        run_name(
            [
                "activation=relu",
                "logger=[tensorboard,visdom]",
                "trainer.console=quiet",
                "model.depth=2",
                "report.name=x",
            ]
        )
        == "activation=relu,model.depth=2"
    )
    assert run_name([]) == "defaults"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def visdom_server(tmp_path):
    """A real visdom server on a loopback port. Started through its `main()`: `python -m
    visdom.server` first downloads its web page's scripts, which cannot work offline, and the
    API that fitscope talks to does not need them."""
    needs("visdom")
    port = _free_port()
    code = (
        "import sys; from visdom.server.run_server import main; "
        f"sys.argv = ['visdom', '-port', '{port}', '--hostname', '127.0.0.1', "
        f"'-env_path', r'{tmp_path / 'visdom_env'}']; main()"
    )
    server = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.2)
    else:
        server.kill()
        pytest.fail("visdom server did not start")
    yield port
    server.terminate()
    server.wait(timeout=30)


@pytest.mark.slow
def test_visdom_windows_exist_on_a_real_server(visdom_server, tmp_path):
    import visdom

    run_dir = tmp_path / "sweep" / "0"
    cfg = quick_cfg(
        "trainer.epochs=3",
        "logger=visdom",
        "logger.visdom.server=http://127.0.0.1",
        f"logger.visdom.port={visdom_server}",
        "logger.visdom.images=8",
    )
    run(cfg, run_dir, overrides=["activation=relu"])

    env = f"fitscope_{tmp_path.name}_sweep"
    viz = visdom.Visdom(
        server="http://127.0.0.1",
        port=visdom_server,
        env=env,
        raise_exceptions=True,
        use_incoming_socket=False,
    )
    for title in (
        "train loss per step",
        "validation loss",
        "validation accuracy",
        "validation predictions",
    ):
        assert viz.win_exists(f"activation=relu: {title}", env=env), title
    data = json.loads(viz.get_window_data("activation=relu: validation loss", env=env))
    val_loss = data["content"]["data"][0]["y"]
    assert len(val_loss) == 4  # epochs 0 (untrained) to 3
    last = json.loads((run_dir / "summary.json").read_text())["last"]["val_loss"]
    assert val_loss[-1] == pytest.approx(last, rel=1e-6)
    steps = json.loads(viz.get_window_data("activation=relu: train loss per step", env=env))
    assert len(steps["content"]["data"][0]["y"]) == 3 * STEPS


def test_unreachable_visdom_server_is_reported_once_and_the_run_goes_on(tmp_path, caplog):
    needs("visdom")
    port = _free_port()  # nothing listens there
    for i in range(2):
        cfg = quick_cfg(
            "logger=visdom",
            "logger.visdom.server=http://127.0.0.1",
            f"logger.visdom.port={port}",
            "logger.visdom.timeout=1",
        )
        assert run(cfg, tmp_path / str(i))["status"] == "completed"
        assert (tmp_path / str(i) / "metrics.csv").is_file()
    said = [r for r in caplog.records if "is not reachable" in r.getMessage()]
    assert len(said) == 1
