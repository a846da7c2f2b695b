"""MLP construction: depth, width, dropout, init by activation, the final-activation opt-in."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fitscope.train.models import build_mlp, count_parameters, resolve_init

RELU = {"name": "relu"}


def test_depth_zero_is_a_linear_classifier():
    model = build_mlp(784, 10, depth=0, width=100, activation=RELU)
    assert [type(m) for m in model] == [nn.Linear]
    assert count_parameters(model) == 784 * 10 + 10


def test_depth_and_width_set_the_hidden_layers():
    model = build_mlp(
        784,
        10,
        depth=2,
        width=200,
        activation={"name": "leaky", "negative_slope": 0.2},
        dropout=0.5,
    )
    kinds = [type(m) for m in model]
    assert kinds == [
        nn.Linear,
        nn.LeakyReLU,
        nn.Dropout,
        nn.Linear,
        nn.LeakyReLU,
        nn.Dropout,
        nn.Linear,
    ]
    assert model[1].negative_slope == 0.2
    assert count_parameters(model) == (784 * 200 + 200) + (200 * 200 + 200) + (200 * 10 + 10)


def test_final_activation_is_opt_in():
    plain = build_mlp(20, 10, 1, 8, {"name": "sigmoid"})
    tutorial = build_mlp(20, 10, 1, 8, {"name": "sigmoid"}, final_activation=True)
    assert isinstance(plain[-1], nn.Linear)
    assert isinstance(tutorial[-1], nn.Sigmoid)
    assert ((tutorial(torch.randn(4, 20)) >= 0) & (tutorial(torch.randn(4, 20)) <= 1)).all()


@pytest.mark.parametrize(
    ("activation", "scheme"),
    [
        ("relu", "kaiming"),
        ("leaky", "kaiming"),
        ("gelu", "kaiming"),
        ("selu", "lecun"),
        ("tanh", "xavier"),
        ("sigmoid", "xavier"),
    ],
)
def test_auto_init_follows_the_activation(activation, scheme):
    assert resolve_init("auto", activation) == scheme
    assert resolve_init("orthogonal", activation) == "orthogonal"


@pytest.mark.parametrize(
    ("activation", "std"), [("relu", math.sqrt(2 / 1000)), ("selu", math.sqrt(1 / 1000))]
)
def test_init_scale(activation, std):
    torch.manual_seed(0)
    model = build_mlp(1000, 10, depth=1, width=1000, activation={"name": activation})
    assert model[0].weight.std().item() == pytest.approx(std, rel=0.02)
    assert (model[0].bias == 0).all()


def test_default_init_keeps_pytorch_init():
    torch.manual_seed(0)
    model = build_mlp(1000, 10, depth=1, width=100, activation=RELU, init="default")
    bound = 1 / math.sqrt(1000)  # nn.Linear's own uniform init
    assert model[0].weight.abs().max().item() <= bound
    assert (model[0].bias != 0).any()
