"""Values that pass the config's rules but that the code could not use: validation checks what
the model will do with them, before anything is built or written.

- An activation's parameters: the init gain and the activation's output must be finite (a
  `negative_slope` of 1e308 overflows the gain; one of 1e300 makes outputs infinite).
- The model's size: its weights, gradients and optimizer state must fit in the device's memory
  (`model.width=1000000000000` is refused in one line, not sent to the allocator).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import torch

from fitscope.config import ConfigError, show_value
from fitscope.train.models import activation_gain, make_activation

PROBE = (-1e3, -1.0, -1e-3, 0.0, 1e-3, 1.0, 1e3)  # inputs an activation must map to numbers
FEATURES = {"digits": 64}  # inputs per sample; every other dataset has MNIST's 28 x 28
CLASSES = 10
# bytes per parameter while training: fp32 weight, its gradient, two optimizer moments (Adam)
BYTES_PER_PARAMETER = 16


def check_activation_numbers(activation: Mapping[str, Any]) -> None:
    """`ConfigError` when the activation's parameters give a gain or outputs that are not
    finite numbers."""
    params = {key: value for key, value in activation.items() if key != "name"}
    if not params:
        return
    shown = ", ".join(f"activation.{k}={show_value(v)}" for k, v in params.items())
    allowed = "a moderate value (the init gain and the outputs for inputs in [-1000, 1000] finite)"
    try:
        gain = activation_gain(activation)
        with torch.no_grad():
            out = make_activation(activation)(torch.tensor(PROBE, dtype=torch.float32))
    except OverflowError:
        raise ConfigError(
            f"{shown} is invalid: the init gain overflows; expected {allowed}"
        ) from None
    except (ValueError, ZeroDivisionError, RuntimeError, TypeError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(f"{shown} is invalid: {reason}; expected {allowed}") from None
    if not (math.isfinite(gain) and gain > 0):
        raise ConfigError(f"{shown} is invalid: the init gain is {gain:g}; expected {allowed}")
    if not torch.isfinite(out).all():
        raise ConfigError(
            f"{shown} is invalid: {activation['name']} gives non-finite outputs; expected {allowed}"
        )


def parameter_count(depth: int, width: int, features: int, classes: int = CLASSES) -> int:
    """An MLP's weights and biases: `depth` hidden layers of `width` units (Python integers:
    never overflows)."""
    if depth == 0:
        return features * classes + classes
    return (features + 1) * width + (depth - 1) * (width + 1) * width + (width + 1) * classes


def device_memory(device: torch.device) -> int | None:
    """The memory the device has, in bytes; None where it cannot be told."""
    try:
        if device.type == "cuda":
            return int(torch.cuda.get_device_properties(device).total_memory)
        if device.type == "cpu":
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError, RuntimeError):
        return None
    return None


def check_model_fits(plain: Mapping[str, Any], device: torch.device) -> None:
    """`ConfigError` when the model's weights, gradients and optimizer state alone would not fit
    in the device's memory."""
    memory = device_memory(device)
    model = plain["model"]
    depth, width = int(model["depth"]), int(model["width"])
    features = FEATURES.get(plain["data"]["name"], 28 * 28)
    params = parameter_count(depth, width, features)
    need = params * BYTES_PER_PARAMETER
    if memory is None or need <= memory:
        return
    raise ConfigError(
        f"model.width={width} model.depth={depth} is invalid: the model would have "
        f"{_count(params)} parameters, about {_bytes(need)} with their gradients and optimizer "
        f"state, more than this {device.type} device's {_bytes(memory)} of memory; expected a "
        "model that fits"
    )


def _count(count: float) -> str:
    """A number of any size in 3 significant digits (1.42e+10): a Python int may be too large
    for a float, so it is then written from its digits."""
    try:
        return f"{float(count):.3g}"
    except OverflowError:
        return f"{Decimal(count):.2e}"


def _bytes(count: int) -> str:
    for unit, size in (("PiB", 2**50), ("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if count >= size:
            return f"{_count(count // size if count > 2**1000 else count / size)} {unit}"
    return f"{count:.0f} bytes"
