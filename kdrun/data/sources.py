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
from kdrun.value_checks import check_choice, check_fraction, check_list, check_seed, check_whole_number


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
# Each source's check of its own options (configs/data/<name>.yaml), from the config alone.
SOURCE_OPTION_CHECKS: dict[str, Callable[..., None]] = {}


def register_source(name: str, options: Callable[..., None] | None = None):
    """Register a loader `cfg -> SourceSplits`; `options(cfg)` checks the source's own settings
    before anything loads (also from validate_config, before anything is built)."""
    def add(fn):
        SOURCES[name] = fn
        if options is not None:
            SOURCE_OPTION_CHECKS[name] = options
        return fn

    return add


def check_source_config(cfg) -> None:
    """`data.source`, the source's own options, and the shape and class count it is declared with."""
    check_choice(cfg.get("source"), "data.source", sorted(SOURCES))
    if cfg.source in SOURCE_OPTION_CHECKS:  # first: the declared shape may be made of them (image_size)
        SOURCE_OPTION_CHECKS[cfg.source](cfg)
    check_whole_number(cfg.get("num_classes"), "data.num_classes", minimum=1, allow_none=True,
                       meaning="null only for image_folder until its class folders are counted")
    shape = check_list(cfg.get("input_shape"), "data.input_shape", allow_none=True,
                       meaning="the source's input shape, e.g. [3, 32, 32]")
    for index, size in enumerate(shape or []):
        check_whole_number(size, f"data.input_shape[{index}]", minimum=1)
    check_fraction(cfg.get("val_fraction", 0.1), "data.val_fraction", False, False,
                   meaning="the validation share held out of the training data")
    check_seed(cfg.get("split_seed", 0), "data.split_seed", meaning="the validation and test splits")


def load_source(cfg) -> SourceSplits:
    check_source_config(cfg)
    splits = SOURCES[cfg.source](cfg)
    if splits.num_classes != cfg.num_classes:
        raise ConfigError(
            f"data.num_classes={cfg.num_classes} but source {cfg.source!r} has {splits.num_classes} classes"
        )
    shape = cfg.get("input_shape")
    if shape is not None and tuple(shape) != tuple(splits.input_shape):
        raise ConfigError(f"data.input_shape={list(shape)} but source {cfg.source!r} yields inputs of shape "
                          f"{list(splits.input_shape)}; allowed: {list(splits.input_shape)} (or null: the source's)")
    return splits


def subset_split(split: Split, indices: np.ndarray) -> Split:
    """The samples `indices` of a split, as a split of its own (positions become 0..len-1)."""
    oracle = None if split.oracle_probs is None else split.oracle_probs[indices]
    return Split(Subset(split.dataset, indices.tolist()), split.targets[indices], oracle)


def carve_validation(train: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """(training pool, validation split): a seeded, class-stratified `fraction` of `train` held out."""
    from sklearn.model_selection import train_test_split

    check_fraction(fraction, "data.val_fraction", False, False)
    positions = np.arange(len(train))
    keep, held_out = train_test_split(positions, test_size=fraction, stratify=train.targets, random_state=seed)
    return subset_split(train, np.sort(keep)), subset_split(train, np.sort(held_out))


def tensor_split(x: np.ndarray, y: np.ndarray, oracle: np.ndarray | None = None) -> Split:
    dataset = TensorDataset(torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.long))
    return Split(dataset=dataset, targets=np.asarray(y, dtype=np.int64), oracle_probs=oracle)


def _check_digits_options(cfg) -> None:
    check_fraction(cfg.get("test_fraction"), "data.test_fraction", False, False,
                   meaning="digits ships without a test split: the share carved for it")


@register_source("digits", options=_check_digits_options)
def load_digits(cfg) -> SourceSplits:
    """scikit-learn's bundled 8x8 digits, scaled to [0, 1], with stratified seeded splits."""
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    bunch = sklearn_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]  # (n, 1, 8, 8)
    y = bunch.target.astype(np.int64)
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


# Register the built-in sources.
from kdrun.data import synthetic  # noqa: E402,F401
from kdrun.data import torchvision_sources  # noqa: E402,F401  (registers the torchvision sources)
