"""A run's config, validated once: every rule of `fitscope.config`, then the rules that need
torch (the device exists, CUDA graphs need CUDA, an activation's own parameters), and the
`trainer` group as a frozen, typed `TrainerSettings` with what depends on the machine resolved.

The runner, the benchmark and the tests all build their settings with `validate`.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig

from fitscope import config
from fitscope.config import ConfigError
from fitscope.train.limits import check_activation_numbers, check_model_fits
from fitscope.train.models import activation_class


@dataclass(frozen=True)
class EarlyStoppingSettings:
    enabled: bool  # stop training when validation loss stops improving
    patience: int  # epochs without an improvement larger than min_delta before stopping
    min_delta: float


@dataclass(frozen=True)
class TrainerSettings:
    """The `trainer` group (see conf/trainer/default.yaml), resolved for this machine."""

    epochs: int  # derived from `steps` once the data's size is known (`with_step_budget`)
    steps: int | None  # a budget in optimizer steps, or None: `epochs` is the budget
    batch_size: int
    eval_batch_size: int
    train_eval_samples: int | str | None  # the train curve's samples: auto, a count, None = all
    device: torch.device  # `auto` resolved
    seed: int
    deterministic: bool
    diagnostics: bool
    compile: str  # how a step runs: graph, torch_compile or none (`auto` resolved)
    graph_fallback: bool  # `auto` chose graph: a failed capture trains eagerly, not an error
    precision: str
    tf32: bool
    flush_denormal: bool  # CPU: denormal floats flushed to zero (`set_math_modes`)
    divergence_loss: float | None
    early_stopping: EarlyStoppingSettings
    # trainer.console is read by the runner before validation: a refused config gets its line too


def validate(cfg: DictConfig | Mapping[str, Any]) -> tuple[dict[str, Any], TrainerSettings]:
    """The resolved config as plain containers and its trainer settings; `ConfigError` (one
    line: key, value, what is allowed) for the first value that is not allowed."""
    plain = config.check_config(cfg)
    _check_activation_params(plain["activation"])
    check_activation_numbers(plain["activation"])
    settings = trainer_settings(plain["trainer"])
    check_model_fits(plain, settings.device)
    return plain, settings


def trainer_settings(trainer: Mapping[str, Any]) -> TrainerSettings:
    """`TrainerSettings` from a `trainer` section whose values passed `fitscope.config`."""
    device, stopping = resolve_device(trainer["device"]), trainer["early_stopping"]
    return TrainerSettings(
        epochs=trainer["epochs"],
        steps=trainer.get("steps"),
        batch_size=trainer["batch_size"],
        eval_batch_size=trainer["eval_batch_size"],
        train_eval_samples=trainer["train_eval_samples"],
        device=device,
        seed=trainer["seed"],
        deterministic=trainer["deterministic"],
        diagnostics=trainer["diagnostics"],
        compile=_resolve_compile(trainer["compile"], trainer["device"], device),
        graph_fallback=trainer["compile"] == "auto",
        precision=trainer["precision"],
        tf32=trainer["tf32"],
        flush_denormal=trainer["flush_denormal"],
        divergence_loss=trainer["divergence_loss"],
        early_stopping=EarlyStoppingSettings(
            enabled=stopping["enabled"],
            patience=stopping["patience"],
            min_delta=stopping["min_delta"],
        ),
    )


def steps_per_epoch(samples: int, batch_size: int) -> int:
    """Optimizer steps in one epoch over `samples` (the last batch may be smaller)."""
    return max(1, math.ceil(samples / batch_size))


def epochs_for_steps(steps: int, samples: int, batch_size: int) -> int:
    """The fewest whole epochs over `samples` that take at least `steps` optimizer steps."""
    return max(1, math.ceil(steps / steps_per_epoch(samples, batch_size)))


def with_step_budget(
    settings: TrainerSettings, samples: int
) -> tuple[TrainerSettings, dict[str, Any]]:
    """`settings` with the epochs its budget gives on `samples` training samples, and that
    budget as summary.json records it: `kind` (`steps` or `epochs`), `steps` (asked for, or
    null), `steps_per_epoch`, `epochs`, `steps_planned` (epochs x steps per epoch: a step budget
    is rounded up to whole epochs)."""
    per_epoch = steps_per_epoch(samples, settings.batch_size)
    epochs = settings.epochs
    if settings.steps is not None:
        epochs = epochs_for_steps(settings.steps, samples, settings.batch_size)
        settings = dataclasses.replace(settings, epochs=epochs)
    budget = {
        "kind": "epochs" if settings.steps is None else "steps",
        "steps": settings.steps,
        "steps_per_epoch": per_epoch,
        "epochs": epochs,
        "steps_planned": epochs * per_epoch,
    }
    return settings, budget


def resolve_device(name: str) -> torch.device:
    """The torch device `trainer.device` names; `auto` is cuda, then mps, then cpu."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(name.partition(":")[2] or 0)
        if index >= count:
            raise ConfigError(
                f"trainer.device={name} is invalid: this machine has {count} CUDA device(s); "
                "use trainer.device=auto or cpu"
            )
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("trainer.device=mps is invalid: MPS is not available; use auto or cpu")
    return torch.device(name)


def job_device(device: torch.device, setting: str, gpu_slot: int | None) -> torch.device:
    """The device of a sweep's job whose launcher runs several jobs at once on one machine
    (`gpu_slot`: its job number; None for one run after another): with `trainer.device=auto`
    and several visible GPUs, job N trains on visible GPU N mod their count, so parallel jobs
    spread over the GPUs instead of all taking the first. A launcher that gives each job its
    own GPU (SLURM with gpus_per_node, Ray with num_gpus) makes it the only visible one, so it
    is used (submitit_local shows every job the same `gpus_per_node` GPUs: they are spread
    over too). An explicit `trainer.device` is kept."""
    if setting != "auto" or device.type != "cuda" or gpu_slot is None:
        return device
    count = torch.cuda.device_count()
    return torch.device("cuda", gpu_slot % count) if count > 1 else device


def gpu_slot(launcher_target: str, job_num: int) -> int | None:
    """The slot `job_device` spreads a sweep's job by: its job number, when its launcher may
    run jobs side by side (any but Hydra's basic launcher, which runs one after another in one
    process and keeps the prepared data on one device, and fitscope's packed launcher, whose
    packs and runs alone all train in its process, on one device)."""
    one_device = (".BasicLauncher", ".PackedLauncher")
    return None if launcher_target.endswith(one_device) else job_num


def _resolve_compile(mode: str, device_name: str, device: torch.device) -> str:
    """The step `trainer.compile=mode` means on `device`: `auto` is graph on CUDA, else none."""
    if mode == "auto":
        return "graph" if device.type == "cuda" else "none"
    if mode == "graph" and device.type != "cuda":
        raise ConfigError(
            f"trainer.compile=graph is invalid on {device.type} (trainer.device={device_name}): "
            "CUDA graphs need a CUDA device; expected auto, torch_compile or none"
        )
    return mode


def _check_activation_params(activation: Mapping[str, Any]) -> None:
    accepted = set(inspect.signature(activation_class(activation["name"])).parameters)
    accepted -= {"inplace", "approximate"}
    for key in activation:
        if key != "name" and key not in accepted:
            allowed = ", ".join(sorted(accepted)) or "none"
            raise ConfigError(
                f"activation.{key} is not a parameter of activation={activation['name']}: "
                f"its parameters are {allowed}"
            )
