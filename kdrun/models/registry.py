"""The model zoo's registry and its one builder: `build_model(cfg, input_shape, role)`."""

from __future__ import annotations

import logging
from typing import Mapping

from torch import nn

from kdrun.errors import ConfigError
from kdrun.models.options import building_as
from kdrun.registry import Registry

log = logging.getLogger("kdrun.models")

MODELS = Registry("model", "model.name")
register_model = MODELS.register


class ZooModel(nn.Module):
    """Every zoo model is `head(features(x))`: `features` ends at the penultimate representation
    (used by feature-based metrics and losses), `head` is the final linear layer."""

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
    builder = MODELS.get(name, f"{role}.model.name")
    try:
        with building_as(role):  # option errors name `<role>.model.<option>`
            model = builder(input_shape=tuple(input_shape), **options)
    except TypeError as error:  # an unexpected keyword: name it with the model
        raise ConfigError(f"{role}.model ({name}): {error}") from error
    log.debug("built %s %s: %s parameters", role, name, f"{count_parameters(model):,}")
    return model
