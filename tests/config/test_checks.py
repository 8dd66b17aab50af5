"""The value checks every config check is built from: what each accepts, and the message form of a refusal."""

from __future__ import annotations

import math

import numpy as np
import pytest
from omegaconf import OmegaConf

from kdrun.errors import ConfigError
from kdrun.config.checks import (SEED_MAX, check_choice, check_flag, check_fraction, check_keys, check_list,
                                check_mapping, check_number, check_seed, check_string, check_whole_number, show)


def refused(check, *args, **kwargs) -> str:
    with pytest.raises(ConfigError) as error:
        check(*args, **kwargs)
    return str(error.value)


def test_numbers_are_finite_non_boolean_and_within_their_bounds():
    assert check_number(0.5, "a.b", 0, 1) == 0.5 and check_number(3, "a.b", low=0) == 3
    assert check_number(np.float32(0.25), "a.b", 0, 1) == 0.25
    assert check_number(None, "a.b", allow_none=True) is None
    assert refused(check_number, "abc", "a.b", low=0) == "a.b='abc' is not a number; allowed: a number >= 0"
    assert refused(check_number, True, "a.b") == "a.b=True is not a number; allowed: a number"
    for bad in (math.nan, math.inf, -math.inf):
        assert "is not a finite number" in refused(check_number, bad, "a.b")
    assert refused(check_number, 0, "a.b", low=0, low_inclusive=False, meaning="a rate") == \
        "a.b=0 is too small; allowed: a number > 0 (a rate)"
    assert refused(check_number, 1.0, "a.b", 0, 1, high_inclusive=False) == \
        "a.b=1.0 is too large; allowed: a number in [0, 1)"
    assert "or null" in refused(check_number, "x", "a.b", allow_none=True)
    assert "is not a number" in refused(check_number, None, "a.b")


def test_whole_numbers_and_seeds():
    assert check_whole_number(3, "n", minimum=1) == 3 and check_whole_number(np.int64(2), "n") == 2
    assert check_whole_number(None, "n", allow_none=True) is None
    for bad in (2.0, "2", True, math.nan, math.inf):
        assert "is not a whole number" in refused(check_whole_number, bad, "n", minimum=1)
    assert refused(check_whole_number, 0, "n", minimum=1) == "n=0 is too small; allowed: a whole number >= 1"
    assert check_seed(0, "seed") == 0 and check_seed(SEED_MAX, "seed") == SEED_MAX
    assert refused(check_seed, -1, "seed") == "seed=-1 is too small; allowed: a whole number in [0, 4294967295]"
    assert "too large" in refused(check_seed, SEED_MAX + 1, "seed")
    assert check_seed(None, "seeds.init", allow_none=True) is None


def test_fractions_flags_choices_and_strings():
    assert check_fraction(0, "f") == 0 and check_fraction(1, "f") == 1
    assert refused(check_fraction, 0, "f", low_inclusive=False, high_inclusive=False) == \
        "f=0 is too small; allowed: a number in (0, 1)"
    assert check_flag(False, "x.on") is False
    for bad in (0, 1, "true", None):
        assert refused(check_flag, bad, "x.on") == f"x.on={bad!r} is not true or false; allowed: true or false"
    assert check_choice("b", "k", ("a", "b")) == "b" and check_choice(None, "k", (None, "a")) is None
    assert refused(check_choice, "c", "k", ("a", None, True)) == "k='c' is unknown; allowed: a, null, true"
    assert "is unknown" in refused(check_choice, 0, "k", (False, "auto"))  # 0 is not false
    assert check_string("runs/x", "p") == "runs/x"
    for bad in ("  ", 1, None):
        assert "is not a non-empty string" in refused(check_string, bad, "p")


def test_mappings_lists_and_keys():
    block = OmegaConf.create({"a": 1})
    assert check_mapping(block, "blk") is block and check_mapping(None, "blk", allow_none=True) is None
    assert refused(check_mapping, "abc", "blk").startswith("blk='abc' is not a mapping; allowed: ")
    assert check_list(OmegaConf.create([1, 2]), "l", length=2) == [1, 2] and check_list((3,), "l") == [3]
    assert check_list(None, "l", allow_none=True) is None
    for bad in ("ab", 5, {"a": 1}):
        assert "is not a list" in refused(check_list, bad, "l")
    assert refused(check_list, [1], "l", length=2) == "l=[1] has 1 item; allowed: a list of 2 items"
    check_keys(block, "blk", ("a", "b"))
    assert refused(check_keys, OmegaConf.create({"c": 2}), "blk", ("a", "b")) == \
        "blk.c=2 is not a setting of this block; allowed: a, b"


def test_values_are_shown_as_the_config_spells_them():
    assert [show(v) for v in (None, True, False, 1.0, 0.5, "x")] == ["null", "true", "false", "1", "0.5", "x"]
