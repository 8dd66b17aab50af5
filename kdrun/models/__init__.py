"""One model zoo: any architecture can be the teacher or the student.

Every model is `head(features(x))`: `features` ends at the penultimate representation
(used by feature-based metrics and losses), `head` is the final linear layer.
"""

from __future__ import annotations

import logging
from typing import Callable, Mapping

from torch import nn

from kdrun.errors import ConfigError
from kdrun.models.options import building_as

log = logging.getLogger(__name__)

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str):
    def add(builder):
        MODELS[name] = builder
        return builder

    return add


class ZooModel(nn.Module):
    def __init__(self, features: nn.Module, head: nn.Module):
        super().__init__()
        self.features, self.head = features, head

    def forward(self, x):
        return self.head(self.features(x))


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def build_model(cfg: Mapping, input_shape, role: str = "model") -> nn.Module:
    """Build the architecture `cfg["name"]` with the remaining keys as its arguments."""
    options = dict(cfg)
    name = options.pop("name", None)
    if name not in MODELS:
        raise ConfigError(f"{role}.model.name={name!r} is unknown; allowed: {', '.join(sorted(MODELS))}")
    try:
        with building_as(role):  # option errors name `<role>.model.<option>`
            model = MODELS[name](input_shape=tuple(input_shape), **options)
    except TypeError as error:  # an unexpected keyword: name it with the model
        raise ConfigError(f"{role}.model ({name}): {error}") from error
    log.debug("built %s %s: %s parameters", role, name, f"{count_parameters(model):,}")
    return model


# Import the architectures so they register themselves.
from kdrun.models import cnn, linear, mlp, preact_resnet, resnet_cifar, torchvision_models, vgg, vit  # noqa: E402,F401
