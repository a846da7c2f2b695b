"""The config's vocabulary and the rules every value must meet. Needs no torch: the training
wing validates a run with it, the report wing its own settings.

A bad value raises `ConfigError` with one line that names the key, the value and what is
allowed, e.g. `model.depth=-1 is invalid: expected an integer >= 0`. Rules that need torch (the
device exists, CUDA graphs need CUDA, an activation's own parameters) are checked where the
trainer settings are built (`fitscope.train.settings`).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fitscope import FitscopeError

# Names that a config may hold, each owned here; the training wing maps them to torch objects.
EMBEDDED_DATASETS = ("mnist5k", "digits")
TORCHVISION_DATASETS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "kmnist": "KMNIST"}
DATASETS = EMBEDDED_DATASETS + tuple(TORCHVISION_DATASETS)
# `activation.name` -> the torch.nn module it builds; every other key of the group is its argument.
ACTIVATIONS = {
    "relu": "ReLU",
    "leaky": "LeakyReLU",
    "selu": "SELU",
    "sigmoid": "Sigmoid",
    "tanh": "Tanh",
    "softplus": "Softplus",
    "elu": "ELU",
    "gelu": "GELU",
    "silu": "SiLU",
    "mish": "Mish",
}
INITS = ("auto", "default", "kaiming", "lecun", "xavier", "orthogonal")
# What `model.init=auto` picks for each activation.
AUTO_INIT: dict[str, str] = {
    "relu": "kaiming",
    "leaky": "kaiming",
    "elu": "kaiming",
    "gelu": "kaiming",
    "silu": "kaiming",
    "mish": "kaiming",
    "softplus": "kaiming",
    "selu": "lecun",
    "sigmoid": "xavier",
    "tanh": "xavier",
}
OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
COMPILE_MODES = ("auto", "graph", "torch_compile", "none")
PRECISIONS = ("fp32", "bf16")
CONSOLE_MODES = ("auto", "epochs", "runs", "quiet")
# Config keys that change what is shown, never what is computed: left out of the config hash,
# of the differences between runs, of run names and of TensorBoard's hyperparameters.
DISPLAY_KEYS = ("trainer.console", "report", "logger")


class ConfigError(FitscopeError):
    pass


def is_display_key(key: str) -> bool:
    """True for a dotted key (`report.patience`, `trainer.console`) that only changes display."""
    return any(key == k or key.startswith(k + ".") for k in DISPLAY_KEYS)


def show_value(value: Any) -> str:
    """A config value as the command line writes it: `null` for None (or a missing value read as
    NaN), `true`/`false`, integers as integers, lists as `[a,b]`."""
    if hasattr(value, "item") and not isinstance(value, (list, tuple, str)):
        value = value.item()  # a numpy scalar, as pandas hands values back
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(show_value(v) for v in value) + "]"
    return str(value)


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as dotted keys (`model.depth`), depth first; a list value becomes its
    command-line text (`[0.9,0.999]`); empty sections leave no key."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            flat.update(flatten_config(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = show_value(value) if isinstance(value, list) else value
    return flat


def config_hash(cfg: DictConfig) -> str:
    """A short hash of the resolved config, console mode, report and logger settings left out
    (they change what is shown, not what is computed): same hash, same run."""
    return container_hash(OmegaConf.to_container(cfg, resolve=True))


def container_hash(container: Mapping[str, Any]) -> str:
    """`config_hash` of a config given as plain containers, already resolved (a run's
    config.yaml, read as data)."""
    container = json.loads(json.dumps(container, default=str))  # a copy, whatever it holds
    for key in DISPLAY_KEYS:
        section, _, leaf = key.rpartition(".")
        part = container.get(section, {}) if section else container
        if isinstance(part, dict):
            part.pop(leaf, None)
    text = json.dumps(container, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------ rules

Rule = tuple[Callable[[Any], bool], str]  # (check, what is allowed)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """A finite int or float: NaN and infinity are never a setting."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def integer(low: int) -> Rule:
    return (lambda v: _is_int(v) and v >= low), f"an integer >= {low}"


def number(
    low: float, high: float | None = None, *, low_open: bool = False, high_open: bool = True
) -> Rule:
    def check(v: Any) -> bool:
        if not _is_number(v) or v < low or (low_open and v == low):
            return False
        return high is None or v < high or (not high_open and v == high)

    left = "(" if low_open else "["
    if high is None:
        return check, f"a finite number {'>' if low_open else '>='} {low:g}"
    return check, f"a number in {left}{low:g}, {high:g}{')' if high_open else ']'}"


