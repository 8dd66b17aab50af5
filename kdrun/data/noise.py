"""Label noise on the training pool: symmetric or class-dependent flips, seeded, with the mask kept.

- symmetric: exactly round(fraction * n) samples, chosen at random, get a label drawn
  uniformly from the other classes;
- class_dependent: the same number of samples move to a fixed other class, class c -> (c + 1) mod K
  (the "pair flip" of the noisy-label literature), or to `mapping[c]` when a mapping is given.
Validation and test labels are never changed.
"""

from __future__ import annotations

import numpy as np

from kdrun.errors import ConfigError
from kdrun.config.checks import (check_choice, check_fraction, check_keys, check_list, check_mapping, check_seed,
                                check_whole_number)

KINDS = ("none", "symmetric", "class_dependent")


def check_label_noise_config(noise) -> None:
    """The `data.label_noise` block, whatever its kind (the mapping against the classes: apply_label_noise)."""
    key = "data.label_noise"
    noise = check_mapping(noise, key, allow_none=True) or {}
    check_keys(noise, key, ("kind", "fraction", "seed", "mapping"))
    _check_kind_and_fraction(noise.get("kind", "none"), noise.get("fraction", 0.0))
    check_seed(noise.get("seed", 0), f"{key}.seed", meaning="which labels flip")
    mapping = check_list(noise.get("mapping"), f"{key}.mapping", allow_none=True,
                         meaning="class_dependent: class c -> mapping[c]; null: c -> (c + 1) mod K") or []
    for index, target in enumerate(mapping):
        check_whole_number(target, f"{key}.mapping[{index}]", minimum=0, meaning="a class")


def _check_kind_and_fraction(kind, fraction) -> None:
    check_choice(kind, "data.label_noise.kind", KINDS)
    check_fraction(fraction, "data.label_noise.fraction", meaning="the share of training-pool labels flipped")


def apply_label_noise(targets: np.ndarray, num_classes: int, kind: str, fraction: float, seed: int,
                      mapping: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(noisy labels, boolean mask of flipped samples)."""
    _check_kind_and_fraction(kind, fraction)
    mask = np.zeros(len(targets), dtype=bool)
    if kind == "none" or fraction == 0:
        return targets.copy(), mask
    if num_classes < 2:
        raise ConfigError("label noise needs at least 2 classes")
    rng = np.random.default_rng(seed)
    flipped = rng.choice(len(targets), size=round(float(fraction) * len(targets)), replace=False)
    mask[flipped] = True
    noisy = targets.copy()
    if kind == "symmetric":
        # an offset in 1..K-1 lands uniformly on the other classes
        noisy[flipped] = (targets[flipped] + rng.integers(1, num_classes, size=len(flipped))) % num_classes
    else:
        table = np.asarray(mapping if mapping is not None else (np.arange(num_classes) + 1) % num_classes)
        if table.shape != (num_classes,) or (table == np.arange(num_classes)).any() or table.min() < 0 \
                or table.max() >= num_classes:
            raise ConfigError(
                f"data.label_noise.mapping={list(table)} must give, for each of the {num_classes} classes, "
                f"another class in 0..{num_classes - 1}"
            )
        noisy[flipped] = table[targets[flipped]]
    return noisy, mask
