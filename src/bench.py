"""How fast is fitscope? Runs, in one process on one device, the classic tutorial loop and
fitscope's trainer on the same model and data, then a whole sweep end to end.

    python src/bench.py [--device auto|cpu|cuda] [--epochs 3] [--sweep-epochs 10]
                        [--compile none,graph,torch_compile] [--precision bf16] [--quick]

The data are generated MNIST-shaped images (60,000 x 28 x 28 and a 10,000 test set; the
machines this runs on cannot download MNIST) written as MNIST files and read through the real
torchvision MNIST loader by both loops. Figures and ratios are printed, nothing is asserted.

1. tutorial loop: torchvision MNIST with ToTensor() + Normalize, DataLoader(batch_size=200,
   shuffle=True), `.to(device)` per batch, the 784-200-200-10 MLP, SGD lr 0.01;
2. fitscope: the same model and optimizer through `fitscope.training.fit` on tensors already on
   the device, with diagnostics off and on, for each step mode asked (`--compile`; default:
   none, and graph on CUDA; `--precision bf16` adds a bf16 run of the last mode). One epoch =
   training on 54,000 samples, then evaluating the train and validation parts; both the whole
   epoch and its training phase alone (what the tutorial loop does) are compared with the
   tutorial loop;
3. the sweep `-m activation=relu,leaky,selu model.depth=1,2,3 model.width=100,200,400` (27 runs)
   through `src/run.py` in one process, report included, beside the tutorial loop's projected
   time for it, with where the time went and (on CUDA) each run's GPU memory.
"""

from __future__ import annotations

import argparse
import json
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fitscope.config import resolve_device
from fitscope.data import make_splits
from fitscope.models import build_mlp
from fitscope.steps import COMPILE_MODES, set_tf32
from fitscope.training import FitResult, fit

RUN_PY = Path(__file__).resolve().parent / "run.py"
TUTORIAL_MODEL = {"depth": 2, "width": 200, "activation": {"name": "relu"}, "init": "default"}
SWEEP = ["activation=relu,leaky,selu", "model.depth=1,2,3", "model.width=100,200,400"]


