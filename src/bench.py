"""How fast is fitscope? Runs, in one process on one device, the classic tutorial loop and
fitscope's trainer on the same model and data, then a whole sweep end to end, several ways.

    python src/bench.py [--device auto|cpu|cuda] [--epochs 3] [--sweep-epochs 10]
                        [--compile none,graph,torch_compile] [--precision bf16]
                        [--sweeps before,basic,cpu] [--packed-epochs 10] [--quick]

The data are generated MNIST-shaped images (60,000 x 28 x 28 and a 10,000 test set; the
machines this runs on cannot download MNIST) written as MNIST files and read through the real
torchvision MNIST loader by both loops. Figures and ratios are printed, nothing is asserted.

1. tutorial loop: torchvision MNIST with ToTensor() + Normalize, DataLoader(batch_size=200,
   shuffle=True), `.to(device)` per batch, the 784-200-200-10 MLP, SGD lr 0.01;
2. fitscope: the same model and optimizer through `fitscope.train.loop.fit` on tensors already
   on the device, configured as `src/run.py` would be (the same config groups, composed and
   validated), with diagnostics off and on, for each step mode asked (`--compile`; default:
   none, and graph on CUDA; `--precision bf16` adds a bf16 run of the last mode), and once
   with the train curve on every training sample (`trainer.train_eval_samples=null`, how every
   epoch was measured before that setting). One epoch = training on 54,000 samples, then
   evaluating the train curve's samples and the validation part. The headline is the whole
   epoch with the default settings (diagnostics on) against the tutorial loop, the training
   phase alone (what the tutorial loop does) beside it;
3. the sweep `-m activation=relu,leaky,selu model.depth=1,2,3 model.width=100,200,400` (27 runs)
   through `src/run.py`, report included, each way `--sweeps` asks: `before` (as before the
   laptop-speed work: Hydra's basic launcher, one run after another in one process, the train
   curve on every training sample, denormals not flushed), `basic` (the basic launcher with the
   default settings), `cpu` (`hydra/launcher=cpu`: a single-threaded worker process per core,
   the longest runs first); beside the tutorial loop's projected time for it, with where the
   time went and (on CUDA) each run's GPU memory;
4. packed sweeps: `-m activation=relu,leaky,selu trainer.seed=range(0,9)` (27 runs of the
   784-200-200-10 MLP, one shape) with the basic launcher and with `hydra/launcher=packed`,
   end to end with the report: seconds, training time per member-epoch (the runs' `train_s`
   over their epochs), peak memory (the GPU's on CUDA, the sweep process's RSS elsewhere), and
   the ratio of each to the basic launcher's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from fitscope import FitscopeError
from fitscope.config import show_value
from fitscope.train.data import make_splits, write_idx_dataset
from fitscope.train.environment import device_name
from fitscope.train.loop import FitResult, fit
from fitscope.train.models import build_mlp, mlp_args
from fitscope.train.settings import TrainerSettings, validate
from fitscope.train.steps import set_math_modes

RUN_PY = Path(__file__).resolve().parent / "run.py"
CONF = Path(__file__).resolve().parents[1] / "conf"
# The tutorial's setup as config overrides: 784-200-200-10 ReLU MLP, PyTorch's init, SGD lr 0.01,
# batch 200, on MNIST files (10% of the training part validates).
TUTORIAL = [
    "data=mnist",
    "data.download=false",
    "data.val_fraction=0.1",
    "activation=relu",
    "model.depth=2",
    "model.width=200",
    "model.init=default",
    "optimizer=sgd",
    "optimizer.lr=0.01",
    "trainer.batch_size=200",
    "trainer.divergence_loss=null",
]
SWEEP = ["activation=relu,leaky,selu", "model.depth=1,2,3", "model.width=100,200,400"]
# Same-shape runs, the sweep packs are made for: 3 activations x 9 seeds of 784-200-200-10.
PACKED_SWEEP = ["activation=relu,leaky,selu", "trainer.seed=range(0,9)"]
PACKED_WAYS = ("basic", "packed")
# Runs a command and prints the peak resident memory (KiB) of its process tree's largest member.
PEAK_RSS = (
    "import resource, subprocess, sys; code = subprocess.call(sys.argv[1:], "
    "stdout=subprocess.DEVNULL); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
    "sys.exit(code)"
)


def tutorial_config(
    root: Path, device: str, *overrides: str
) -> tuple[dict[str, Any], TrainerSettings]:
    """The tutorial's config as `src/run.py` would compose it, validated (`ConfigError` for a
    value it refuses): the plain config and its trainer settings."""
    overrides = (*TUTORIAL, f"data.root={root}", f"trainer.device={device}", *overrides)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return validate(compose("config", list(overrides)))


def build_model(config: Mapping[str, Any], n_features: int, n_classes: int) -> torch.nn.Module:
    """The config's MLP (seeded with `trainer.seed`), as a run builds it."""
    torch.manual_seed(config["trainer"]["seed"])
    return build_mlp(**mlp_args(config, n_features, n_classes))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def tutorial_epoch_seconds(
    root: Path, config: Mapping[str, Any], device: torch.device, epochs: int
) -> list[float]:
    """The classic loop, as the tutorial writes it: per-sample transforms in a DataLoader."""
    from torchvision import datasets, transforms

    dataset = datasets.MNIST(
        str(root),
        train=True,
        download=False,
        transform=transforms.Compose(
            [transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))]
        ),
    )
    loader = torch.utils.data.DataLoader(dataset, batch_size=200, shuffle=True)
    model = build_model(config, 784, 10).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        for data, target in loader:
            data, target = data.to(device).view(-1, 784), target.to(device)
            optimizer.zero_grad()
            loss = F.cross_entropy(model(data), target)
            loss.backward()
            optimizer.step()
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def fitscope_fit(
    config: Mapping[str, Any], settings: TrainerSettings
) -> tuple[FitResult, int, int]:
    """fitscope's trainer on the tutorial's model and optimizer; (result, training samples,
    the train curve's samples)."""
    splits = make_splits(config["data"], settings.device, settings.train_eval_samples)
    model = build_model(config, splits.n_features, splits.n_classes).to(settings.device)
    result = fit(model, splits, config["optimizer"], settings)
    return result, len(splits.x_train), len(splits.train_eval[0])


