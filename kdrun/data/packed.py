"""A pack's batches: every member's own loader (its subset, order, labels and views, exactly as its separate
run's StageDataModule builds them), stepped together and stacked into (K, B, ...) inputs, (K, B) labels and
(K, B) sample indices for kdrun.engine.packed_module.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import lightning as L
import torch

from kdrun.data.datamodule import DataSplits, StageDataModule


def _set_epoch(loader, epoch: int) -> None:
    """What Lightning does to a loader before each epoch (its sampler's, or its batch sampler's, set_epoch)."""
    seen = set()
    for sampler in (getattr(loader, "sampler", None), getattr(getattr(loader, "batch_sampler", None), "sampler", None)):
        if sampler is not None and id(sampler) not in seen and callable(getattr(sampler, "set_epoch", None)):
            seen.add(id(sampler))
            sampler.set_epoch(epoch)


class _EpochFanout:
    """Stands where a loader's sampler stands, so Lightning's per-epoch `set_epoch` reaches every member's."""

    def __init__(self, loaders: Sequence):
        self.loaders = loaders

    def set_epoch(self, epoch: int) -> None:
        for loader in self.loaders:
            _set_epoch(loader, epoch)


class StackedBatches:
    """The members' loaders zipped: batch i is every member's batch i, stacked."""

    def __init__(self, loaders: Sequence):
        self.loaders = list(loaders)
        lengths = {len(loader) for loader in self.loaders}
        if len(lengths) != 1:
            raise ValueError(f"a pack's members must have as many batches per epoch; they have {sorted(lengths)}")
        self.sampler = _EpochFanout(self.loaders)
        self.batch_sampler = None

    def __len__(self) -> int:
        return len(self.loaders[0])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        for batches in zip(*self.loaders):
            sizes = {len(batch[2]) for batch in batches}
            if len(sizes) != 1:
                raise ValueError(f"a pack's members drew batches of {sorted(sizes)} samples at one step")
            yield tuple(torch.stack([batch[part] for batch in batches]) for part in range(3))


class PackedDataModule(L.LightningDataModule):
    """The members' StageDataModules (each with its own splits and order seed), their batches stacked."""

    def __init__(self, splits: Sequence[DataSplits], order_seeds: Sequence[int], batch_size: int, drop_last: bool,
                 fast_path: bool):
        super().__init__()
        self.members = [StageDataModule(member_splits, "student", seed, batch_size, drop_last, fast_path)
                        for member_splits, seed in zip(splits, order_seeds)]

    def _attached(self) -> list[StageDataModule]:
        for member in self.members:
            member.trainer = self.trainer  # the device and world size each member's loader follows
        return self.members

    def train_dataloader(self) -> StackedBatches:
        return StackedBatches([member.train_dataloader() for member in self._attached()])

    def val_dataloader(self) -> StackedBatches:
        return StackedBatches([member.val_dataloader() for member in self._attached()])