def write_mnist_files(root: Path, n_train: int, n_test: int) -> Path:
    """Generated 28x28 digits-like images (a bright bar per class on noise) as MNIST files."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        images = rng.integers(0, 80, size=(n, 28, 28), dtype=np.uint8)
        rows = 2 * labels[:, None] + np.arange(3)[None, :] + 4
        images[np.arange(n)[:, None], rows, :] = 255
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
            struct.pack(">IIII", 0x0803, n, 28, 28) + images.tobytes()
        )
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(
            struct.pack(">II", 0x0801, n) + labels.tobytes()
        )
    return root


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def tutorial_epoch_seconds(root: Path, device: torch.device, epochs: int) -> list[float]:
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
    torch.manual_seed(0)
    model = build_mlp(784, 10, **TUTORIAL_MODEL).to(device)
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
    root: Path, device: torch.device, epochs: int, diagnostics: bool, compile: str, precision: str
) -> tuple[FitResult, int]:
    """fitscope's trainer on the tutorial's model and optimizer; (result, training samples)."""
    data = {
        "name": "mnist",
        "root": str(root),
        "download": False,
        "val_fraction": 0.1,
        "split_seed": 0,
    }
    splits = make_splits(data, device)
    torch.manual_seed(0)
    model = build_mlp(splits.n_features, splits.n_classes, **TUTORIAL_MODEL).to(device)
    trainer = {
        "epochs": epochs,
        "batch_size": 200,
        "eval_batch_size": 10000,
        "seed": 0,
        "diagnostics": diagnostics,
        "compile": compile,
        "precision": precision,
        "divergence_loss": None,
        "early_stopping": {"enabled": False, "patience": 1, "min_delta": 0.0},
    }
    optimizer = {"name": "sgd", "lr": 0.01, "weight_decay": 0.0, "grad_clip": None}
    return fit(model, splits, optimizer, trainer), len(splits.x_train)


def sweep_seconds(root: Path, device: str, epochs: int, sweep: list[str], cwd: Path) -> float:
    command = [
        sys.executable,
        str(RUN_PY),
        "-m",
        *sweep,
        "data=mnist",
        f"data.root={root}",
        "data.download=false",
        f"trainer.epochs={epochs}",
        f"trainer.device={device}",
        "trainer.console=quiet",
        "hydra.sweep.dir=bench_sweep",
    ]
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def step_modes(device: torch.device, compile: str | None, precision: str) -> list[tuple[str, str]]:
    """The (compile, precision) pairs measured on this device."""
    default = "none,graph" if device.type == "cuda" else "none"
    modes = [(mode, "fp32") for mode in (compile or default).split(",")]
    if precision == "bf16":
        modes.append((modes[-1][0], "bf16"))
    return modes


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
        f"  of which: runs {runs:,.1f} s (training {train:,.1f} s, step setup {setup:,.1f} s, "
        f"evaluation, files and the rest {runs - train - setup:,.1f} s); start-up, Hydra and "
        f"the report {seconds - runs:,.1f} s; steps: {', '.join(modes)}"
    )
    if "gpu_memory_peak_mib" in summaries[0]:
        peaks = [s["gpu_memory_peak_mib"] for s in summaries]
        ends = [s["gpu_memory_end_mib"] for s in summaries]
        print(
            f"  GPU memory per run: peak {min(peaks):,.0f}-{max(peaks):,.0f} MiB; held after "
            f"run 1 {ends[0]:,.0f} MiB, after run {len(ends)} {ends[-1]:,.0f} MiB "
            f"(max {max(ends):,.0f})"
        )


def main() -> None:
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
        "--quick",
        action="store_true",
        help="6,000 samples, 1 epoch, a 2-run sweep: seconds, for CI",
    )
    args = parser.parse_args()
    device = resolve_device(args.device)
    for mode in args.compile.split(",") if args.compile else []:
        if mode not in COMPILE_MODES:
            parser.error(f"--compile {mode}: expected one of {', '.join(COMPILE_MODES)}")
        if mode == "graph" and device.type != "cuda":
            parser.error(f"--compile graph needs a CUDA device; this one is {device.type}")
    set_tf32(device, True)  # trainer.tf32's default, for every loop here
    n_train, n_test = (6_000, 1_000) if args.quick else (60_000, 10_000)
    epochs = 1 if args.quick else args.epochs
    sweep_epochs = 1 if args.quick else args.sweep_epochs
    sweep = ["activation=relu,selu"] if args.quick else SWEEP
    runs = int(np.prod([len(s.split("=")[1].split(",")) for s in sweep]))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    print(
        f"device: {name}; torch {torch.__version__}; {n_train:,} x 28 x 28 generated images, "
        f"MLP 784-200-200-10, SGD lr 0.01, batch 200"
    )

    with tempfile.TemporaryDirectory() as tmp:
        root = write_mnist_files(Path(tmp) / "data", n_train, n_test)
        tutorial = tutorial_epoch_seconds(root, device, epochs)
        tutorial_ms = 1000 * min(tutorial)
        tutorial_rate = n_train / min(tutorial)
        print(
            f"tutorial loop (DataLoader): {tutorial_ms:,.0f} ms/epoch, "
            f"{tutorial_rate:,.0f} samples/s"
        )
        for compile, precision in step_modes(device, args.compile, args.precision):
            for diagnostics in (False, True):
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                result, n_fit = fitscope_fit(
                    root, device, epochs + 1, diagnostics, compile, precision
                )
                # the first epoch pays warm-up (and compilation)
                epoch = min([row["seconds"] for row in result.rows][1:] or [1e9])
                train = min(result.train_seconds[1:] or [1e9])
                if epochs == 1:  # --quick: one timed epoch
                    epoch, train = result.rows[0]["seconds"], result.train_seconds[0]
                memory = (
                    f", peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**20:,.0f} MiB"
                    if device.type == "cuda"
                    else ""
                )
                print(
                    f"fitscope, compile={result.compile} {precision} diagnostics "
                    f"{'on ' if diagnostics else 'off'}: epoch {1000 * epoch:,.1f} ms "
                    f"({n_fit / epoch / tutorial_rate:,.1f}x the tutorial's samples/s), of "
                    f"which training {1000 * train:,.1f} ms ({n_fit / train / tutorial_rate:,.1f}x"
                    f"); step setup {1000 * result.setup_seconds:,.0f} ms{memory}"
                )
        if sweep_epochs == 0:
            return
        seconds = sweep_seconds(root, args.device, sweep_epochs, sweep, Path(tmp))
        projected = runs * sweep_epochs * min(tutorial)
        print(
            f"sweep {' '.join(sweep)} ({runs} runs x {sweep_epochs} epochs), end to end with "
            f"the report: {seconds:,.1f} s; the tutorial loop would need about "
            f"{projected:,.0f} s for the same training ({projected / seconds:.1f}x)"
        )
        print_sweep_breakdown(Path(tmp) / "bench_sweep", seconds)


if __name__ == "__main__":
    main()
