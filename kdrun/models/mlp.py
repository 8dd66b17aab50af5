"""Multi-layer perceptron on the flattened input."""

from __future__ import annotations

import math

from torch import nn

from kdrun.errors import ConfigError
from kdrun.models import ZooModel, register_model

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


@register_model("mlp")
def mlp(input_shape, num_classes: int, depth: int = 2, width: int = 128,
        activation: str = "relu", dropout: float = 0.0) -> ZooModel:
    if activation not in ACTIVATIONS:
        raise ConfigError(f"mlp activation={activation!r} is unknown; allowed: {', '.join(ACTIVATIONS)}")
    if depth < 0 or width < 1:
        raise ConfigError(f"mlp needs depth >= 0 and width >= 1, got depth={depth}, width={width}")
    layers: list[nn.Module] = [nn.Flatten()]
    fan_in = math.prod(input_shape)
    for _ in range(depth):
        layers += [nn.Linear(fan_in, width), ACTIVATIONS[activation]()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        fan_in = width
    return ZooModel(nn.Sequential(*layers), nn.Linear(fan_in, num_classes))
