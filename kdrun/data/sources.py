"""What a data source gives a run: its train-pool / val / test splits (`SourceSplits`), and helpers to build them.

A source is a function `cfg -> SourceSplits`, registered by name (kdrun.data.registry);
`data.source` selects it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from kdrun.config.checks import check_fraction
from kdrun.errors import ConfigError


@dataclass
class Split:
    """One split: a dataset of (x, y) pairs, its labels, and the Bayes probabilities if known."""

    dataset: Dataset
    targets: np.ndarray
    oracle_probs: np.ndarray | None = None  # p*(y|x), shape (n, num_classes), synthetic sources only
    ids: np.ndarray | None = None  # the samples' own ids (text files' id column), where a source has them

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
    # "classification": one class per sample; "next_token": a sample is a window of tokens (kdrun.data.text),
    # its label the window shifted by one, and num_classes the vocabulary of `tokenizer`, shared by both models
    task: str = "classification"
    tokenizer: object | None = None
    # the training pool as the teacher reads it, where that differs (data.corruption); same samples, same indices
    teacher_train: Split | None = None
    probe: object | None = None  # kdrun.data.text.ProbeSpec: where data.corruption shows in clean text
    probe_masks: dict[str, np.ndarray] | None = None  # per split: (windows, block_size) probe positions
    # "tensor": x is a tensor; "text": x is a tuple of one or two strings that each model tokenizes itself
    # (kdrun.data.text_classification), so teacher and student may use different tokenizers
    input_kind: str = "tensor"
    class_names: tuple[str, ...] | None = None

    def split(self, name: str) -> Split:
        """A split by name; `teacher_train` is the teacher's view of the training pool (the pool itself if the same)."""
        if name == "teacher_train":
            return self.teacher_train or self.train
        return getattr(self, name)


def subset_split(split: Split, indices: np.ndarray) -> Split:
    """The samples `indices` of a split, as a split of its own (positions become 0..len-1)."""
    oracle = None if split.oracle_probs is None else split.oracle_probs[indices]
    ids = None if split.ids is None else split.ids[indices]
    return Split(Subset(split.dataset, indices.tolist()), split.targets[indices], oracle, ids)


def carve_validation(train: Split, held_out: float | int, seed: int, key: str = "data.val_fraction") -> tuple[Split, Split]:
    """(training pool, validation split): a seeded, class-stratified share of `train` held out, a fraction
    or (an int) a number of samples."""
    from sklearn.model_selection import train_test_split

    if not isinstance(held_out, int):
        check_fraction(held_out, key, False, False)
    positions = np.arange(len(train))
    try:
        keep, held = train_test_split(positions, test_size=held_out, stratify=train.targets, random_state=seed)
    except ValueError as error:  # too few samples of a class to stratify
        raise ConfigError(f"{key}={held_out}: a validation split cannot be carved from the {len(train)} training "
                          f"samples class by class ({error})") from None
    return subset_split(train, np.sort(keep)), subset_split(train, np.sort(held))


def tensor_split(x: np.ndarray, y: np.ndarray, oracle: np.ndarray | None = None) -> Split:
    dataset = TensorDataset(torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.long))
    return Split(dataset=dataset, targets=np.asarray(y, dtype=np.int64), oracle_probs=oracle)
