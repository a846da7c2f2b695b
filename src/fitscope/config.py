"""The validate stage: every config value is checked before any data is loaded.

A bad value raises `ConfigError` with one line that names the key, the value and what is
allowed, e.g. `model.depth=-1 is invalid: expected an integer >= 0`.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
from collections.abc import Callable
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from fitscope import FitscopeError
from fitscope.data import DATASETS
from fitscope.models import ACTIVATIONS, INITS
from fitscope.steps import COMPILE_MODES, OPTIMIZERS, PRECISIONS

CONSOLE_MODES = ("auto", "epochs", "runs", "quiet")
# Config keys that change what is shown, never what is computed: left out of the config hash,
# of the differences between runs, of run names and of TensorBoard's hyperparameters.
DISPLAY_KEYS = ("trainer.console", "report", "logger")


def is_display_key(key: str) -> bool:
    """True for a dotted key (`report.patience`, `trainer.console`) that only changes display."""
    return any(key == k or key.startswith(k + ".") for k in DISPLAY_KEYS)


_ABSENT = object()


class ConfigError(FitscopeError):
    pass


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def integer(low: int) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: _is_int(v) and v >= low), f"an integer >= {low}"


def number(
    low: float, high: float | None = None, *, low_open: bool = False, high_open: bool = True
):
    def check(v: Any) -> bool:
        if not _is_number(v) or v < low or (low_open and v == low):
            return False
        return high is None or v < high or (not high_open and v == high)

    left = "(" if low_open else "["
    if high is None:
        return check, f"a number {'>' if low_open else '>='} {low:g}"
    return check, f"a number in {left}{low:g}, {high:g}{')' if high_open else ']'}"


def one_of(*choices: str) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v in choices), f"one of {', '.join(choices)}"


BOOLEAN = ((lambda v: isinstance(v, bool)), "true or false")
STRING = ((lambda v: isinstance(v, str) and v != ""), "a non-empty path")
NULL_OR_NAME = (
    (lambda v: v is None or (isinstance(v, str) and re.fullmatch(r"[\w.+-]+", v) is not None)),
    "null or a folder name (letters, digits, _ . + -)",
)
NULL_OR_FOLDS = ((lambda v: v is None or (_is_int(v) and v >= 2)), "null or an integer >= 2")
NULL_OR_POSITIVE = ((lambda v: v is None or (_is_number(v) and v > 0)), "null or a number > 0")
BETAS = (
    (
        lambda v: (
            isinstance(v, (list, tuple))
            and len(v) == 2
            and all(_is_number(b) and 0 <= b < 1 for b in v)
        )
    ),
    "two numbers in [0, 1), e.g. [0.9,0.999]",
)
DEVICE = (
    (lambda v: isinstance(v, str) and re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", v) is not None),
    "auto, cpu, cuda, cuda:N or mps",
)

# key -> (check, what is allowed, required)
RULES: dict[str, tuple[Callable[[Any], bool], str, bool]] = {
    key: (*rule, required)
    for key, rule, required in [
        ("data.name", one_of(*DATASETS), True),
        ("data.val_fraction", number(0, 1, low_open=True), True),
        ("data.test_fraction", number(0, 1, low_open=True), False),
        ("data.split_seed", integer(0), True),
        ("data.folds", NULL_OR_FOLDS, False),
        ("data.fold", integer(0), False),
        ("data.root", STRING, False),
        ("data.download", BOOLEAN, False),
        ("model.depth", integer(0), True),
        ("model.width", integer(1), True),
        ("model.dropout", number(0, 1), True),
        ("model.init", one_of(*INITS), True),
        ("model.final_activation", BOOLEAN, True),
        ("activation.name", one_of(*ACTIVATIONS), True),
        ("activation.negative_slope", number(0), False),
        ("activation.beta", number(0, low_open=True), False),
        ("activation.alpha", number(0, low_open=True), False),
        ("optimizer.name", one_of(*OPTIMIZERS), True),
        ("optimizer.lr", number(0, low_open=True), True),
        ("optimizer.weight_decay", number(0), True),
        ("optimizer.grad_clip", NULL_OR_POSITIVE, True),
        ("optimizer.momentum", number(0, 1), False),
        ("optimizer.nesterov", BOOLEAN, False),
        ("optimizer.betas", BETAS, False),
        ("optimizer.eps", number(0, low_open=True), False),
        ("trainer.epochs", integer(1), True),
        ("trainer.batch_size", integer(1), True),
        ("trainer.eval_batch_size", integer(1), True),
        ("trainer.device", DEVICE, True),
        ("trainer.seed", integer(0), True),
        ("trainer.deterministic", BOOLEAN, True),
        ("trainer.diagnostics", BOOLEAN, True),
        ("trainer.compile", one_of(*COMPILE_MODES), True),
        ("trainer.precision", one_of(*PRECISIONS), True),
        ("trainer.tf32", BOOLEAN, True),
        ("trainer.divergence_loss", NULL_OR_POSITIVE, True),
        ("trainer.early_stopping.enabled", BOOLEAN, True),
        ("trainer.early_stopping.patience", integer(1), True),
        ("trainer.early_stopping.min_delta", number(0), True),
        ("trainer.console", one_of(*CONSOLE_MODES), True),
        (
            "logger.visdom.server",
            ((lambda v: isinstance(v, str) and "://" in v), "a URL such as http://localhost"),
            False,
        ),
        ("logger.visdom.port", integer(1), False),
        ("logger.visdom.env", NULL_OR_NAME, False),
        ("logger.visdom.images", integer(0), False),
        ("logger.visdom.timeout", number(0, low_open=True), False),
        ("report.enabled", BOOLEAN, True),
        ("report.dir", STRING, True),
        ("report.name", NULL_OR_NAME, True),
        ("report.patience", integer(1), True),
        ("report.min_delta", number(0), True),
        ("report.overfit_rise", number(0, low_open=True), True),
        ("report.underfit_train_acc", number(0, 1, high_open=False), True),
        ("report.converge_window", number(0, 1, low_open=True, high_open=False), True),
        ("report.converge_tol", number(0), True),
        ("report.vanishing_ratio", number(0, low_open=True), True),
        ("report.exploding_norm", number(0, low_open=True), True),
    ]
}


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_show(v) for v in value) + "]"
    return (
        "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    )


def _lookup(container: dict[str, Any], key: str) -> Any:
    node: Any = container
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return _ABSENT
        node = node[part]
    return node


def validate(cfg: DictConfig) -> None:
    """Raise `ConfigError` for the first config value that is not allowed."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    for key, (check, allowed, required) in RULES.items():
        value = _lookup(plain, key)
        if value is _ABSENT:
            if required:
                raise ConfigError(f"{key} is missing: expected {allowed}")
        elif not check(value):
            raise ConfigError(f"{key}={_show(value)} is invalid: expected {allowed}")
    _validate_activation_params(cfg)
    folds = cfg.data.get("folds")
    if folds and cfg.data.get("fold", 0) >= folds:
        raise ConfigError(
            f"data.fold={cfg.data.fold} is invalid: expected an integer in [0, {folds - 1}] "
            f"(data.folds={folds})"
        )
    if cfg.optimizer.name == "momentum":
        for key in ("momentum", "nesterov"):
            if key not in cfg.optimizer:
                raise ConfigError(f"optimizer.{key} is missing: optimizer=momentum needs it")
    device = resolve_device(cfg.trainer.device)
    if cfg.trainer.compile == "graph" and device.type != "cuda":
        raise ConfigError(
            f"trainer.compile=graph is invalid on {device.type} (trainer.device="
            f"{cfg.trainer.device}): CUDA graphs need a CUDA device; expected auto, "
            "torch_compile or none"
        )


def _validate_activation_params(cfg: DictConfig) -> None:
    cls = ACTIVATIONS[cfg.activation.name]
    accepted = set(inspect.signature(cls).parameters) - {"inplace", "approximate"}
    for key in cfg.activation:
        if key != "name" and key not in accepted:
            allowed = ", ".join(sorted(accepted)) or "none"
            raise ConfigError(
                f"activation.{key} is not a parameter of activation={cfg.activation.name}: "
                f"its parameters are {allowed}"
            )


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


def config_hash(cfg: DictConfig) -> str:
    """A short hash of the resolved config, console mode, report and logger settings left out
    (they change what is shown, not what is computed): same hash, same run."""
    container = OmegaConf.to_container(cfg, resolve=True)
    for key in DISPLAY_KEYS:
        section, _, leaf = key.rpartition(".")
        (container.get(section, {}) if section else container).pop(leaf, None)
    text = json.dumps(container, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
