"""Augmentation presets (torchvision transforms v2) and per-dataset normalisation.

Image sources yield uint8 tensors (C, H, W). Training loaders apply the preset's random
augmentation, then conversion to float and normalisation; evaluation loaders (validation,
test, and the per-sample outputs on the training samples) apply only the conversion and
normalisation. Vector and float sources (digits, synthetic) are used as they are.

Presets (`data.augment`):
- none: no augmentation;
- cifar_standard: random crop with padding (default 4) and horizontal flip;
- cifar_rotation: cifar_standard plus random rotation up to 15 degrees (paper 002's CIFAR-100 recipe);
- randaugment: cifar_standard plus RandAugment with torchvision's defaults (2 ops, magnitude 9),
  as paper 003 uses "PyTorch defaults"; the paper does not say whether crops and flips stay.
- random_resized_crop: the ImageNet recipe, a random crop of `data.crop_min_scale`..1 of the area (aspect
  3/4..4/3) resized to the image size, and a horizontal flip.

The crops follow the image size: `data.crop_padding` (4 for 32x32 images; 8 in the 64x64 Tiny-ImageNet
preset) pads before cifar_standard's crop.
"""

from __future__ import annotations

from typing import Callable

import torch
from torchvision.transforms import v2

from kdrun.data.sources import SourceSplits
from kdrun.errors import ConfigError

PRESETS = ("none", "cifar_standard", "cifar_rotation", "randaugment", "random_resized_crop")


def augmentation(preset: str, image_size: int, padding: int = 4, rotation: float = 15.0,
                 min_scale: float = 0.08) -> list:
    if preset not in PRESETS:
        raise ConfigError(f"data.augment={preset!r} is unknown; allowed: {', '.join(PRESETS)}")
    if preset == "none":
        return []
    if preset == "random_resized_crop":
        return [v2.RandomResizedCrop(image_size, scale=(min_scale, 1.0), antialias=True), v2.RandomHorizontalFlip()]
    ops = [v2.RandomCrop(image_size, padding=padding), v2.RandomHorizontalFlip()]
    if preset == "cifar_rotation":
        ops.append(v2.RandomRotation(rotation))
    if preset == "randaugment":
        ops.append(v2.RandAugment())
    return ops


def build_transforms(cfg, source: SourceSplits) -> tuple[Callable | None, Callable | None]:
    """(training transform, evaluation transform) for a source; None means use x as it is."""
    preset = cfg.get("augment", "none") or "none"
    if not source.image:
        if preset != "none":
            raise ConfigError(
                f"data.augment={preset!r} needs an image source; data.source={cfg.source!r} yields vectors "
                f"or float arrays; allowed here: none"
            )
        return None, None
    finish = [v2.ToDtype(torch.float32, scale=True)]
    if cfg.get("normalize", True) and source.mean is not None:
        finish.append(v2.Normalize(mean=list(source.mean), std=list(source.std)))
    ops = augmentation(preset, source.input_shape[-1], cfg.get("crop_padding", 4), cfg.get("rotation_degrees", 15.0),
                       cfg.get("crop_min_scale", 0.08))
    return v2.Compose(ops + finish), v2.Compose(finish)


def augments(cfg) -> bool:
    """Whether training inputs are random (then cached teacher outputs would be stale)."""
    return (cfg.get("augment", "none") or "none") != "none"
