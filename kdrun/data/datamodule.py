"""Datasets that return sample indices, the run's data splits, and one DataModule per stage."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from kdrun.data.sources import SourceSplits, load_source
from kdrun.data.subsets import kappa_subsets
from kdrun.seeds import Seeds


class IndexedDataset(Dataset):
    """Yields (x, y, index): the index within the split identifies a sample in per-sample
    outputs and in cached teacher outputs, whatever subset or sampler sits on top."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        x, y = self.dataset[index]
        return x, y, index


@dataclass
class DataSplits:
    """Everything a run needs to know about its data, built once before any training."""

    source: SourceSplits
    teacher_indices: np.ndarray  # into the training pool
    student_indices: np.ndarray
    batch_size: int
    num_workers: int

    @classmethod
    def build(cls, cfg, seeds: Seeds) -> "DataSplits":
        source = load_source(cfg)
        teacher, student = kappa_subsets(
            source.train.targets, source.num_classes,
            teacher_size=cfg.teacher_size, kappa=cfg.kappa, student_size=cfg.student_size,
            pool_seed=cfg.pool_seed, subset_seed=seeds.subset, stratified=cfg.stratified,
        )
        return cls(source, teacher, student, int(cfg.batch_size), int(cfg.num_workers))

    @property
    def num_classes(self) -> int:
        return self.source.num_classes

    def teacher_indices_digest(self) -> str:
        return hashlib.sha256(np.ascontiguousarray(self.teacher_indices, dtype=np.int64).tobytes()).hexdigest()

    def loader(self, split: str, indices: np.ndarray | None = None, order_seed: int | None = None) -> DataLoader:
        """A loader over `split` (optionally restricted to `indices`), shuffled iff order_seed is given."""
        dataset: Dataset = IndexedDataset(getattr(self.source, split).dataset)
        if indices is not None:
            dataset = Subset(dataset, indices.tolist())
        generator = None if order_seed is None else torch.Generator().manual_seed(int(order_seed))
        return DataLoader(
            dataset, batch_size=self.batch_size, shuffle=order_seed is not None, generator=generator,
            num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
        )

    def steps_per_epoch(self, stage: str) -> int:
        size = len(self.teacher_indices if stage == "teacher" else self.student_indices)
        return -(-size // self.batch_size)  # the last, partial batch is kept


class StageDataModule(L.LightningDataModule):
    """The teacher's or the student's view of the splits: its own training subset and order."""

    def __init__(self, splits: DataSplits, stage: str, order_seed: int):
        super().__init__()
        self.splits, self.stage, self.order_seed = splits, stage, order_seed

    def train_dataloader(self) -> DataLoader:
        indices = self.splits.teacher_indices if self.stage == "teacher" else self.splits.student_indices
        return self.splits.loader("train", indices, order_seed=self.order_seed)

    def val_dataloader(self) -> DataLoader:
        return self.splits.loader("val")

    def test_dataloader(self) -> DataLoader:
        return self.splits.loader("test")
