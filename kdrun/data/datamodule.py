"""Datasets that return sample indices, the run's data splits, and one DataModule per stage."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from kdrun.config.checks import auto_switch
from kdrun.data.noise import apply_label_noise, check_label_noise_config
from kdrun.data.samplers import EpochSeededSampler
from kdrun.data.registry import load_source
from kdrun.data.sources import SourceSplits
from kdrun.data.subsets import check_subset_config, kappa_subsets, seeded_order
from kdrun.data.transforms import PRESETS, build_transforms
from kdrun.data.views import CropFlipViews, PooledViews, ViewStream, finite_views, student_views
from kdrun.errors import ConfigError
from kdrun.config.seeds import Seeds
from kdrun.config.checks import (check_choice, check_flag, check_fraction, check_mapping, check_number,
                                check_seed, check_whole_number)

# The label a student sees on paper 004's distill split. Any loss that reads it fails loudly
# (cross-entropy raises on a negative class) instead of silently using withheld labels.
WITHHELD_LABEL = -1
SPLIT_PRESETS = ("standard", "distill4")


def check_data_config(cfg) -> None:
    """Every `data.*` setting every source shares (configs/train.yaml); the source's own settings are
    checked by load_source, and what needs the data (kappa against the pool's size, the noise mapping
    against its classes) while the splits are built."""
    check_mapping(cfg, "data")
    check_whole_number(cfg.get("batch_size"), "data.batch_size", minimum=1)
    check_whole_number(cfg.get("num_workers", 0), "data.num_workers", minimum=0,
                       meaning="data-loader worker processes; 0 loads in the training process")
    check_choice(cfg.get("augment", "none"), "data.augment", (*PRESETS, None), meaning="null: none")
    check_flag(cfg.get("normalize", True), "data.normalize", meaning="per-channel normalisation of image sources")
    check_whole_number(cfg.get("crop_padding", 4), "data.crop_padding", minimum=0,
                       meaning="pixels of padding before the random crop")
    check_number(cfg.get("rotation_degrees", 15.0), "data.rotation_degrees", low=0,
                 meaning="cifar_rotation: the largest rotation")
    check_number(cfg.get("crop_min_scale", 0.08), "data.crop_min_scale", low=0, high=1, low_inclusive=False,
                 meaning="random_resized_crop: the smallest share of the image's area a crop keeps")
    pool = check_whole_number(cfg.get("view_pool"), "data.view_pool", minimum=1, allow_none=True,
                              meaning="views pre-drawn per training sample for the student (null: fresh draws)")
    check_seed(cfg.get("view_pool_seed", 0), "data.view_pool_seed", meaning="draws data.view_pool's views")
    if pool is not None and (cfg.get("augment", "none") or "none") == "none":
        raise ConfigError(f"data.view_pool={pool} pre-draws views of the augmentation, but data.augment=none has "
                          f"none; allowed: data.view_pool=null, or an augmentation ({', '.join(PRESETS[1:])})")
    auto_switch(cfg, "fast_path", "data")
    check_subset_config(cfg)
    check_choice(cfg.get("split", "standard"), "data.split", SPLIT_PRESETS)
    check_fraction(cfg.get("distill_fraction", 0.5), "data.distill_fraction", False, False,
                   meaning="distill4: the share of the training pool that forms the distill part")
    check_whole_number(cfg.get("distill_size"), "data.distill_size", minimum=1, allow_none=True,
                       meaning="distill4: the distill part's number of samples (null: data.distill_fraction)")
    check_label_noise_config(cfg.get("label_noise"))


class IndexedDataset(Dataset):
    """Yields (x, y, index): the index within the split identifies a sample in per-sample
    outputs and in cached teacher outputs, whatever subset or sampler sits on top.
    `labels` replaces the source's labels (label noise, withheld labels)."""

    def __init__(self, dataset: Dataset, transform: Callable | None = None, labels: np.ndarray | None = None):
        self.dataset, self.transform, self.labels = dataset, transform, labels

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return self._finish(*self.dataset[index], index)

    def _finish(self, x, y, index: int):
        if self.transform is not None:
            x = self.transform(x)
        if self.labels is not None:
            y = int(self.labels[index])
        return x, y, index


