"""The value checks every config check is made of, so each kind of bad value is refused the same way.

Each check returns the value it accepted and otherwise raises a ConfigError of the form
`<full.key>=<value!r> <what is wrong>; allowed: <what is allowed> (<what the setting means>)`.
Values come from YAML and the command line, so a boolean is never a number (`true` is not 1),
a float is never a whole number (`2.0` is not a step count), and nan and inf are not numbers
any setting accepts.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence

from kdrun.errors import ConfigError

SEED_MAX = 2**32 - 1  # numpy's and Lightning's seed range is [0, 2**32 - 1]


def is_number(value) -> bool:
    """A real number (int or float, nan and inf included), and not a boolean."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_finite_number(value) -> bool:
    return is_number(value) and (isinstance(value, numbers.Integral) or math.isfinite(value))


def is_whole_number(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def show(value) -> str:
    """A value as the config spells it: null, true/false, names bare, numbers without a trailing .0."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def fail(key: str, value, problem: str, allowed: str, meaning: str | None = None):
    """Raise the ConfigError of a bad value (`problem` says what is wrong with it)."""
    raise ConfigError(f"{key}={value!r} {problem}; allowed: {allowed}" + (f" ({meaning})" if meaning else ""))


def range_text(low=None, high=None, low_inclusive: bool = True, high_inclusive: bool = True) -> str:
    """`in [0, 1)`, `> 0`, `<= 10`, or "" without bounds."""
    if low is not None and high is not None:
        return f"in {'[' if low_inclusive else '('}{show(low)}, {show(high)}{']' if high_inclusive else ')'}"
    if low is not None:
        return f"{'>=' if low_inclusive else '>'} {show(low)}"
    if high is not None:
        return f"{'<=' if high_inclusive else '<'} {show(high)}"
    return ""


def _allowed(kind: str, bounds: str, allow_none: bool) -> str:
    return f"{kind} {bounds}".strip() + (", or null" if allow_none else "")


def _check_bounds(value, key, allowed, meaning, low, high, low_inclusive, high_inclusive) -> None:
    if low is not None and (value < low or (value == low and not low_inclusive)):
        fail(key, value, "is too small", allowed, meaning)
    if high is not None and (value > high or (value == high and not high_inclusive)):
        fail(key, value, "is too large", allowed, meaning)


def check_number(value, key: str, low=None, high=None, low_inclusive: bool = True, high_inclusive: bool = True,
                 allow_none: bool = False, meaning: str | None = None):
    """A finite number (int or float) within the bounds given; returned unchanged."""
    if value is None and allow_none:
        return None
    allowed = _allowed("a number", range_text(low, high, low_inclusive, high_inclusive), allow_none)
    if not is_number(value):
        fail(key, value, "is not a number", allowed, meaning)
    if not is_finite_number(value):
        fail(key, value, "is not a finite number", allowed, meaning)
    _check_bounds(value, key, allowed, meaning, low, high, low_inclusive, high_inclusive)
    return value


def check_whole_number(value, key: str, minimum=None, maximum=None, allow_none: bool = False,
                       meaning: str | None = None):
    """An int (not a float, not a boolean) in [minimum, maximum]."""
    if value is None and allow_none:
        return None
    allowed = _allowed("a whole number", range_text(minimum, maximum), allow_none)
    if not is_whole_number(value):
        fail(key, value, "is not a whole number", allowed, meaning)
    _check_bounds(value, key, allowed, meaning, minimum, maximum, True, True)
    return int(value)


def check_fraction(value, key: str, low_inclusive: bool = True, high_inclusive: bool = True,
                   allow_none: bool = False, meaning: str | None = None):
    """A number in [0, 1] (either end may be excluded)."""
    return check_number(value, key, 0, 1, low_inclusive, high_inclusive, allow_none, meaning)


def check_unit_interval(value, key: str, meaning: str | None = None):
    """A finite number in [0, 1], worded as the loss options' checks have always been
    (`kd.alpha=1.5 is outside [0, 1] (the teacher's weight in the mixture)`, quoted in the README)."""
    if not is_finite_number(value) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"{key}={value} is outside [0, 1]" + (f" ({meaning})" if meaning else ""))
    return value


def check_seed(value, key: str, allow_none: bool = False, meaning: str | None = None):
    """A seed: a whole number in [0, 2**32 - 1], the range every generator kdrun seeds accepts."""
    return check_whole_number(value, key, 0, SEED_MAX, allow_none, meaning)


def check_flag(value, key: str, meaning: str | None = None) -> bool:
    """true or false (not 0/1, not a string)."""
    if not isinstance(value, bool):
        fail(key, value, "is not true or false", "true or false", meaning)
    return value


def check_choice(value, key: str, allowed: Sequence, meaning: str | None = None):
    """One of `allowed`, of the same type (the string "1" is not the number 1, 0 is not false)."""
    if not any(value is option or (type(value) is type(option) and value == option) for option in allowed):
        fail(key, value, "is unknown", ", ".join(show(option) for option in allowed), meaning)
    return value


def check_string(value, key: str, allow_none: bool = False, meaning: str | None = None) -> str | None:
    """A non-empty string."""
    if value is None and allow_none:
        return None
    if not isinstance(value, str) or not value.strip():
        fail(key, value, "is not a non-empty string", "a non-empty string" + (", or null" if allow_none else ""),
             meaning)
    return value


def check_mapping(value, key: str, allow_none: bool = False, meaning: str | None = None) -> Mapping | None:
    """A mapping (a config block of `key: value` settings)."""
    if value is None and allow_none:
        return None
    if not isinstance(value, Mapping):
        fail(key, value, "is not a mapping", f"a block of settings such as {key}.NAME=VALUE"
             + (", or null" if allow_none else ""), meaning)
    return value


def check_list(value, key: str, length: int | None = None, allow_none: bool = False,
               meaning: str | None = None) -> list | None:
    """A list (of `length` items when given); its items are the caller's to check, as `key[i]`."""
    if value is None and allow_none:
        return None
    allowed = (f"a list of {length} items" if length is not None else "a list such as [a, b]") + \
        (", or null" if allow_none else "")
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
        fail(key, value, "is not a list", allowed, meaning)
    if length is not None and len(value) != length:
        fail(key, value, f"has {len(value)} item{'' if len(value) == 1 else 's'}", allowed, meaning)
    return list(value)


def check_keys(mapping: Mapping, key: str, allowed: Sequence) -> None:
    """No settings in the block `key` but `allowed` (a misspelt setting would be ignored silently)."""
    for name in mapping:
        if name not in allowed:
            fail(f"{key}.{name}", mapping[name], "is not a setting of this block", ", ".join(allowed))


AUTO_SWITCH = ("auto", "true", "false")


def auto_switch(node, key: str, where: str) -> str:
    """An `auto | true | false` option as one of those strings (YAML and the command line give booleans;
    0 and 1 are not booleans here)."""
    value = node.get(key, "auto")
    if isinstance(value, bool):
        return "true" if value else "false"
    return check_choice(value, f"{where}.{key}", AUTO_SWITCH)


def auto_switch_applies(node, key: str, where: str, obstacle, needs: str) -> bool:
    """Whether an `auto | true | false` optimisation applies: `auto` when `obstacle()` names nothing
    in its way, `true` where something is in its way is a ConfigError naming it."""
    mode = auto_switch(node, key, where)
    if mode == "false":
        return False
    reason = obstacle()
    if reason is not None and mode == "true":
        raise ConfigError(f"{where}.{key}=true {needs}, but {reason}; allowed: {where}.{key}=auto or false")
    return reason is None
