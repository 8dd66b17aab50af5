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

from kdrun import value_checks
from kdrun.errors import ConfigError
from kdrun.value_checks import check_number, is_finite_number

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


# check_alpha and check_fraction keep their own wording (`kd.alpha=2 is outside [0, 1] (...)`, the value
# shown as written), which the README quotes; the other checks are kdrun.value_checks' own.
def check_alpha(alpha: float, where: str) -> None:
    if not is_finite_number(alpha) or not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"{where}.alpha={alpha} is outside [0, 1] (the teacher's weight in the mixture)")


def check_temperature(temperature: float, where: str) -> None:
    check_number(temperature, f"{where}.temperature", low=0, low_inclusive=False)


def check_fraction(value, key: str, where: str) -> None:
    if not is_finite_number(value) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"{where}.{key}={value} is outside [0, 1]")


def check_flag(value, key: str, where: str) -> None:
    value_checks.check_flag(value, f"{where}.{key}")


def is_number(value) -> bool:
    """A finite number (not a boolean): what every numeric loss option must be before its range is checked."""
    return is_finite_number(value)


# Import the loss families so they register themselves.
from kdrun.losses import baselines, controls, distillation, features, label, ptloss, retrieval  # noqa: E402,F401
