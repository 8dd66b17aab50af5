"""Multi-layer perceptron on the flattened input."""

from __future__ import annotations

import math

from torch import nn

from kdrun.models.registry import ZooModel, register_model
from kdrun.models.options import dropout_probability, one_of, whole

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


@register_model("mlp")
def mlp(input_shape, num_classes: int, depth: int = 2, width: int = 128,
        activation: str = "relu", dropout: float = 0.0) -> ZooModel:
    one_of("mlp", "activation", activation, tuple(ACTIVATIONS))
    whole("mlp", "depth", depth, minimum=0, meaning="hidden layers; 0 is a linear model on the input")
    whole("mlp", "width", width, minimum=1, meaning="units per hidden layer")
    dropout = dropout_probability("mlp", dropout)
    layers: list[nn.Module] = [nn.Flatten()]
    fan_in = math.prod(input_shape)
    for _ in range(depth):
        layers += [nn.Linear(fan_in, width), ACTIVATIONS[activation]()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        fan_in = width
    return ZooModel(nn.Sequential(*layers), nn.Linear(fan_in, num_classes))