def one_of(*choices: str) -> Rule:
    return (lambda v: v in choices), f"one of {', '.join(choices)}"


BOOLEAN: Rule = ((lambda v: isinstance(v, bool)), "true or false")
PATH: Rule = ((lambda v: isinstance(v, str) and v != ""), "a non-empty path")


def _is_folder_name(value: Any) -> bool:
    """One path component: no separator, not `.` or `..`, so it stays inside its parent."""
    return (
        isinstance(value, str)
        and re.fullmatch(r"[\w.+-]+", value) is not None
        and value not in (".", "..")
    )


NULL_OR_NAME: Rule = (
    (lambda v: v is None or _is_folder_name(v)),
    "null or a folder name (letters, digits, _ . + -; not . or ..)",
)
NULL_OR_COUNT: Rule = ((lambda v: v is None or (_is_int(v) and v >= 1)), "null or an integer >= 1")
TRAIN_EVAL: Rule = (
    (lambda v: v is None or v == "auto" or (_is_int(v) and v >= 1)),
    "auto, null (all training samples) or an integer >= 1",
)
NULL_OR_FOLDS: Rule = ((lambda v: v is None or (_is_int(v) and v >= 2)), "null or an integer >= 2")
NULL_OR_POSITIVE: Rule = (
    (lambda v: v is None or (_is_number(v) and v > 0)),
    "null or a finite number > 0",
)
BETAS: Rule = (
    (
        lambda v: (
            isinstance(v, (list, tuple))
            and len(v) == 2
            and all(_is_number(b) and 0 <= b < 1 for b in v)
        )
    ),
    "two numbers in [0, 1), e.g. [0.9,0.999]",
)
DEVICE: Rule = (
    (lambda v: isinstance(v, str) and re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", v) is not None),
    "auto, cpu, cuda, cuda:N or mps",
)
URL: Rule = ((lambda v: isinstance(v, str) and "://" in v), "a URL such as http://localhost")

REPORT_METRICS = ("best_val_loss", "best_val_acc", "test_acc", "test_loss")
NULL_OR_KEY: Rule = (
    (lambda v: v is None or (isinstance(v, str) and re.fullmatch(r"[\w.]+", v) is not None)),
    "null or a config key such as activation or model.depth",
)
NULL_OR_TWO_KEYS: Rule = (
    (
        lambda v: (
            v is None
            or (
                isinstance(v, (list, tuple))
                and len(v) in (1, 2)
                and len(set(v)) == len(v)
                and all(isinstance(k, str) and re.fullmatch(r"[\w.]+", k) for k in v)
            )
        )
    ),
    "null or one or two distinct config keys, e.g. [activation,model.depth]",
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
        ("data.root", PATH, False),
        ("data.download", BOOLEAN, False),
        ("model.name", one_of("mlp"), True),
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
        ("trainer.steps", NULL_OR_COUNT, False),
        ("trainer.batch_size", integer(1), True),
        ("trainer.eval_batch_size", integer(1), True),
        ("trainer.train_eval_samples", TRAIN_EVAL, True),
        ("trainer.device", DEVICE, True),
        ("trainer.seed", integer(0), True),
        ("trainer.deterministic", BOOLEAN, True),
        ("trainer.diagnostics", BOOLEAN, True),
        ("trainer.compile", one_of(*COMPILE_MODES), True),
        ("trainer.precision", one_of(*PRECISIONS), True),
        ("trainer.tf32", BOOLEAN, True),
        ("trainer.flush_denormal", BOOLEAN, True),
        ("trainer.divergence_loss", NULL_OR_POSITIVE, True),
        ("trainer.early_stopping.enabled", BOOLEAN, True),
        ("trainer.early_stopping.patience", integer(1), True),
        ("trainer.early_stopping.min_delta", number(0), True),
        ("trainer.console", one_of(*CONSOLE_MODES), True),
        ("logger.visdom.server", URL, False),
        ("logger.visdom.port", integer(1), False),
        ("logger.visdom.env", NULL_OR_NAME, False),
        ("logger.visdom.images", integer(0), False),
        ("logger.visdom.timeout", number(0, low_open=True), False),
        ("report.enabled", BOOLEAN, True),
        ("report.dir", PATH, True),
        ("report.name", NULL_OR_NAME, True),
        ("report.patience", integer(1), True),
        ("report.min_delta", number(0), True),
        ("report.overfit_rise", number(0, low_open=True), True),
        ("report.underfit_train_acc", number(0, 1, high_open=False), True),
        ("report.converge_window", number(0, 1, low_open=True, high_open=False), True),
        ("report.converge_tol", number(0), True),
        ("report.vanishing_ratio", number(0, low_open=True), True),
        ("report.exploding_norm", number(0, low_open=True), True),
        ("report.smooth_window", integer(1), True),
        ("report.noise_tolerance", number(0), True),
        ("report.chance_margin", number(0, 1), True),
        ("report.collapse_ratio", number(0, low_open=True), True),
        ("report.unit_share", number(0, 1, low_open=True, high_open=False), True),
        ("report.metric", one_of(*REPORT_METRICS), True),
        ("report.matrix", NULL_OR_TWO_KEYS, True),
        ("report.group_by", NULL_OR_KEY, True),
        ("report.extremes", integer(0), True),
        ("report.run_panels", integer(0), True),
    ]
}

