"""Augmentation with a finite set of views, drawn per sample by a seeded stream.

`data.augment=cifar_standard` (a random crop of the zero-padded image and a horizontal flip) has
(2p + 1)^2 x 2 distinct outcomes per image: 162 for CIFAR's 4-pixel padding. Here each outcome is a
numbered *view*, and which view a sample gets in an epoch is a pure function of (the stage's order
seed, the epoch, the sample's dataset index): `ViewStream`. Training then sees the distribution
torchvision's RandomCrop + RandomHorizontalFlip draw from (every view equally likely, independently
per sample and epoch), and

- the teacher's output for a view can be cached by (sample index, view) and shared by every student
  of the teacher (kdrun.teachers.view_cache): the student gets exactly the view it would have seen
  online, with the teacher's exact output for it;
- students that differ only in the loss see the same views (paired seeds), and a resumed run
  replays them (the stream has no state to save);
- loader worker processes need no shared random state: a batch's keys carry the epoch.

Presets with unbounded parameters (rotation, RandAugment) keep torchvision's own random draws.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

# presets whose random parameters are all discrete (kdrun.data.transforms.PRESETS)
FINITE_PRESETS = ("cifar_standard",)


@dataclass(frozen=True)
class CropFlipViews:
    """The views of a random crop (of `size`, from the image padded by `padding` zeros on each side)
    followed by a random horizontal flip. View v = (top * (2p+1) + left) * 2 + flip."""

    size: int
    padding: int

    @property
    def offsets(self) -> int:
        return 2 * self.padding + 1

    @property
    def count(self) -> int:
        return self.offsets ** 2 * 2

    def params(self, view: int) -> tuple[int, int, bool]:
        """(top, left, flipped) of view `view`, in the padded image's coordinates."""
        if not 0 <= view < self.count:
            raise ValueError(f"view {view} outside 0..{self.count - 1}")
        position, flip = divmod(int(view), 2)
        top, left = divmod(position, self.offsets)
        return top, left, bool(flip)

    def apply(self, image: torch.Tensor, view: int) -> torch.Tensor:
        """The view of one image (C, H, W), with torchvision's own pad, crop and flip."""
        top, left, flipped = self.params(view)
        out = TF.crop(TF.pad(image, [self.padding]), top, left, self.size, self.size)
        return TF.horizontal_flip(out) if flipped else out

    def describe(self) -> dict:
        return {"kind": "crop_flip", "size": self.size, "padding": self.padding, "views": self.count}


def finite_views(data_cfg, image_size: int | None) -> CropFlipViews | None:
    """The view set of the configured augmentation, or None when it has none (no augmentation, or
    parameters drawn from a continuum)."""
    preset = data_cfg.get("augment", "none") or "none"
    if preset not in FINITE_PRESETS or image_size is None:
        return None
    return CropFlipViews(int(image_size), int(data_cfg.get("crop_padding", 4)))


class ViewStream:
    """Which view each sample of a pool gets in each epoch: uniform over the view set, a pure function
    of (seed, epoch, dataset index). The table of an epoch is drawn once (pool size x 8 bytes)."""

    def __init__(self, seed: int, pool_size: int, count: int):
        self.seed, self.pool_size, self.count = int(seed), int(pool_size), int(count)
        self._epoch, self._table = None, None

    def table(self, epoch: int) -> torch.Tensor:
        """The view of every sample of the pool in `epoch` (int64, indexed by dataset index)."""
        if self._epoch != epoch:
            # "views" keeps the stream apart from the batch order drawn from the same seed
            state = np.random.SeedSequence([self.seed, int(epoch), 0x76696577]).generate_state(1)[0]
            generator = torch.Generator().manual_seed(int(state))
            self._table = torch.randint(self.count, (self.pool_size,), generator=generator)
            self._epoch = epoch
        return self._table

    def views(self, epoch: int, index: torch.Tensor) -> torch.Tensor:
        """The views of the samples `index` (dataset indices) in `epoch`, on index's device."""
        table = self.table(epoch)
        if table.device != index.device:
            table = self._table = table.to(index.device)
        return table[index]
