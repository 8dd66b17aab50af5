"""Training objectives: pure formulas in `functional`, config-selectable wrappers here.

A wrapper is built from a loss config (`name` plus its parameters, e.g. configs/loss/kd.yaml),
checks its parameters when built, and is called as
`loss(student_logits, teacher_logits, batch) -> (loss, {part name: tensor})`.
`needs_teacher` tells the training loop whether to run the teacher; `needs_labels` whether
the loss reads the labels (runs whose student has no labels refuse losses that do).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping

from kdrun.errors import ConfigError

LOSSES: dict[str, Callable] = {}


def register_loss(name: str):
    def add(cls):
        cls.name = name
        LOSSES[name] = cls
        return cls

    return add


def build_loss(cfg: Mapping, where: str = "loss"):
    """Instantiate the loss `cfg["name"]`; `where` names the config key in error messages."""
    options = dict(cfg)
    name = options.pop("name", None)
    if name not in LOSSES:
        raise ConfigError(f"{where}: unknown loss {name!r}; allowed: {', '.join(sorted(LOSSES))}")
    cls = LOSSES[name]
    allowed = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ConfigError(f"{where}: loss {name!r} has no option {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    missing = sorted(allowed - set(options))
    if missing:
        raise ConfigError(f"{where}: loss {name!r} needs {', '.join(missing)}")
    try:
        return cls(**options)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None


def check_alpha(alpha: float, where: str) -> None:
    if not is_number(alpha) or not 0.0 <= float(alpha) <= 1.0:
        raise ConfigError(f"{where}.alpha={alpha} is outside [0, 1] (the teacher's weight in the mixture)")


def check_temperature(temperature: float, where: str) -> None:
    if not is_number(temperature) or not float(temperature) > 0.0:
        raise ConfigError(f"{where}.temperature={temperature} must be > 0")


def check_fraction(value, key: str, where: str) -> None:
    if not is_number(value) or not 0.0 <= float(value) <= 1.0:
        raise ConfigError(f"{where}.{key}={value} is outside [0, 1]")


def check_flag(value, key: str, where: str) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}.{key}={value!r} must be true or false")


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# Import the loss families so they register themselves.
from kdrun.losses import baselines, controls, distillation, features, label, ptloss, retrieval  # noqa: E402,F401