_ABSENT = object()


def _lookup(container: Mapping[str, Any], key: str) -> Any:
    node: Any = container
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _ABSENT
        node = node[part]
    return node


def _as_typed(value: Any) -> str:
    """A refused value as the command line wrote it (NaN is `nan` here, not a missing value),
    in one line: a control character such as a newline written as an escape (`a\\nb`)."""
    text = "nan" if isinstance(value, float) and math.isnan(value) else show_value(value)
    if any(not c.isprintable() for c in text):
        return repr(text)
    return text


def check_values(config: Mapping[str, Any], sections: Iterable[str] | None = None) -> None:
    """Raise `ConfigError` for the first value of `config` (plain nested containers) that a rule
    refuses, in `sections` only if given (`("report",)` checks the report's settings)."""
    chosen = None if sections is None else tuple(f"{s}." for s in sections)
    for key, (check, allowed, required) in RULES.items():
        if chosen is not None and not key.startswith(chosen):
            continue
        value = _lookup(config, key)
        if value is _ABSENT:
            if required:
                raise ConfigError(f"{key} is missing: expected {allowed}")
        elif not check(value):
            raise ConfigError(f"{key}={_as_typed(value)} is invalid: expected {allowed}")


def nearest_key(key: str) -> str | None:
    """The known key a mistyped one most likely meant: the closest spelling (`model.dpeth` ->
    `model.depth`), else one with the same last part (`lr` -> `optimizer.lr`)."""
    close = difflib.get_close_matches(key, RULES, n=1, cutoff=0.6)
    if close:
        return close[0]
    leaf = key.rpartition(".")[2]
    same_leaf = [k for k in RULES if k.rpartition(".")[2] == leaf]
    return same_leaf[0] if len(same_leaf) == 1 else None


def check_known_keys(config: Mapping[str, Any]) -> None:
    """Raise `ConfigError` for the first key no rule knows (a typo that Hydra's `+key=value`
    hint would otherwise add silently, training the default instead)."""
    for key, value in flatten_config(config).items():
        if key not in RULES:
            nearest = nearest_key(key)
            hint = f"did you mean {nearest}?" if nearest else "the keys are listed in conf/"
            raise ConfigError(
                f"{key}={show_value(value)} is invalid: fitscope has no key {key}; {hint}"
            )


def check_config(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """Check every key and value of a run's config and how values depend on each other; return
    the resolved config as plain containers."""
    try:
        config = (
            OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
        )
    except OmegaConfBaseException as error:  # an interpolation that cannot be resolved
        key = getattr(error, "full_key", None) or "a value"
        raise ConfigError(f"{key} cannot be resolved: {str(error).splitlines()[0]}") from None
    check_known_keys(config)
    check_values(config)
    data, optimizer = config["data"], config["optimizer"]
    folds = data.get("folds")
    if folds and data.get("fold", 0) >= folds:
        raise ConfigError(
            f"data.fold={data['fold']} is invalid: expected an integer in [0, {folds - 1}] "
            f"(data.folds={folds})"
        )
    if optimizer["name"] == "momentum":
        for key in ("momentum", "nesterov"):
            if key not in optimizer:
                raise ConfigError(f"optimizer.{key} is missing: optimizer=momentum needs it")
    return config
