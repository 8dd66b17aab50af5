"""Option checks shared by the zoo builders, so every family rejects bad values the same way.

Each message names the model, the option, the bad value and what is allowed.
"""

from __future__ import annotations

from torch import nn

from kdrun.errors import ConfigError


def image_input(model: str, input_shape) -> tuple[int, int, int]:
    """(channels, height, width) of an image input, or a ConfigError for any other shape."""
    if len(input_shape) != 3:
        raise ConfigError(f"{model} needs image input (channels, height, width); got input shape {list(input_shape)}")
    return tuple(int(size) for size in input_shape)


def width_multiplier(model: str, width) -> float:
    if isinstance(width, bool) or not isinstance(width, (int, float)) or width <= 0:
        raise ConfigError(f"{model} width={width!r} must be a number > 0 (a multiplier of the layer widths)")
    return float(width)


def scaled(size: int, width: float) -> int:
    """A layer width times the multiplier, rounded, never below one unit."""
    return max(1, round(size * width))


def one_of(model: str, option: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"{model} {option}={value!r}; allowed: {', '.join(map(str, allowed))}")


def flag(model: str, option: str, value) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{model} {option}={value!r} must be true or false")
    return value


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
