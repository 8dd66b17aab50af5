"""The losses' registry and `build_loss(cfg)`: a loss config (`name` plus its options) -> a loss.

A loss is a dataclass whose fields are exactly its options (configs/loss/NAME.yaml), so a
misspelt or missing option is named before anything trains.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

from kdrun.errors import ConfigError
from kdrun.losses.interface import Loss
from kdrun.registry import Registry

LOSSES = Registry("loss", "loss.name")


def register_loss(name: str):
    """Class decorator: register a `Loss` subclass under `name` (and set its `name`)."""
    def add(cls):
        if not (isinstance(cls, type) and issubclass(cls, Loss)):
            raise TypeError(f"loss {name!r}: {cls!r} is not a kdrun.losses.interface.Loss")
        cls.name = name
        return LOSSES.register(name)(cls)

    return add


def build_loss(cfg: Mapping, where: str = "loss") -> Loss:
    """Instantiate the loss `cfg["name"]`; `where` names the config key in error messages."""
    options = dict(cfg)
    name = options.pop("name", None)
    if name not in LOSSES:
        raise ConfigError(f"{where}: unknown loss {name!r}; allowed: {', '.join(LOSSES.names())}")
    cls = LOSSES.get(name)
    allowed = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ConfigError(f"{where}: loss {name!r} has no option {', '.join(unknown)}; "
                          f"allowed: {', '.join(sorted(allowed))}")
    missing = sorted(allowed - set(options))
    if missing:
        raise ConfigError(f"{where}: loss {name!r} needs {', '.join(missing)}")
    try:
        return cls(**options)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None
