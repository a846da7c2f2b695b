"""The CUDA fast path on a real GPU: captured graphs train like eager steps, auto picks them,
memory does not grow from run to run. Skipped where there is no CUDA device (CI has none:
run `python -m pytest tests/test_cuda.py` on a GPU machine)."""

from __future__ import annotations

import pytest
import torch

from conftest import quick_cfg
from fitscope.train.data import make_splits
from fitscope.train.graph import GRAPH_CACHE, GRAPH_CACHE_SIZE
from fitscope.train.runner import run
from test_steps import OPTIMIZERS, assert_same_training, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def splits():
    return make_splits(
        {"name": "digits", "val_fraction": 0.2, "test_fraction": 0.2}, torch.device("cuda")
    )


@pytest.fixture(autouse=True)
def exact_float32():
    """TF32 off, so eager and graph steps are compared at float32 precision."""
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = before


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_captured_graph_trains_like_the_eager_step(splits, name):
    GRAPH_CACHE.clear()
    eager = train(splits, OPTIMIZERS[name], compile="none")
    graph = train(splits, OPTIMIZERS[name], compile="graph")
    step = next(iter(GRAPH_CACHE.values()))
    assert step.graph is not None  # captured, not the uncaptured fallback
    assert graph[3].compile == "graph"
    assert_same_training(eager, graph, rel=1e-4)


def test_a_cached_graph_replays_for_another_seed_and_lr(splits):
    GRAPH_CACHE.clear()
    train(splits, OPTIMIZERS["adam"], compile="graph", seed=1)
    other = {**OPTIMIZERS["adam"], "lr": 3e-3}
    reused = train(splits, other, compile="graph", seed=2)
    assert len(GRAPH_CACHE) == 1
    assert_same_training(train(splits, other, compile="none", seed=2), reused, rel=1e-4)


def test_bf16_graph_trains(splits):
    fp32 = train(splits, OPTIMIZERS["adam"], compile="none", epochs=5)
    bf16 = train(splits, OPTIMIZERS["adam"], compile="graph", epochs=5, precision="bf16")
    assert bf16[0][-1]["val_loss"] == pytest.approx(fp32[0][-1]["val_loss"], rel=0.05)


def test_auto_captures_and_memory_does_not_grow_from_run_to_run(tmp_path):
    GRAPH_CACHE.clear()
    ends = []
    for i, width in enumerate([16, 32, 48, 64, 80, 96, 16, 32]):
        cfg = quick_cfg("trainer.epochs=2", f"model.width={width}")
        summary = run(cfg, tmp_path / str(i))
        assert summary["compile"] == "graph"
        ends.append(summary["gpu_memory_end_mib"])
    assert len(GRAPH_CACHE) == GRAPH_CACHE_SIZE
    # once the cache is full, what stays allocated after a run no longer grows
    assert max(ends[GRAPH_CACHE_SIZE:]) <= max(ends[:GRAPH_CACHE_SIZE]) + 1.0


def test_cached_graphs_never_share_a_capture_stream(splits):
    """PyTorch hands out its 32 pooled streams in turn; a graph kept in the cache while more
    than 32 others are captured and evicted must neither share its capture stream (whose cuBLAS
    workspace some releases free with any graph captured on it) nor train differently."""
    GRAPH_CACHE.clear()
    adam = OPTIMIZERS["adam"]
    kept = train(splits, adam, compile="graph", epochs=1, seed=1)
    for width in range(8, 8 + 34):
        train(splits, OPTIMIZERS["sgd"], compile="graph", epochs=1, width=width)
        again = train(splits, adam, compile="graph", epochs=1, seed=1)  # keeps it cached
        streams = [step.stream for step in GRAPH_CACHE.values()]
        assert None not in streams and len(set(streams)) == len(streams)
    assert_same_training(kept, again, rel=0)
    cached = list(GRAPH_CACHE.values())
    GRAPH_CACHE.clear()
    assert all(step.graph is None for step in cached)  # destroyed now, not at garbage collection


def test_a_parallel_job_trains_on_its_gpu_and_records_it(tmp_path):
    count = torch.cuda.device_count()
    job = 1  # a parallel sweep's job 1: the second GPU where there are two or more
    summary = run(quick_cfg("trainer.device=auto"), tmp_path, gpu_slot=job)
    assert summary["status"] == "completed"
    gpu = summary["gpu"]
    assert gpu["index"] == job % count
    assert gpu["name"] == torch.cuda.get_device_name(job % count)


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam", "adamw"])
def test_a_captured_pack_trains_each_member_like_its_run_alone(optimizer):
    from test_packed import LEARNING_RATES, MIXED, alone, assert_same_run, packed

    jobs = [
        [f"optimizer={optimizer}", f"optimizer.lr={lr}", "trainer.epochs=4", "trainer.tf32=false"]
        + job
        for job, lr in zip(MIXED, LEARNING_RATES[optimizer], strict=True)
    ]
    jobs[1].append("trainer.epochs=2")  # frozen while the graph replays for the others
    results = packed(*(job + ["trainer.compile=graph"] for job in jobs))
    assert {r.compile for r in results} == {"graph"}  # captured, not the eager fallback
    for job, result in zip(jobs, results, strict=True):
        assert_same_run(alone(*job, "trainer.compile=none"), result)


def test_a_pack_with_dropout_trains_with_eager_steps_on_cuda(caplog):
    import logging

    from test_packed import packed

    with caplog.at_level(logging.INFO, logger="fitscope"):
        results = packed(["model.dropout=0.2", "trainer.epochs=2"], ["trainer.epochs=2"])
    assert {r.compile for r in results} == {"none"}
    assert "a pack with dropout trains with eager steps" in caplog.text
    assert "capture failed" not in caplog.text
    assert all(r.status == "completed" for r in results)


def test_a_packed_sweep_on_cuda_records_its_graph_and_memory(tmp_path):
    from conftest import read_summary, run_cli

    result = run_cli(
        "-m", "hydra/launcher=packed", "data=digits", "trainer.epochs=2",
        "activation=relu,tanh", "trainer.seed=0,1", "hydra.sweep.dir=sweep", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "CUDA graph steps" in result.stdout + result.stderr  # the pack's line
    for job in "0123":
        summary = read_summary(tmp_path / "sweep" / job)
        assert summary["status"] == "completed" and summary["compile"] == "graph"
        assert summary["pack"]["size"] == 4 and summary["gpu_memory_peak_mib"] > 0
