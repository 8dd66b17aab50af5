"""The fast data path: a whole in-memory split as tensors, batched by slicing.

For sources whose samples sit in memory already (digits and the synthetic sources as tensors;
MNIST, Fashion-MNIST, CIFAR and SVHN as torchvision's decoded arrays) a DataLoader spends most
of its time fetching samples one by one, transforming and collating them again. Here each
split is gathered into (x, y, index) tensors once (images stay uint8, on the training device
when it is a GPU); an epoch permutes them with one gather and yields contiguous slices, and the
deterministic transforms (conversion to float, normalisation) run on each whole batch. The
batches are the DataLoader path's batches: the same samples, values, labels and dataset
indices, in the order of the same permutation function (`epoch_permutation`), so a run gives
the same metrics on either path. Augmentation draws per sample and keeps the DataLoader.

`data.fast_path`: auto (use it where it applies), true (use it, or say why it cannot apply),
false (always the DataLoader).
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from kdrun.data.samplers import epoch_permutation
from kdrun.data.transforms import augments
from kdrun.config.checks import auto_switch_applies



def tensors_of(dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(x, y) of a TensorDataset, also through Subset wrappers; None for any other dataset."""
    positions = None
    while isinstance(dataset, Subset):
        chosen = torch.as_tensor(dataset.indices, dtype=torch.long)
        positions = chosen if positions is None else chosen[positions]
        dataset = dataset.dataset
    if not isinstance(dataset, TensorDataset) or len(dataset.tensors) != 2:
        return None
    x, y = dataset.tensors
    return (x, y) if positions is None else (x[positions], y[positions])


GATHER_BATCH_SIZE = 1024


def split_tensors(splits, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) of a whole split before its transforms: a tensor source's own tensors, or the samples
    of an in-memory image source gathered once per run (uint8, as its loader reads them)."""
    dataset = splits.source.split(split).dataset
    tensors = tensors_of(dataset)
    if tensors is not None:
        return tensors
    if split not in splits.gathered:
        # the source's own per-sample reading (e.g. torchvision's array -> uint8 tensor), collated in blocks
        blocks = list(DataLoader(dataset, batch_size=GATHER_BATCH_SIZE))
        splits.gathered[split] = (torch.cat([x for x, _ in blocks]), torch.cat([y for _, y in blocks]))
    return splits.gathered[split]


def fast_path_obstacle(data_cfg, splits) -> str | None:
    """Why the in-memory path cannot serve these splits, or None when it can."""
    if augments(data_cfg):
        return f"data.augment={data_cfg.augment} draws random inputs per sample"
    if int(data_cfg.get("num_workers", 0)) != 0:
        return f"data.num_workers={data_cfg.num_workers} asks for loader worker processes"
    if splits.source.input_kind == "text":
        return f"data.source={data_cfg.source} gives raw text, which each model tokenizes itself"
    if not splits.source.samples_in_memory:
        return f"data.source={data_cfg.source} reads its samples from files one by one"
    return None


def use_fast_path(data_cfg, splits) -> bool:
    """Whether both stages batch in memory (ConfigError for `fast_path=true` where it cannot apply)."""
    return auto_switch_applies(data_cfg, "fast_path", "data", lambda: fast_path_obstacle(data_cfg, splits),
                               "needs an in-memory source without augmentation and with num_workers=0")


class EpochCounter:
    """Stands where a DataLoader's sampler stands: Lightning calls `set_epoch` before each epoch,
    so the permutation is a function of (seed, epoch), also after a resume."""

    def __init__(self):
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)


class InMemoryBatches:
    """(x, y, index) batches of tensors held in memory; shuffled per epoch iff order_seed is given."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, batch_size: int,
                 order_seed: int | None, drop_last: bool, permutation: Callable[[int, int, int], torch.Tensor],
                 transform: Callable | None = None):
        self.x, self.y, self.index = x, y, index
        self.transform = transform  # deterministic, applied to each whole batch (uint8 -> normalised float)
        self.batch_size, self.order_seed, self.drop_last = int(batch_size), order_seed, drop_last
        self.permutation = permutation
        self.sampler = EpochCounter()
        self.batch_sampler = None  # read by Lightning, as on a DataLoader that batches its sampler itself

    def __len__(self) -> int:
        size = len(self.index)
        return size // self.batch_size if self.drop_last else -(-size // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        x, y, index = self.x, self.y, self.index
        if self.order_seed is not None:
            # one gather per epoch; the batches below are then views, not per-batch copies
            order = self.permutation(len(index), self.order_seed, self.sampler.epoch).to(index.device)
            x, y, index = x[order], y[order], index[order]
        for batch in range(len(self)):
            cut = slice(batch * self.batch_size, (batch + 1) * self.batch_size)
            inputs = x[cut] if self.transform is None else self.transform(x[cut])
            yield inputs, y[cut], index[cut]


def in_memory_batches(splits, split: str, indices: np.ndarray | None = None, order_seed: int | None = None,
                      augment: bool = False, labels: np.ndarray | None = None, batch_size: int | None = None,
                      drop_last: bool = False, device: torch.device | str = "cpu",
                      permutation: Callable[[int, int, int], torch.Tensor] | None = None) -> InMemoryBatches:
    """The in-memory twin of `DataSplits.loader` (same arguments, same batches). `augment` picks the
    training transform, which serves here only when it is deterministic (no data.augment)."""
    permutation = permutation or epoch_permutation
    x, y = split_tensors(splits, split)
    if labels is None and split == "train" and splits.source.task == "classification":
        labels = splits.train_labels
    if labels is not None:
        y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    index = torch.arange(len(x)) if indices is None else torch.as_tensor(np.asarray(indices), dtype=torch.long)
    x, y = x[index], y[index]
    device = torch.device(device)
    transform = splits.train_transform if augment else splits.eval_transform
    return InMemoryBatches(x.to(device), y.to(device), index.to(device), batch_size or splits.batch_size,
                           order_seed, drop_last, permutation, transform)


def training_batches(splits, stage: str, order_seed: int, batch_size: int | None = None, drop_last: bool = False,
                     device: torch.device | str = "cpu") -> InMemoryBatches:
    """The in-memory twin of `DataSplits.training_loader`: the stage's samples and labels, shuffled per epoch."""
    if stage == "teacher":
        pool = "teacher_train" if splits.source.teacher_train is not None else "train"  # data.corruption
        return in_memory_batches(splits, pool, splits.teacher_indices, order_seed, augment=True,
                                 batch_size=batch_size, drop_last=drop_last, device=device)
    return in_memory_batches(splits, "train", splits.student_indices, order_seed, augment=True,
                             labels=splits.student_labels(), batch_size=batch_size, drop_last=drop_last, device=device)
