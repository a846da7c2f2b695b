"""Why a run fails: gradient flow, dead and saturated units, clipping."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from conftest import quick_cfg, read_metrics
from fitscope.report.build import build_report
from fitscope.report.frames import collect
from fitscope.report.settings import ReportSettings
from fitscope.rundir import EPOCH_COLUMNS
from fitscope.train.diagnostics import (
    GradientMonitor,
    activation_statistics,
    diagnostic_columns,
    layer_names,
)
from fitscope.train.models import build_mlp
from fitscope.train.runner import run


def _gradients(model, seed=0):
    torch.manual_seed(seed)
    x, y = torch.randn(64, 20), torch.randint(0, 10, (64,))
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()


@pytest.mark.slow
def test_deep_sigmoid_net_with_plain_sgd_has_vanishing_gradients(tmp_path):
    cfg = quick_cfg(
        "activation=sigmoid", "model.depth=8", "model.width=64", "optimizer=sgd", "trainer.epochs=2"
    )
    run(cfg, tmp_path / "run")
    metrics = read_metrics(tmp_path / "run")
    ratio = metrics["grad_rms_1"] / metrics["grad_rms_out"]
    assert (ratio < 1e-3).all()
    # Each layer towards the input gets a smaller gradient than the one after it.
    norms = metrics.loc[0, [f"grad_rms_{n}" for n in [*range(1, 9), "out"]]].to_numpy()
    assert (norms[:-1] < norms[1:]).all()
    flags = collect([tmp_path / "run"]).runs.iloc[0]
    assert flags["flag"] == "stuck at chance (vanishing gradients toward the input)"
    assert flags["grad_ratio_first"] == pytest.approx(ratio[0])  # epoch 0


@pytest.mark.slow
def test_shallow_relu_net_has_healthy_gradient_flow(tmp_path):
    cfg = quick_cfg("model.depth=2", "model.width=64", "optimizer=sgd", "trainer.epochs=2")
    run(cfg, tmp_path / "run")
    metrics = read_metrics(tmp_path / "run")
    assert (metrics["grad_rms_1"] / metrics["grad_rms_out"] > 0.1).all()
    assert collect([tmp_path / "run"]).runs.iloc[0]["flag"] == ""


def test_relu_layer_with_large_negative_bias_is_reported_dead():
    torch.manual_seed(0)
    model = build_mlp(20, 10, depth=3, width=32, activation={"name": "relu"})
    with torch.no_grad():
        model[2].bias.fill_(-100.0)  # the second hidden layer's Linear
    stats = activation_statistics(model, torch.randn(256, 20), "relu")
    columns = [
        c for c in diagnostic_columns(model, "relu") if c.startswith(("act_", "signal_", "dead_"))
    ]
    values = dict(zip(columns, stats.tolist(), strict=True))
    assert values["dead_2"] == 1.0
    assert values["act_mean_2"] == 0.0 and values["act_std_2"] == 0.0
    assert values["dead_1"] < 0.2


def test_sigmoid_with_huge_weights_is_saturated():
    torch.manual_seed(0)
    model = build_mlp(20, 10, depth=1, width=32, activation={"name": "sigmoid"})
    with torch.no_grad():
        model[0].weight.mul_(1000)
    stats = activation_statistics(model, torch.randn(256, 20), "sigmoid")
    assert diagnostic_columns(model, "sigmoid")[-1] == "saturated_1"
    assert stats[-1].item() > 0.95


def test_clipping_changes_the_global_norm_but_not_the_layer_ratio():
    torch.manual_seed(0)
    model = build_mlp(20, 10, depth=4, width=32, activation={"name": "tanh"})
    _gradients(model)
    monitor = GradientMonitor(model, grad_clip=0.01)
    before = monitor.step()
    layers_before = [layer.weight.grad.norm().item() for layer in model if hasattr(layer, "weight")]
    monitor.clip(before)
    layers_after = [layer.weight.grad.norm().item() for layer in model if hasattr(layer, "weight")]
    after = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))

    assert before.item() > 0.01
    assert after.item() == pytest.approx(0.01, rel=1e-3)
    ratio_before = layers_before[0] / layers_before[-1]
    ratio_after = layers_after[0] / layers_after[-1]
    assert ratio_after == pytest.approx(ratio_before, rel=1e-5)
    values = monitor.epoch_values(steps=1).tolist()
    assert values[-1] == 1.0  # clipping fired on the one step
    assert values[-2] == pytest.approx(before.item())
    sizes = [layer.weight.numel() for layer in model if hasattr(layer, "weight")]
    rms = [norm / size**0.5 for norm, size in zip(layers_before, sizes, strict=True)]
    assert values[:-2] == pytest.approx(rms, rel=1e-5)  # per weight


@pytest.mark.parametrize(("samples", "stride"), [(300, 1), (6400, 4)])
@pytest.mark.parametrize("grad_clip", [None, 1.2])
def test_epoch_gradient_columns_are_the_means_over_the_epochs_steps(samples, stride, grad_clip):
    # each step's gradients, as the optimizer gets them, measured by hand: an epoch of up to
    # 32 steps measures them all, a longer one (100 steps) every 4th from the first; with
    # clipping, the global norm and the clip fraction cover every step
    from fitscope.train.settings import trainer_settings
    from fitscope.train.steps import EagerStep

    torch.manual_seed(0)
    model = build_mlp(20, 10, depth=2, width=32, activation={"name": "tanh"})
    x, y = torch.randn(samples, 20), torch.randint(0, 10, (samples,))
    trainer = {**quick_cfg().trainer, "device": "cpu", "batch_size": 64}
    optimizer = {"name": "sgd", "lr": 0.5, "grad_clip": grad_clip}
    step = EagerStep(model, optimizer, trainer_settings(trainer), x, y)
    weights = [layer.weight for layer in model if hasattr(layer, "weight")]
    seen: list[tuple[list[float], float]] = []
    real_step = step.monitor.step

    def measured_step(row):
        rms = [w.grad.norm().item() / w.numel() ** 0.5 for w in weights]
        total = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
        seen.append((rms, total.item()))
        return real_step(row)

    step.monitor.step = measured_step
    step.run_epoch(torch.randperm(samples))
    values = step.monitor.epoch_values(step.steps).tolist()
    assert len(seen) == step.steps == -(-samples // 64)  # the ragged last batch is a step
    sample = seen[::stride]
    assert len(sample) == -(-step.steps // stride) <= 32
    means = [sum(s[0][i] for s in sample) / len(sample) for i in range(len(weights))]
    assert values[: len(weights)] == pytest.approx(means, rel=1e-5)
    totals = [s[1] for s in (sample if grad_clip is None else seen)]
    assert values[-2] == pytest.approx(sum(totals) / len(totals), rel=1e-5)
    fired = sum(s[1] > grad_clip for s in seen) / len(seen) if grad_clip else 0.0
    assert values[-1] == pytest.approx(fired)
    assert grad_clip is None or 0 < fired < 1  # the test sees clipping fire on some steps


def test_clip_fraction_is_zero_without_clipping(tmp_path):
    run(quick_cfg(), tmp_path)
    assert read_metrics(tmp_path)["clip_fraction"].tolist() == [0.0, 0.0]


@pytest.mark.slow
def test_tiny_clip_fires_on_every_step_and_is_flagged(tmp_path):
    run(quick_cfg("trainer.epochs=2", "optimizer.grad_clip=1e-6"), tmp_path)
    # epoch 0: clipping would fire on the fixed batch's gradient; then on every step
    assert read_metrics(tmp_path)["clip_fraction"].tolist() == [1.0, 1.0, 1.0]
    assert collect([tmp_path]).runs.iloc[0]["flag"] == "stuck at chance (clipped gradients)"


def test_diagnostics_can_be_turned_off(tmp_path):
    run(quick_cfg("trainer.diagnostics=false"), tmp_path)
    assert list(read_metrics(tmp_path).columns) == list(EPOCH_COLUMNS)


def test_diagnostic_columns_are_named_by_layer():
    model = build_mlp(20, 10, depth=2, width=8, activation={"name": "gelu"})
    assert layer_names(model) == ["1", "2", "out"]
    assert diagnostic_columns(model, "gelu") == [
        "grad_rms_1",
        "grad_rms_2",
        "grad_rms_out",
        "grad_norm_total",
        "clip_fraction",
        "act_mean_1",
        "act_std_1",
        "signal_1",
        "dead_1",
        "act_mean_2",
        "act_std_2",
        "signal_2",
        "dead_2",
    ]
    linear = build_mlp(20, 10, depth=0, width=8, activation={"name": "tanh"})
    assert diagnostic_columns(linear, "tanh") == [
        "grad_rms_out",
        "grad_norm_total",
        "clip_fraction",
    ]


@pytest.mark.slow
def test_report_writes_layers_and_gradient_charts(tmp_path):
    for i, activation in enumerate(("sigmoid", "relu")):
        cfg = quick_cfg(
            f"activation={activation}", "model.depth=3", "trainer.epochs=2", "model.width=32"
        )
        run(cfg, tmp_path / "sweep" / str(i))
    settings = ReportSettings.from_mapping(dir=str(tmp_path / "reports"))
    folder = build_report([tmp_path / "sweep"], settings)
    layers = pd.read_csv(folder / "layers.csv")
    assert set(layers["layer"].astype(str)) == {"1", "2", "3", "out"}
    assert {"grad_rms", "act_mean", "act_std", "signal", "dead", "saturated"} <= set(layers.columns)
    assert len(layers) == 2 * 3 * 4  # runs x epochs (0 to 2) x layers
    assert (folder / "gradient_flow.png").is_file() and (folder / "units.png").is_file()
    markdown = (folder / "report.md").read_text()
    assert "## Diagnostics" in markdown and "(gradient_flow.png)" in markdown