# The ways `--sweeps` can run the sweep: (what the line says, extra command-line overrides).
SWEEP_WAYS = {
    "before": (
        "as before the laptop-speed work: basic launcher, train curve on every training sample, "
        "denormals not flushed",
        ["trainer.train_eval_samples=null", "trainer.flush_denormal=false"],
    ),
    "basic": ("basic launcher (one run after another in one process)", []),
    "cpu": (
        "hydra/launcher=cpu (a single-threaded worker process per core, longest runs first)",
        ["hydra/launcher=cpu"],
    ),
    "packed": (
        "hydra/launcher=packed (same-shape runs trained together, one batched pass per step)",
        ["hydra/launcher=packed"],
    ),
}


def sweep_seconds(
    root: Path, device: str, epochs: int, sweep: list[str], cwd: Path, way: str
) -> tuple[float, float]:
    """The sweep through `src/run.py` the way `way` runs it, report included: (seconds, peak
    resident memory of its process in MiB)."""
    command = [
        sys.executable,
        str(RUN_PY),
        "-m",
        *sweep,
        *SWEEP_WAYS[way][1],
        "data=mnist",
        f"data.root={root}",
        "data.download=false",
        f"trainer.epochs={epochs}",
        f"trainer.device={device}",
        "trainer.console=quiet",
        f"hydra.sweep.dir=bench_sweep_{way}",
        f"report.name=bench_sweep_{way}",
    ]
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, *command], cwd=cwd, check=True, capture_output=True
    )
    peak_kib = float(done.stdout.decode().split()[-1])
    return time.perf_counter() - start, peak_kib / 1024


