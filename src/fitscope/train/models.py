"""The model stage: MLPs built from the `model` and `activation` config groups, and the
`best.pt` checkpoint that saves and loads them."""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fitscope.config import ACTIVATIONS, AUTO_INIT, INITS
from fitscope.rundir import atomic_file


def activation_class(name: str) -> type[nn.Module]:
    """The torch.nn module class an `activation.name` builds (`fitscope.config.ACTIVATIONS`)."""
    return getattr(nn, ACTIVATIONS[name])


def make_activation(activation: Mapping[str, Any]) -> nn.Module:
    """The module for an `activation` config, e.g. {"name": "leaky", "negative_slope": 0.1}."""
    params = {key: value for key, value in activation.items() if key != "name"}
    return activation_class(activation["name"])(**params)


def resolve_init(init: str, activation_name: str) -> str:
    """The init scheme that `init` means for this activation (`auto` becomes a concrete scheme)."""
    return AUTO_INIT.get(activation_name, "default") if init == "auto" else init


def activation_gain(activation: Mapping[str, Any]) -> float:
    """The gain that keeps activations' variance steady through this nonlinearity."""
    name = activation["name"]
    if name == "leaky":
        return nn.init.calculate_gain("leaky_relu", activation.get("negative_slope", 0.01))
    if name == "tanh":
        return nn.init.calculate_gain("tanh")
    if AUTO_INIT.get(name) == "kaiming":
        return nn.init.calculate_gain("relu")
    return 1.0


@torch.no_grad()
def initialize(model: nn.Module, scheme: str, activation: Mapping[str, Any]) -> None:
    """Re-initialize every Linear layer of `model` with `scheme`; biases start at zero."""
    if scheme == "default":
        return
    gain = activation_gain(activation)
    for layer in model.modules():
        if not isinstance(layer, nn.Linear):
            continue
        fan_in = layer.weight.shape[1]
        if scheme == "kaiming":
            nn.init.normal_(layer.weight, 0.0, gain / math.sqrt(fan_in))
        elif scheme == "lecun":
            nn.init.normal_(layer.weight, 0.0, 1.0 / math.sqrt(fan_in))
        elif scheme == "xavier":
            nn.init.xavier_uniform_(layer.weight, gain=gain)
        elif scheme == "orthogonal":
            nn.init.orthogonal_(layer.weight, gain=gain)
        else:
            raise ValueError(f"unknown init scheme {scheme!r}; allowed: {', '.join(INITS)}")
        nn.init.zeros_(layer.bias)


def mlp_args(config: Mapping[str, Any], in_features: int, n_classes: int) -> dict[str, Any]:
    """The arguments of `build_mlp` (and of `best.pt`) for a run's config and data shape."""
    model = config["model"]
    keys = ("depth", "width", "dropout", "init", "final_activation")
    return {
        "in_features": in_features,
        "n_classes": n_classes,
        **{key: model[key] for key in keys},
        "activation": config["activation"],
    }


def build_mlp(
    in_features: int,
    n_classes: int,
    depth: int,
    width: int,
    activation: Mapping[str, Any],
    dropout: float = 0.0,
    init: str = "auto",
    final_activation: bool = False,
) -> nn.Sequential:
    """`depth` hidden layers of `width` units, then a Linear layer that gives `n_classes` logits.

    Depth 0 is a linear classifier. `final_activation=True` appends the activation after the
    output layer (reproduces the classic tutorial's mistake; the loss then sees squashed logits).
    """
    layers: list[nn.Module] = []
    fan_in = in_features
    for _ in range(depth):
        layers += [nn.Linear(fan_in, width), make_activation(activation)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        fan_in = width
    layers.append(nn.Linear(fan_in, n_classes))
    if final_activation:
        layers.append(make_activation(activation))
    model = nn.Sequential(*layers)
    initialize(model, resolve_init(init, activation["name"]), activation)
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def save_checkpoint(
    path: Path, state_dict: Mapping[str, torch.Tensor], model_args: Mapping[str, Any], epoch: int
) -> str:
    """The weights `state_dict` (moved to the CPU) with what `load_checkpoint` needs, written
    atomically (a full disk leaves the old file or none, never a part; a link in its place is
    replaced, never written through); returns the file's SHA-256, for summary.json."""
    cpu_state = {key: tensor.detach().cpu() for key, tensor in state_dict.items()}
    buffer = io.BytesIO()
    torch.save({"state_dict": cpu_state, "model_args": dict(model_args), "epoch": epoch}, buffer)
    data = buffer.getbuffer()
    with atomic_file(path, "wb") as file:
        file.write(data)
    return hashlib.sha256(data).hexdigest()


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> nn.Sequential:
    """The model saved in a run's `best.pt`, with its best-epoch weights, in eval mode."""
    checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    model = build_mlp(**checkpoint["model_args"])
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()
