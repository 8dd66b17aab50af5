"""Anti-aliased downsampling (BlurPool, Zhang 2019) for the torchvision ResNets: `resnet18(blurpool=true)`.

Paper 003's ImageNet ResNet-18 student follows the FFCV recipe, which blurs the input of every strided
convolution with at least 16 input channels (a 3x3 binomial filter, stride 1, zero padding) and leaves the
convolution as it is; the stem (3 input channels) is not blurred. The blur is kornia's `BlurPool2D` at
stride 1. It has no parameters (its kernel is a non-persistent buffer), so the weights' names gain only a
`.conv` level: `layer2.0.conv1.weight` becomes `layer2.0.conv1.conv.weight`.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from kdrun.errors import ConfigError

MIN_CHANNELS = 16  # FFCV: narrower strided convolutions (the stem) stay as they are


def blurred(conv: nn.Conv2d) -> nn.Sequential:
    try:
        from kornia.filters import BlurPool2D
    except ImportError as error:
        raise ConfigError("model.blurpool=true needs kornia (pip install kornia)") from error
    return nn.Sequential(OrderedDict(blur=BlurPool2D(kernel_size=3, stride=1), conv=conv))


def add_blurpool(module: nn.Module) -> int:
    """Blur the input of every strided convolution of `module` with >= MIN_CHANNELS inputs; returns how many."""
    count = 0
    for name, child in module.named_children():
        if isinstance(child, nn.Conv2d) and max(child.stride) > 1 and child.in_channels >= MIN_CHANNELS:
            setattr(module, name, blurred(child))
            count += 1
        else:
            count += add_blurpool(child)
    return count
