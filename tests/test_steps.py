"""How a train step runs (`trainer.compile`, `trainer.precision`): every way must train the same
model as the plain eager step.

On the CPU the graph step runs uncaptured: the same static batch table, padded ragged batch,
device step counter, tensor learning rate, capturable optimizers, warm-up and restore, and
graph cache as on CUDA, minus the capture itself (tests/test_cuda.py covers that on a GPU).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from conftest import compose_cfg, quick_cfg, read_summary
from fitscope.config import ConfigError
from fitscope.train import loop
from fitscope.train.data import make_splits
from fitscope.train.graph import GRAPH_CACHE, GRAPH_CACHE_SIZE, GraphStep, graph_step
from fitscope.train.loop import fit
from fitscope.train.models import build_mlp
from fitscope.train.runner import run
from fitscope.train.settings import trainer_settings, validate
from fitscope.train.steps import math_modes

OPTIMIZERS = {
    "sgd": {"name": "sgd", "lr": 0.05, "weight_decay": 1e-3, "grad_clip": 0.5},
    "momentum": {
        "name": "momentum",
        "lr": 0.05,
        "momentum": 0.9,
        "nesterov": True,
        "weight_decay": 0.0,
        "grad_clip": None,
    },
    "adam": {
        "name": "adam",
        "lr": 1e-3,
        "betas": [0.9, 0.999],
        "eps": 1e-8,
        "weight_decay": 0.0,
        "grad_clip": 1.0,
    },
    "adamw": {
        "name": "adamw",
        "lr": 1e-3,
        "betas": [0.9, 0.999],
        "eps": 1e-8,
        "weight_decay": 0.01,
        "grad_clip": None,
    },
}
# digits: 1,149 training samples, so batches of 64 leave a ragged last batch of 61.
TRAINER = validate(
    compose_cfg(
        "trainer.epochs=3",
        "trainer.batch_size=64",
        "trainer.eval_batch_size=1000",
        "trainer.divergence_loss=null",
        "trainer.device=cpu",
    )
)[1]


def trainer(**changes):
    """`TRAINER` with changes. `compile="graph"` is `trainer.compile=graph`: a failed capture is
    an error, never a silent eager fallback. On the CPU it gives the graph step uncaptured: the
    settings refuse it there for users (it would only be slower), the tests want its logic."""
    if changes.get("compile") == "graph":
        changes.setdefault("graph_fallback", False)
    return dataclasses.replace(TRAINER, **changes)


@pytest.fixture(scope="module")
def splits():
    return make_splits({"name": "digits", "val_fraction": 0.2, "test_fraction": 0.2})


def train(splits, optimizer, *, width=32, seed=0, **changes):
    """fit() on a freshly seeded model; returns (rows, per-step losses, final model, result)."""
    torch.manual_seed(seed)
    model = build_mlp(64, 10, depth=2, width=width, activation={"name": "tanh"})
    model = model.to(splits.x_train.device)
    steps = []
    result = fit(
        model,
        splits,
        optimizer,
        trainer(**changes),
        on_steps=lambda epoch, losses: steps.append(losses),
    )
    return result.rows, steps, model, result


def assert_same_training(a, b, rel=1e-5):
    rows_a, steps_a, model_a = a[:3]
    rows_b, steps_b, model_b = b[:3]
    assert len(rows_a) == len(rows_b)
    for row_a, row_b in zip(rows_a, rows_b, strict=True):
        for key in row_a:
            if key != "seconds":
                assert row_b[key] == pytest.approx(row_a[key], rel=rel, abs=1e-6), key
    for losses_a, losses_b in zip(steps_a, steps_b, strict=True):
        assert losses_b == pytest.approx(losses_a, rel=rel)
    for p, q in zip(model_a.parameters(), model_b.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=rel, atol=1e-6)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_graph_step_trains_like_the_eager_step(splits, name):
    # clipping, weight decay, momentum, Adam's state, the ragged last batch, diagnostics
    eager = train(splits, OPTIMIZERS[name], compile="none")
    graph = train(splits, OPTIMIZERS[name], compile="graph")
    assert eager[3].compile == "none" and graph[3].compile == "graph"
    assert len(graph[1][0]) == 18  # 17 full batches and the padded one
    assert_same_training(eager, graph)
    assert eager[0][-1]["val_loss"] < eager[0][0]["val_loss"]  # it did learn


def test_warm_up_leaves_no_trace(splits):
    torch.manual_seed(0)
    model = build_mlp(64, 10, depth=1, width=16, activation={"name": "relu"})
    initial = [p.detach().clone() for p in model.parameters()]
    step = GraphStep(model, OPTIMIZERS["adam"], TRAINER, splits.x_train, splits.y_train, None)
    for p, q in zip(initial, model.parameters(), strict=True):
        assert torch.equal(p, q)
    state = [v for s in step.optimizer.state.values() for v in s.values()]
    assert state and all(torch.count_nonzero(v) == 0 for v in state)  # made, and zeroed
    assert torch.count_nonzero(step.monitor.norms) == 0


def test_graph_cache_reuses_a_step_of_the_same_shape_with_its_own_lr_and_weights(splits):
    GRAPH_CACHE.clear()
    first = train(splits, OPTIMIZERS["adam"], compile="graph", seed=1)
    assert len(GRAPH_CACHE) == 1
    cached = next(iter(GRAPH_CACHE.values()))
    other_lr = {**OPTIMIZERS["adam"], "lr": 3e-3}
    reused = train(splits, other_lr, compile="graph", seed=2)
    assert len(GRAPH_CACHE) == 1 and next(iter(GRAPH_CACHE.values())) is cached
    # the reused step trains exactly like a run with that lr and seed on a fresh step
    GRAPH_CACHE.clear()
    fresh = train(splits, other_lr, compile="graph", seed=2)
    assert_same_training(fresh, reused, rel=0)
    assert first[0] != reused[0]
    assert_same_training(train(splits, other_lr, compile="none", seed=2), reused)


def test_graph_cache_keeps_a_bounded_number_of_steps(splits):
    GRAPH_CACHE.clear()
    for width in range(8, 8 + GRAPH_CACHE_SIZE + 2):
        train(splits, OPTIMIZERS["sgd"], compile="graph", width=width, epochs=1)
    assert len(GRAPH_CACHE) == GRAPH_CACHE_SIZE
    # another weight decay is another graph: it is a number frozen into the captured step
    torch.manual_seed(0)
    model = build_mlp(64, 10, depth=2, width=8, activation={"name": "tanh"})
    args = (trainer(), splits.x_train, splits.y_train, False)
    a = graph_step(model, OPTIMIZERS["sgd"], *args)
    b = graph_step(model, {**OPTIMIZERS["sgd"], "weight_decay": 0.5}, *args)
    assert a is not b and graph_step(model, OPTIMIZERS["sgd"], *args) is a


def test_bf16_precision_trains_close_to_fp32(splits):
    fp32 = train(splits, OPTIMIZERS["adam"], compile="none", epochs=5)
    bf16 = train(splits, OPTIMIZERS["adam"], compile="none", epochs=5, precision="bf16")
    assert bf16[0] != fp32[0]  # autocast did change the arithmetic
    assert bf16[0][-1]["val_loss"] == pytest.approx(fp32[0][-1]["val_loss"], rel=0.05)
    assert bf16[0][-1]["val_acc"] == pytest.approx(fp32[0][-1]["val_acc"], abs=0.02)
    graph = train(splits, OPTIMIZERS["adam"], compile="graph", epochs=5, precision="bf16")
    assert graph[0][-1]["val_loss"] == pytest.approx(fp32[0][-1]["val_loss"], rel=0.05)


@pytest.mark.slow
def test_torch_compile_trains_like_the_eager_step(splits):
    eager = train(splits, OPTIMIZERS["sgd"], compile="none", epochs=2)
    compiled = train(splits, OPTIMIZERS["sgd"], compile="torch_compile", epochs=2)
    assert compiled[3].compile == "torch_compile"
    assert_same_training(eager, compiled, rel=1e-4)


def test_a_failed_capture_falls_back_to_eager_steps_only_with_auto(splits, monkeypatch, caplog):
    def capture_fails(*args, **kwargs):
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing")

    monkeypatch.setattr(loop, "graph_step", capture_fails)
    model = build_mlp(64, 10, depth=1, width=8, activation={"name": "relu"})
    args = (model, OPTIMIZERS["sgd"])
    auto = trainer(compile="graph", graph_fallback=True)  # what auto gives on CUDA
    step = loop.make_step(*args, auto, splits.x_train, splits.y_train)
    assert step.mode == "none" and step.model is model
    assert "CUDA graph capture failed (CUDA error: operation not permitted" in caplog.text
    asked = trainer(compile="graph", graph_fallback=False)  # trainer.compile=graph
    with pytest.raises(RuntimeError, match="not permitted"):
        loop.make_step(*args, asked, splits.x_train, splits.y_train)


def test_auto_is_graph_on_cuda_and_eager_elsewhere(monkeypatch):
    section = dict(compose_cfg("trainer.device=auto").trainer)
    cpu = trainer_settings({**section, "device": "cpu"})
    assert (cpu.compile, cpu.graph_fallback) == ("none", True)
    compiled = trainer_settings({**section, "device": "cpu", "compile": "torch_compile"})
    assert (compiled.compile, compiled.graph_fallback) == ("torch_compile", False)
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 1)
    cuda = trainer_settings(section)
    assert cuda.device == torch.device("cuda")
    assert (cuda.compile, cuda.graph_fallback) == ("graph", True)


def test_graph_on_the_cpu_is_refused_in_one_line():
    cfg = compose_cfg("trainer.device=cpu", "trainer.compile=graph")
    with pytest.raises(ConfigError) as error:
        validate(cfg)
    assert str(error.value) == (
        "trainer.compile=graph is invalid on cpu (trainer.device=cpu): CUDA graphs need a CUDA "
        "device; expected auto, torch_compile or none"
    )


@pytest.mark.parametrize(
    "override, message",
    [
        ("trainer.compile=jit", "trainer.compile=jit is invalid: expected one of auto, graph, "),
        ("trainer.precision=fp16", "trainer.precision=fp16 is invalid: expected one of fp32, bf16"),
        ("trainer.tf32=maybe", "trainer.tf32=maybe is invalid: expected true or false"),
        ("trainer.flush_denormal=1e-38", "trainer.flush_denormal=1e-38 is invalid: expected true"),
    ],
)
def test_bad_step_settings_are_refused(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        validate(compose_cfg(override))


@pytest.mark.parametrize("flush", [True, False])
def test_a_run_flushes_denormal_floats_on_the_cpu_as_asked_and_only_while_it_runs(flush):
    # a denormal float times one: zero when flushed (fast), itself when not (many times slower)
    _, settings = validate(compose_cfg("trainer.device=cpu", f"trainer.flush_denormal={flush}"))
    if not torch.set_flush_denormal(False):
        pytest.skip("this CPU cannot flush denormals (no SSE3)")
    with math_modes(settings):
        assert (torch.tensor([1e-39]) * 1.0).item() == (0.0 if flush else pytest.approx(1e-39))
    # afterwards the process computes with denormals again (numpy too: the report after a
    # sweep in the same process must not depend on the runs before it)
    assert (torch.tensor([1e-39]) * 1.0).item() == pytest.approx(1e-39)
    assert float(np.float64(1e-308) * 1.0) == 1e-308


def test_the_report_after_a_run_in_the_same_process_computes_with_denormals(tmp_path):
    run(quick_cfg("trainer.flush_denormal=true"), tmp_path / "run")
    assert float(np.float64(1e-308) * 1.0) == 1e-308


def test_summary_says_how_the_steps_ran(tmp_path):
    cfg = quick_cfg("trainer.epochs=2", "trainer.device=cpu")
    summary = run(cfg, tmp_path)
    assert read_summary(tmp_path)["compile"] == summary["compile"] == "none"  # auto on the CPU
    assert 0 < summary["train_s"] < summary["wall_time_s"]
    assert "gpu_memory_peak_mib" not in summary