class ViewedDataset(IndexedDataset):
    """An IndexedDataset whose training samples get the view their stream draws: keys are (dataset index,
    epoch), so loader workers need no state to agree with the training process on an epoch's views."""

    def __init__(self, dataset: Dataset, views: CropFlipViews | PooledViews, stream: ViewStream, finish: Callable | None,
                 labels: np.ndarray | None = None):
        super().__init__(dataset, finish, labels)
        self.views, self.stream = views, stream

    def __getitem__(self, key):
        index, epoch = key
        x, y = self.dataset[index]
        return self._finish(self.views.apply(x, int(self.stream.table(epoch)[index]), index), y, index)


class KeyedSubset(Dataset):
    """A subset for (position, epoch) keys: the position picks the dataset index, the epoch passes through."""

    def __init__(self, dataset: Dataset, indices: list[int]):
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key):
        position, epoch = key
        return self.dataset[(self.indices[position], epoch)]


@dataclass
class DataSplits:
    """Everything a run needs to know about its data, built once before any training."""

    source: SourceSplits
    teacher_indices: np.ndarray  # into the training pool
    student_indices: np.ndarray
    train_labels: np.ndarray  # labels of the training pool as trained on (after label noise)
    noise_mask: np.ndarray  # True where label noise flipped the label
    student_labels_withheld: bool
    batch_size: int
    num_workers: int
    train_transform: Callable | None = None
    eval_transform: Callable | None = None
    world_size: int = 1  # training processes (DDP ranks): each trains on 1/world_size of every epoch
    # the views each stage's training samples get (kdrun.data.views), None where torchvision draws them afresh:
    # the preset's finite view set for both stages, or for the student data.view_pool's pre-drawn views
    views: CropFlipViews | PooledViews | None = None  # the student's
    teacher_views: CropFlipViews | None = None
    # whole splits gathered into tensors by the fast data path, once per run (kdrun.data.in_memory)
    gathered: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def build(cls, cfg, seeds: Seeds) -> "DataSplits":
        check_data_config(cfg)
        source = load_source(cfg)
        train_transform, eval_transform = build_transforms(cfg, source)
        noise = cfg.get("label_noise") or {}
        train_labels, noise_mask = apply_label_noise(
            source.train.targets, source.num_classes, noise.get("kind", "none"), noise.get("fraction", 0.0),
            noise.get("seed", 0), noise.get("mapping"))
        preset = cfg.get("split", "standard")
        if source.task == "next_token":
            check_language_model_data(cfg, source)
        teacher, student = cls.partition(cfg, source, seeds)
        image_size = source.input_shape[-1] if source.image else None
        return cls(source, teacher, student, train_labels, noise_mask, preset == "distill4",
                   int(cfg.batch_size), int(cfg.num_workers), train_transform, eval_transform,
                   views=student_views(cfg, image_size), teacher_views=finite_views(cfg, image_size))

    @staticmethod
    def partition(cfg, source: SourceSplits, seeds: Seeds) -> tuple[np.ndarray, np.ndarray]:
        """(teacher's, student's) indices into the training pool; the student's kappa subset follows seeds.subset."""
        if cfg.get("split", "standard") == "standard":
            return kappa_subsets(
                # a window has no class: "at least one sample per class" means one window
                source.train.targets, source.num_classes if source.task == "classification" else 1,
                teacher_size=cfg.teacher_size, kappa=cfg.kappa, student_size=cfg.student_size,
                pool_seed=cfg.pool_seed, subset_seed=seeds.subset, stratified=cfg.stratified,
            )
        return distill4_partition(source.train.targets, cfg)  # distill4 (check_data_config allows no other)

    @property
    def num_classes(self) -> int:
        return self.source.num_classes

    def teacher_indices_digest(self) -> str:
        return hashlib.sha256(np.ascontiguousarray(self.teacher_indices, dtype=np.int64).tobytes()).hexdigest()

    def view_stream(self, order_seed: int, split: str = "train", views=None) -> ViewStream | None:
        """The views a training stage with `order_seed` draws over `split`'s pool from `views` (default: the
        student's), or None without a view set."""
        views = views or self.views
        if views is None:
            return None
        return ViewStream(order_seed, len(self.source.split(split)), views.count)

    def loader(self, split: str, indices: np.ndarray | None = None, order_seed: int | None = None,
               augment: bool = False, labels: np.ndarray | None = None, batch_size: int | None = None,
               drop_last: bool = False, shard: tuple[int, int] | None = None, pad: bool = True,
               views: CropFlipViews | PooledViews | None = None) -> DataLoader:
        """A loader over `split` (optionally restricted to `indices`), shuffled iff order_seed is given.

        `augment` selects the training transform; the training pool yields the labels trained on
        (after label noise) unless `labels` replaces them. `batch_size` defaults to data.batch_size.
        `shard=(rank, world_size)` keeps one DDP rank's share, padded to equal shares iff `pad`. An augmented,
        ordered loader with `views` gives each sample its view from the stage's stream (kdrun.data.views)."""
        if labels is None and split in ("train", "teacher_train") and self.source.task == "classification":
            labels = self.train_labels
        transform = self.train_transform if augment else self.eval_transform
        viewed = augment and order_seed is not None and views is not None
        base = self.source.split(split).dataset
        if viewed:  # each sample's view from the stage's stream, then the deterministic conversion
            dataset: Dataset = ViewedDataset(base, views, self.view_stream(order_seed, split, views),
                                             self.eval_transform, labels)
        else:
            dataset = IndexedDataset(base, transform, labels)
        if indices is not None:
            dataset = (KeyedSubset if viewed else Subset)(dataset, indices.tolist())
        rank, replicas = shard or (0, 1)
        # the order of an epoch depends on (order_seed, epoch) only: a resumed run replays it exactly
        sampler = (EpochSeededSampler(len(dataset), order_seed, replicas, rank, pad, keyed=viewed)
                   if order_seed is not None or replicas > 1 else None)
        return DataLoader(
            dataset, batch_size=batch_size or self.batch_size, sampler=sampler,
            num_workers=self.num_workers, persistent_workers=self.num_workers > 0, drop_last=drop_last,
        )

    def training_loader(self, stage: str, order_seed: int, batch_size: int | None = None,
                        drop_last: bool = False, shard: tuple[int, int] | None = None) -> DataLoader:
        """The teacher's or the student's training samples, augmented, in a seeded order."""
        if stage == "teacher":
            pool = "teacher_train" if self.source.teacher_train is not None else "train"  # data.corruption
            return self.loader(pool, self.teacher_indices, order_seed, augment=True, batch_size=batch_size,
                               drop_last=drop_last, shard=shard, views=self.teacher_views)
        return self.loader("train", self.student_indices, order_seed, augment=True, labels=self.student_labels(),
                           batch_size=batch_size, drop_last=drop_last, shard=shard, views=self.views)

    def student_labels(self):
        """The labels the student trains with in place of the pool's: WITHHELD_LABEL under distill4, else None."""
        return np.full(len(self.train_labels), WITHHELD_LABEL) if self.student_labels_withheld else None

    def steps_per_epoch(self, stage: str, batch_size: int | None = None, drop_last: bool = False) -> int:
        size = len(self.teacher_indices if stage == "teacher" else self.student_indices)
        size = -(-size // self.world_size)  # one rank's padded share (kdrun.data.samplers)
        batch_size = batch_size or self.batch_size
        if drop_last:
            if size < batch_size:
                raise ConfigError(f"{stage}: batch_size={batch_size} with drop_last=true leaves no batch from its "
                                  f"{size} training samples; allowed: batch_size <= {size} or drop_last=false")
            return size // batch_size
        return -(-size // batch_size)  # the last, partial batch is kept


def check_language_model_data(cfg, source: SourceSplits) -> None:
    """What a next-token source cannot do: its samples are windows of one text, without a class to
    stratify by or a label to flip or withhold."""
    noise = (cfg.get("label_noise") or {}).get("kind", "none")
    for key, value, allowed in (("stratified", bool(cfg.get("stratified", False)), False),
                                ("label_noise.kind", noise, "none"), ("split", cfg.get("split", "standard"), "standard")):
        if value != allowed:
            raise ConfigError(f"data.{key}={value} does not apply to data.source={cfg.source} (next-token windows have "
                              f"no class); allowed: {allowed}")


def distill4_partition(targets: np.ndarray, cfg) -> tuple[np.ndarray, np.ndarray]:
    """Paper 004's split of the training pool: the teacher's `train` part and the student's
    `distill` part (a seeded, stratified `distill_fraction`); the source's validation split
    serves as `dev` and its test split as `test`."""
    if cfg.kappa != 1.0 or cfg.student_size is not None or cfg.teacher_size is not None:
        raise ConfigError(
            f"data.split=distill4 fixes the teacher's and the student's samples (train and distill parts); "
            f"got data.kappa={cfg.kappa}, data.teacher_size={cfg.teacher_size}, data.student_size={cfg.student_size}; "
            f"allowed: kappa=1.0 and both sizes null (use data.distill_fraction)"
        )
    fraction = cfg.get("distill_fraction", 0.5)  # in (0, 1): check_data_config
    order = seeded_order(targets, cfg.pool_seed, stratified=True)
    size = cfg.get("distill_size")
    if size is not None and size >= len(targets):
        raise ConfigError(f"data.distill_size={size} leaves the teacher no sample of the {len(targets)} in the training "
                          f"pool; allowed: 1..{len(targets) - 1}")
    cut = len(targets) - (int(size) if size is not None else round(float(fraction) * len(targets)))
    return np.sort(order[:cut]), np.sort(order[cut:])


class StageDataModule(L.LightningDataModule):
    """The teacher's or the student's view of the splits: its own training subset and order."""

    def __init__(self, splits: DataSplits, stage: str, order_seed: int, batch_size: int | None = None,
                 drop_last: bool = False, fast_path: bool = False):
        super().__init__()
        self.splits, self.stage, self.order_seed = splits, stage, order_seed
        self.batch_size, self.drop_last = batch_size, drop_last
        self.fast_path = fast_path  # in-memory batches (kdrun.data.in_memory): same batches, no collation

    def _in_memory(self) -> bool:
        # one process only: the in-memory batches do not shard across DDP ranks
        return self.fast_path and (self.trainer is None or self.trainer.world_size == 1)

    def _device(self):
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        return device if device.type == "cuda" else torch.device("cpu")

    def train_dataloader(self) -> DataLoader:
        if self._in_memory():
            from kdrun.data.in_memory import training_batches

            return training_batches(self.splits, self.stage, self.order_seed, self.batch_size, self.drop_last,
                                    self._device())
        return self.splits.training_loader(self.stage, self.order_seed, self.batch_size, self.drop_last,
                                           self._shard())

    def val_dataloader(self) -> DataLoader:
        if self._in_memory():
            from kdrun.data.in_memory import in_memory_batches

            return in_memory_batches(self.splits, "val", device=self._device())
        return self.splits.loader("val", shard=self._shard(), pad=False)  # torchmetrics reduce across ranks

    def _shard(self) -> tuple[int, int] | None:
        """(rank, world size) under DDP, where the step budget was planned for `splits.world_size` ranks."""
        if self.trainer is None or self.trainer.world_size == 1:
            return None
        if self.trainer.world_size != self.splits.world_size:
            raise RuntimeError(f"{self.trainer.world_size} processes train, but the step budget was planned for "
                               f"{self.splits.world_size} (kdrun.engine.distributed.training_world_size)")
        return self.trainer.global_rank, self.trainer.world_size

    def test_dataloader(self) -> DataLoader:
        return self.splits.loader("test")
