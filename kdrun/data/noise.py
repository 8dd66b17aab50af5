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

KINDS = ("none", "symmetric", "class_dependent")


def apply_label_noise(targets: np.ndarray, num_classes: int, kind: str, fraction: float, seed: int,
                      mapping: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(noisy labels, boolean mask of flipped samples)."""
    if kind not in KINDS:
        raise ConfigError(f"data.label_noise.kind={kind!r} is unknown; allowed: {', '.join(KINDS)}")
    mask = np.zeros(len(targets), dtype=bool)
    if kind == "none" or fraction == 0:
        return targets.copy(), mask
    if not 0.0 <= float(fraction) <= 1.0:
        raise ConfigError(f"data.label_noise.fraction={fraction} is outside [0, 1]")
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
