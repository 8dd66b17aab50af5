"""Data sources: each returns train-pool / val / test splits as in-memory or torchvision datasets.

A source is a function `cfg -> SourceSplits`, registered by name; `data.source` selects it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from kdrun.errors import ConfigError


@dataclass
class Split:
    """One split: a dataset of (x, y) pairs, its labels, and the Bayes probabilities if known."""

    dataset: Dataset
    targets: np.ndarray
    oracle_probs: np.ndarray | None = None  # p*(y|x), shape (n, num_classes), synthetic sources only

    def __len__(self) -> int:
        return len(self.targets)


@dataclass
class SourceSplits:
    """A source's splits. Image sources yield uint8 tensors (C, H, W) and give their
    normalisation statistics; augmentation and normalisation are applied by the loaders
    (kdrun.data.transforms), so per-sample outputs can be computed on un-augmented inputs."""

    train: Split  # the training pool from which teacher and student subsets are drawn
    val: Split
    test: Split
    num_classes: int
    input_shape: tuple[int, ...]
    image: bool = False  # x is a uint8 image tensor (C, H, W); else a float tensor used as is
    mean: tuple[float, ...] | None = None  # per-channel normalisation statistics (images)
    std: tuple[float, ...] | None = None
    # Every split's samples are already decoded in memory (arrays or tensors; no file read per sample),
    # so the fast data path may gather whole splits once (kdrun.data.in_memory). False for image folders.
    samples_in_memory: bool = True
    # The closed form of p*(y|x) as a function of a batch of inputs (n, *input_shape) -> (n, classes),
    # for sources that have one: oracle (Bayes) teachers call it on any input, not only stored samples.
    bayes_probs: Callable[[np.ndarray], np.ndarray] | None = None


SOURCES: dict[str, Callable[..., SourceSplits]] = {}


def register_source(name: str):
    def add(fn):
        SOURCES[name] = fn
        return fn

    return add


def load_source(cfg) -> SourceSplits:
    if cfg.source not in SOURCES:
        raise ConfigError(f"data.source={cfg.source!r} is unknown; allowed: {', '.join(sorted(SOURCES))}")
    splits = SOURCES[cfg.source](cfg)
    if splits.num_classes != cfg.num_classes:
        raise ConfigError(
            f"data.num_classes={cfg.num_classes} but source {cfg.source!r} has {splits.num_classes} classes"
        )
    return splits


def subset_split(split: Split, indices: np.ndarray) -> Split:
    """The samples `indices` of a split, as a split of its own (positions become 0..len-1)."""
    oracle = None if split.oracle_probs is None else split.oracle_probs[indices]
    return Split(Subset(split.dataset, indices.tolist()), split.targets[indices], oracle)


def carve_validation(train: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """(training pool, validation split): a seeded, class-stratified `fraction` of `train` held out."""
    from sklearn.model_selection import train_test_split

    _check_fraction("data.val_fraction", fraction)
    positions = np.arange(len(train))
    keep, held_out = train_test_split(positions, test_size=fraction, stratify=train.targets, random_state=seed)
    return subset_split(train, np.sort(keep)), subset_split(train, np.sort(held_out))


def tensor_split(x: np.ndarray, y: np.ndarray, oracle: np.ndarray | None = None) -> Split:
    dataset = TensorDataset(torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.long))
    return Split(dataset=dataset, targets=np.asarray(y, dtype=np.int64), oracle_probs=oracle)


@register_source("digits")
def load_digits(cfg) -> SourceSplits:
    """scikit-learn's bundled 8x8 digits, scaled to [0, 1], with stratified seeded splits."""
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    bunch = sklearn_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]  # (n, 1, 8, 8)
    y = bunch.target.astype(np.int64)
    _check_fraction("data.test_fraction", cfg.test_fraction)
    _check_fraction("data.val_fraction", cfg.val_fraction)
    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=cfg.test_fraction, stratify=y, random_state=cfg.split_seed
    )
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=cfg.val_fraction, stratify=y_rest, random_state=cfg.split_seed
    )
    return SourceSplits(
        train=tensor_split(x_train, y_train),
        val=tensor_split(x_val, y_val),
        test=tensor_split(x_test, y_test),
        num_classes=10,
        input_shape=(1, 8, 8),
    )


def _check_fraction(key: str, value: float) -> None:
    if not 0.0 < float(value) < 1.0:
        raise ConfigError(f"{key}={value} must be a fraction strictly between 0 and 1")


# Register the built-in sources.
from kdrun.data import synthetic  # noqa: E402,F401
from kdrun.data import torchvision_sources  # noqa: E402,F401  (registers the torchvision sources)