def step_configs(
    args: argparse.Namespace, root: Path, device: torch.device, epochs: int
) -> list[tuple[dict[str, Any], TrainerSettings]]:
    """The validated configs timed on this device: each step mode asked (default none, and
    graph on CUDA), bf16 for the last one if asked, each with diagnostics off and on; then the
    default mode with diagnostics on and the train curve on every training sample."""
    default = "none,graph" if device.type == "cuda" else "none"
    modes = [(mode, "fp32", "auto") for mode in (args.compile or default).split(",")]
    if args.precision == "bf16":
        modes.append((modes[-1][0], "bf16", "auto"))
    timed = [(*mode, diagnostics) for mode in modes for diagnostics in (False, True)]
    timed.append((headline_mode(args, device), "fp32", "null", True))
    return [
        tutorial_config(
            root,
            args.device,
            f"trainer.compile={compile}",
            f"trainer.precision={precision}",
            f"trainer.train_eval_samples={train_eval}",
            f"trainer.diagnostics={show_value(diagnostics)}",
            f"trainer.epochs={epochs + 1}",  # the first epoch pays warm-up (and compilation)
        )
        for compile, precision, train_eval, diagnostics in timed
    ]


def headline_mode(args: argparse.Namespace, device: torch.device) -> str:
    """The step mode of the headline: the device's default (graph on CUDA, none elsewhere) when
    `--compile` times it, else the first mode it times."""
    asked = (args.compile or ("none,graph" if device.type == "cuda" else "none")).split(",")
    default = "graph" if device.type == "cuda" else "none"
    return default if default in asked else asked[0]


def fastest(result: FitResult) -> tuple[float, float]:
    """The fastest epoch and training phase in seconds, the first epoch left out (it pays
    warm-up and compilation)."""
    epoch = min([row["seconds"] for row in result.rows][1:] or [1e9])
    return epoch, min(result.train_seconds[1:] or [1e9])


def print_fit_line(
    result: FitResult, settings: TrainerSettings, n_fit: int, n_eval: int, rate: float
) -> None:
    """One step mode's epoch and training-phase times, against the tutorial loop's rate."""
    device = settings.device
    epoch, train = fastest(result)
    memory = (
        f", peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**20:,.0f} MiB"
        if device.type == "cuda"
        else ""
    )
    print(
        f"fitscope, compile={result.compile} {settings.precision} diagnostics "
        f"{'on ' if settings.diagnostics else 'off'}, train curve on {n_eval:,} samples: epoch "
        f"{1000 * epoch:,.1f} ms ({n_fit / epoch / rate:,.1f}x the tutorial's samples/s), of "
        f"which training {1000 * train:,.1f} ms ({n_fit / train / rate:,.1f}x); step setup "
        f"{1000 * result.setup_seconds:,.0f} ms{memory}"
    )


def print_headline(
    results: list[tuple[FitResult, TrainerSettings, int, int]],
    rate: float,
    tutorial_ms: float,
    default: str,
) -> None:
    """The whole epoch with the default settings (step mode `default`, fp32, diagnostics on,
    train curve on `trainer.train_eval_samples=auto`) against the tutorial loop, its training
    phase beside it, and what diagnostics and the full train curve cost."""

    def pick(diagnostics: bool, full_curve: bool) -> tuple[FitResult, TrainerSettings, int, int]:
        return next(
            r
            for r in results
            if r[1].compile == default
            and r[1].precision == "fp32"
            and r[1].diagnostics == diagnostics
            and (r[1].train_eval_samples is None) == full_curve
        )

    on, off, full = pick(True, False), pick(False, False), pick(True, True)
    (epoch, train), (epoch_off, _), (epoch_full, _) = (fastest(r[0]) for r in (on, off, full))
    n_fit = on[2]
    print(
        f"HEADLINE whole epoch, default settings (compile={default}, diagnostics on, train curve "
        f"on {on[3]:,} samples): {1000 * epoch:,.1f} ms = {n_fit / epoch / rate:,.1f}x the "
        f"tutorial loop ({tutorial_ms:,.0f} ms/epoch); training phase alone "
        f"{1000 * train:,.1f} ms = {n_fit / train / rate:,.1f}x"
    )
    print(
        f"  diagnostics cost {100 * (epoch / epoch_off - 1):+.1f}% of an epoch "
        f"({1000 * epoch_off:,.1f} ms without); the train curve on all {full[3]:,} training "
        f"samples would make the epoch {1000 * epoch_full:,.1f} ms "
        f"({n_fit / epoch_full / rate:,.1f}x)"
    )


