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

Presets with unbounded parameters (rotation, RandAugment) keep torchvision's own random draws, unless
`data.view_pool=V` pre-draws V views per sample for the student (`PooledViews`): view v of sample i is
the preset applied under a generator seeded by (data.view_pool_seed, i, v), and each epoch picks one of
the V uniformly. That is a change of the augmentation distribution (V fixed draws per image instead of a
fresh one each epoch), off by default; it makes the teacher's outputs cacheable per view. The teacher's
own training keeps the preset's fresh draws.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from kdrun.data.transforms import augmentation

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

    def apply(self, image: torch.Tensor, view: int, index: int | None = None) -> torch.Tensor:
        """The view of one image (C, H, W), with torchvision's own pad, crop and flip (the same for every sample)."""
        top, left, flipped = self.params(view)
        out = TF.crop(TF.pad(image, [self.padding]), top, left, self.size, self.size)
        return TF.horizontal_flip(out) if flipped else out

    def apply_batch(self, images: torch.Tensor, view: int, indices=None) -> torch.Tensor:
        """One view of a batch (B, C, H, W): the zero padding, crop and flip as slicing, equal to `apply` per image."""
        top, left, flipped = self.params(view)
        padded = torch.nn.functional.pad(images, [self.padding] * 4)
        out = padded[..., top:top + self.size, left:left + self.size]
        return out.flip(-1) if flipped else out.contiguous()

    def describe(self) -> dict:
        return {"kind": "crop_flip", "size": self.size, "padding": self.padding, "views": self.count}


class PooledViews:
    """V views per sample pre-drawn from a preset with unbounded parameters (rotation, RandAugment): view v
    of sample i is the preset's random transform run under the global generator seeded by (seed, i, v), so
    it is a pure function of those three, in any process. torchvision draws every parameter from that
    generator; the caller's generator state is restored afterwards."""

    def __init__(self, preset: str, ops: list, count: int, seed: int, settings: dict):
        self.preset, self.count, self.seed, self.settings = preset, int(count), int(seed), dict(settings)
        self._transform = v2.Compose(ops)

    def apply(self, image: torch.Tensor, view: int, index: int | None = None) -> torch.Tensor:
        if index is None:
            raise ValueError("a pooled view depends on the sample: pass its dataset index")
        if not 0 <= view < self.count:
            raise ValueError(f"view {view} outside 0..{self.count - 1}")
        state = np.random.SeedSequence([self.seed, int(index), int(view), 0x706F6F6C]).generate_state(1)[0]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(state))
            return self._transform(image)

    def apply_batch(self, images: torch.Tensor, view: int, indices) -> torch.Tensor:
        return torch.stack([self.apply(image, view, int(index)) for image, index in zip(images, indices)])

    def describe(self) -> dict:
        return {"kind": "pool", "preset": self.preset, "views": self.count, "seed": self.seed, **self.settings}


def finite_views(data_cfg, image_size: int | None) -> CropFlipViews | None:
    """The view set of the configured augmentation, or None when it has none (no augmentation, or
    parameters drawn from a continuum)."""
    preset = data_cfg.get("augment", "none") or "none"
    if preset not in FINITE_PRESETS or image_size is None:
        return None
    return CropFlipViews(int(image_size), int(data_cfg.get("crop_padding", 4)))


def student_views(data_cfg, image_size: int | None) -> CropFlipViews | PooledViews | None:
    """The views the student trains on: `data.view_pool` pre-drawn views of any preset, else the preset's
    finite view set, else None (torchvision's fresh draws)."""
    pool = data_cfg.get("view_pool")
    if pool is None or image_size is None:
        return finite_views(data_cfg, image_size)
    preset = data_cfg.get("augment", "none") or "none"
    padding, rotation = int(data_cfg.get("crop_padding", 4)), float(data_cfg.get("rotation_degrees", 15.0))
    min_scale = float(data_cfg.get("crop_min_scale", 0.08))
    settings = {"size": int(image_size), "padding": padding}
    if preset == "cifar_rotation":
        settings["rotation"] = rotation
    if preset == "random_resized_crop":
        settings = {"size": int(image_size), "min_scale": min_scale}
    return PooledViews(preset, augmentation(preset, int(image_size), padding, rotation, min_scale), int(pool),
                       int(data_cfg.get("view_pool_seed", 0)), settings)


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
