"""Option checks shared by the zoo builders, so every family rejects bad values the same way.

Each message names the option by its config key (`student.model.width=nan ...`), the bad value,
what is allowed and the model. A builder is called with its options only (its signature lists
exactly the options of its zoo file), so the role it is built for reaches these checks from
`build_model` through `building_as`.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar

from torch import nn

from kdrun.errors import ConfigError
from kdrun.config.checks import check_choice, check_flag, check_number, check_seed, check_whole_number

_ROLE: ContextVar[str] = ContextVar("zoo_role", default="model")


@contextmanager
def building_as(role: str):
    """Inside: option errors name `<role>.model.<option>` (teacher, student; `model` elsewhere)."""
    token = _ROLE.set(role)
    try:
        yield
    finally:
        _ROLE.reset(token)


def option_key(option: str) -> str:
    return f"{_ROLE.get()}.model.{option}"


def image_input(model: str, input_shape) -> tuple[int, int, int]:
    """(channels, height, width) of an image input, or a ConfigError for any other shape."""
    if len(input_shape) != 3:
        raise ConfigError(f"{model} needs image input (channels, height, width); got input shape {list(input_shape)}")
    return tuple(int(size) for size in input_shape)


def width_multiplier(model: str, width) -> float:
    return float(check_number(width, option_key("width"), low=0, low_inclusive=False,
                              meaning=f"{model}: a multiplier of the layer widths"))


def scaled(size: int, width: float) -> int:
    """A layer width times the multiplier, rounded, never below one unit."""
    return max(1, round(size * width))


def one_of(model: str, option: str, value, allowed) -> None:
    check_choice(value, option_key(option), tuple(allowed), meaning=model)


def flag(model: str, option: str, value) -> bool:
    return check_flag(value, option_key(option), meaning=model)


def whole(model: str, option: str, value, minimum: int = 1, allow_none: bool = False, meaning: str = "") -> int:
    """A whole-number option (layer counts and sizes)."""
    return check_whole_number(value, option_key(option), minimum=minimum, allow_none=allow_none,
                              meaning=f"{model}: {meaning}" if meaning else model)


def seed(model: str, option: str, value) -> int:
    return check_seed(value, option_key(option), meaning=model)


def dropout_probability(model: str, value, option: str = "dropout") -> float:
    """A dropout probability in [0, 1) (1 would drop everything)."""
    return float(check_number(value, option_key(option), 0, 1, high_inclusive=False,
                              meaning=f"{model}: the probability of zeroing a unit in training"))


def init_conv_like_torchvision(module: nn.Module) -> None:
    """He-normal (fan_out) convolutions, BatchNorm weight 1 / bias 0: torchvision's ResNet initialisation."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