def print_sweep_breakdown(sweep_dir: Path, seconds: float) -> None:
    """Where the sweep's time went, and its GPU memory per run, from the runs' summaries."""
    summaries = [json.loads(path.read_text()) for path in sorted(sweep_dir.glob("*/summary.json"))]
    if not summaries:
        return
    runs = sum(s["wall_time_s"] for s in summaries)
    train = sum(s.get("train_s", 0.0) for s in summaries)
    setup = sum(s.get("setup_s", 0.0) for s in summaries)
    modes = sorted({s.get("compile", "?") for s in summaries})
    print(
        f"    runs {runs:,.1f} s summed over the runs (training {train:,.1f} s, step setup "
        f"{setup:,.1f} s, evaluation, files and the rest {runs - train - setup:,.1f} s); steps: "
        f"{', '.join(modes)}"
    )
    if "gpu_memory_peak_mib" in summaries[0]:
        peaks = [s["gpu_memory_peak_mib"] for s in summaries]
        ends = [s["gpu_memory_end_mib"] for s in summaries]
        print(
            f"    GPU memory per run: peak {min(peaks):,.0f}-{max(peaks):,.0f} MiB; held after "
            f"run 1 {ends[0]:,.0f} MiB, after run {len(ends)} {ends[-1]:,.0f} MiB "
            f"(max {max(ends):,.0f})"
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--epochs", type=int, default=3, help="epochs timed for each loop")
    parser.add_argument(
        "--sweep-epochs", type=int, default=10, help="epochs of each sweep run; 0: no sweep"
    )
    parser.add_argument(
        "--compile",
        help="step modes timed, comma-separated (none, graph, torch_compile); "
        "default: none, plus graph on CUDA",
    )
    parser.add_argument(
        "--precision", choices=["fp32", "bf16"], default="fp32", help="bf16: also time bf16"
    )
    parser.add_argument(
        "--sweeps",
        help="how the sweep is run, comma-separated, in this order (before, basic, cpu); "
        "default: before,basic,cpu on the CPU, before,basic elsewhere",
    )
    parser.add_argument(
        "--packed-epochs",
        type=int,
        default=10,
        help="epochs of each run of the packed comparison (27 same-shape runs); 0: none",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="6,000 samples, 1 epoch, a 2-run sweep and a 4-run packed comparison: seconds, for CI",
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    n_train, n_test = (6_000, 1_000) if args.quick else (60_000, 10_000)
    epochs = 1 if args.quick else args.epochs
    sweep_epochs = 1 if args.quick else args.sweep_epochs
    sweep = ["activation=relu,selu"] if args.quick else SWEEP
    runs = int(np.prod([len(s.split("=")[1].split(",")) for s in sweep]))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        try:  # every config is checked by the run's own rules before any work
            config, settings = tutorial_config(root, args.device)
            timed = step_configs(args, root, settings.device, epochs)
            ways = sweep_ways(args.sweeps, settings.device)
        except FitscopeError as error:
            print(f"bench.py: {error}", file=sys.stderr)
            sys.exit(2)
        device = settings.device
        # trainer.tf32's and trainer.flush_denormal's defaults (true), for every loop here
        set_math_modes(settings)
        print(
            f"device: {device_name(device)}; {os.cpu_count()} CPU cores, torch "
            f"{torch.__version__} with {torch.get_num_threads()} threads; {n_train:,} x 28 x 28 "
            "generated images, MLP 784-200-200-10, SGD lr 0.01, batch 200"
        )
        write_idx_dataset(root, "MNIST", n_train, n_test)
        tutorial = tutorial_epoch_seconds(root, config, device, epochs)
        rate = n_train / min(tutorial)
        print(
            f"tutorial loop (DataLoader): {1000 * min(tutorial):,.0f} ms/epoch, "
            f"{rate:,.0f} samples/s"
        )
        results = []
        for run_config, run_settings in timed:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            result, n_fit, n_eval = fitscope_fit(run_config, run_settings)
            print_fit_line(result, run_settings, n_fit, n_eval, rate)
            results.append((result, run_settings, n_fit, n_eval))
        print_headline(results, rate, 1000 * min(tutorial), headline_mode(args, device))
        if sweep_epochs:
            projected = runs * sweep_epochs * min(tutorial)
            print(
                f"sweep {' '.join(sweep)} ({runs} runs x {sweep_epochs} epochs), end to end with "
                f"the report; the tutorial loop would need about {projected:,.0f} s for its "
                "training:"
            )
            first = None
            for way in ways:
                seconds, _ = sweep_seconds(root, args.device, sweep_epochs, sweep, Path(tmp), way)
                first = first or seconds
                print(
                    f"  {way}: {SWEEP_WAYS[way][0]}: {seconds:,.1f} s "
                    f"({first / seconds:.2f}x {ways[0]}; {projected / seconds:.1f}x the tutorial "
                    "loop)"
                )
                print_sweep_breakdown(Path(tmp) / f"bench_sweep_{way}", seconds)
        packed_epochs = 1 if args.quick else args.packed_epochs
        if packed_epochs:
            packed_sweep = ["activation=relu,selu", "trainer.seed=0,1"] if args.quick else None
            compare_packed(root, args.device, packed_epochs, Path(tmp), packed_sweep)


def compare_packed(
    root: Path, device: str, epochs: int, cwd: Path, sweep: list[str] | None = None
) -> None:
    """The same-shape sweep with the basic launcher, then packed: time, training per
    member-epoch and peak memory, and each one's ratio to the basic launcher's."""
    sweep = [*(sweep or PACKED_SWEEP), "model.depth=2", "model.width=200"]
    runs = int(np.prod([len(_sweep_values(s)) for s in sweep[:-2]]))
    print(
        f"packed sweep {' '.join(sweep[:-2])} ({runs} runs of 784-200-200-10 x {epochs} "
        f"epoch{'' if epochs == 1 else 's'}), end to end with the report:"
    )
    first: dict[str, float] = {}
    for way in PACKED_WAYS:
        cwd_way = cwd / f"packed_{way}"
        cwd_way.mkdir(exist_ok=True)
        seconds, rss = sweep_seconds(root, device, epochs, sweep, cwd_way, way)
        summaries = [
            json.loads(p.read_text())
            for p in (cwd_way / f"bench_sweep_{way}").glob("*/summary.json")
        ]
        member_epochs = sum(s["epochs_run"] for s in summaries)
        per_member = 1000 * sum(s.get("train_s", 0.0) for s in summaries) / max(member_epochs, 1)
        gpu = [s["gpu_memory_peak_mib"] for s in summaries if "gpu_memory_peak_mib" in s]
        memory, where = (max(gpu), "GPU") if gpu else (rss, "process RSS")
        figures = {"seconds": seconds, "member": per_member, "memory": memory}
        first = first or figures
        packs = sorted({s["pack"]["size"] for s in summaries if "pack" in s})
        shape = f", packs of {'/'.join(map(str, packs))}" if packs else ""
        modes = ", ".join(sorted({s.get("compile", "?") for s in summaries}))
        print(
            f"  {way}: {seconds:,.1f} s ({first['seconds'] / seconds:.2f}x basic); training "
            f"{per_member:,.2f} ms per member-epoch ({first['member'] / per_member:.2f}x); "
            f"peak {where} memory {memory:,.0f} MiB ({memory / first['memory']:.2f}x basic's); "
            f"steps: {modes}{shape}"
        )


def _sweep_values(override: str) -> list[str]:
    """The values a sweep override takes: `a,b,c` or `range(start,stop)`."""
    value = override.split("=", 1)[1]
    if value.startswith("range("):
        start, stop = (int(v) for v in value[6:-1].split(","))
        return [str(v) for v in range(start, stop)]
    return value.split(",")


def sweep_ways(asked: str | None, device: torch.device) -> list[str]:
    """The `--sweeps` asked, checked; by default before, basic and (on the CPU) cpu."""
    default = "before,basic,cpu" if device.type == "cpu" else "before,basic"
    ways = (asked or default).split(",")
    for way in ways:
        if way not in SWEEP_WAYS:
            raise FitscopeError(
                f"--sweeps={asked} is invalid: expected some of {', '.join(SWEEP_WAYS)}"
            )
    return ways


if __name__ == "__main__":
    main()
