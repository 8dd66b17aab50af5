"""Augmentation presets and normalisation on uint8 image tensors."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from torchvision.transforms import v2

from kdrun.data.sources import SourceSplits, Split
from kdrun.data.transforms import PRESETS, augmentation, build_transforms
from kdrun.errors import ConfigError


def image_source():
    dummy = Split(dataset=None, targets=None)
    return SourceSplits(dummy, dummy, dummy, num_classes=10, input_shape=(3, 32, 32), image=True,
                        mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0))


def cfg(**values):
    return OmegaConf.create({"source": "test", "augment": "none", "normalize": True, **values})


def test_eval_transform_scales_and_normalises():
    _, evaluate = build_transforms(cfg(), image_source())
    image = torch.full((3, 32, 32), 255, dtype=torch.uint8)
    out = evaluate(image)
    assert out.dtype == torch.float32
    assert out[:, 0, 0].tolist() == pytest.approx([(1 - 0.5) / 0.5, (1 - 0.25) / 0.25, 1.0])


@pytest.mark.parametrize("preset", PRESETS)
def test_each_preset_keeps_shape_and_is_random_only_when_augmenting(preset):
    train, evaluate = build_transforms(cfg(augment=preset), image_source())
    torch.manual_seed(0)
    image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    outs = [train(image) for _ in range(4)]
    assert all(o.shape == (3, 32, 32) for o in outs)
    differs = any(not torch.equal(outs[0], o) for o in outs[1:])
    assert differs == (preset != "none")
    assert torch.equal(evaluate(image), evaluate(image))


def test_presets_contain_the_documented_operations():
    assert augmentation("none", 32) == []
    standard = [type(op) for op in augmentation("cifar_standard", 32)]
    assert standard == [v2.RandomCrop, v2.RandomHorizontalFlip]
    assert [type(op) for op in augmentation("cifar_rotation", 32)][-1] is v2.RandomRotation
    assert [type(op) for op in augmentation("randaugment", 32)][-1] is v2.RandAugment
    assert augmentation("cifar_standard", 32, padding=2)[0].padding == [2, 2, 2, 2]


def test_augmenting_a_vector_source_is_refused():
    vector = SourceSplits(None, None, None, num_classes=2, input_shape=(10,))
    assert build_transforms(cfg(), vector) == (None, None)
    with pytest.raises(ConfigError, match="data.augment='cifar_standard' needs an image source"):
        build_transforms(cfg(augment="cifar_standard"), vector)
    with pytest.raises(ConfigError, match="allowed: none, cifar_standard"):
        augmentation("mixup", 32)


def test_random_resized_crop_keeps_the_size_and_draws_crops_of_the_configured_scale():
    ops = augmentation("random_resized_crop", 64, min_scale=0.35)
    assert isinstance(ops[0], v2.RandomResizedCrop) and ops[0].scale == (0.35, 1.0) and tuple(ops[0].size) == (64, 64)
    assert isinstance(ops[1], v2.RandomHorizontalFlip)
    train, _ = build_transforms(cfg(augment="random_resized_crop", crop_min_scale=0.5), image_source())
    torch.manual_seed(0)
    image = torch.arange(3 * 32 * 32, dtype=torch.float32).reshape(3, 32, 32).div(3 * 32 * 32 / 255).to(torch.uint8)
    outs = [train(image) for _ in range(4)]
    assert all(out.shape == (3, 32, 32) for out in outs)
    assert any(not outs[0].equal(out) for out in outs[1:])  # random crops


def test_crop_min_scale_is_checked():
    from kdrun.data.datamodule import check_data_config

    bad = OmegaConf.create({"batch_size": 8, "augment": "random_resized_crop", "crop_min_scale": 1.5})
    with pytest.raises(ConfigError, match=r"data.crop_min_scale"):
        check_data_config(bad)
