"""CIFAR ResNets of He et al. 2016 ("Deep Residual Learning", §4.2): depth 6n+2.

A 3x3 conv to 16 channels, three stages of n BasicBlocks at 16/32/64 channels (x `width`;
the first block of stages 2 and 3 has stride 2), global average pooling, a linear head.

- `shortcut: A` (default, as in the paper's CIFAR experiments): identity shortcuts; where the
  shape changes the input is subsampled by the stride and the new channels are zero-padded.
  They have no parameters, so the counts match the published ones (10 classes):
  ResNet-20 269,722 (0.27M), -32 464,154 (0.46M), -44 658,586 (0.66M), -56 853,018 (0.85M),
  -110 1,727,962 (1.7M).
- `shortcut: B`: a 1x1 projection + BatchNorm where the shape changes (the paper's option B,
  used by many KD code bases); 2,752 parameters more at width 1.

Names: `resnet20`, `resnet32`, `resnet44`, `resnet56`, `resnet110` (depth fixed by the name)
and `resnet_cifar` with a `depth` option (any 6n+2: 8, 14, 20, ... — paper 001's depth sweep).
Initialisation: He-normal (fan_out) convolutions, BatchNorm 1/0, PyTorch's default Linear
(the paper cites He et al. 2015 without the mode; torchvision's choice is used).
"""

from __future__ import annotations

from collections import OrderedDict

import torch.nn.functional as F
from torch import nn

from kdrun.errors import ConfigError
from kdrun.models.registry import ZooModel, register_model
from kdrun.models.options import image_input, init_conv_like_torchvision, one_of, option_key, scaled, width_multiplier
from kdrun.config.checks import is_whole_number

STAGE_CHANNELS = (16, 32, 64)
SHORTCUTS = ("A", "B")


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class PadShortcut(nn.Module):
    """Option A: subsample by the stride and zero-pad the extra channels (parameter-free)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.stride, extra = stride, out_channels - in_channels
        self.pad = (0, 0, 0, 0, extra // 2, extra - extra // 2)

    def forward(self, x):
        return F.pad(x[:, :, ::self.stride, ::self.stride], self.pad)


def make_shortcut(kind: str, in_channels: int, out_channels: int, stride: int, batchnorm: bool) -> nn.Module:
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    if kind == "A":
        return PadShortcut(in_channels, out_channels, stride)
    projection = [nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)]
    return nn.Sequential(*projection, nn.BatchNorm2d(out_channels)) if batchnorm else projection[0]


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN, add the shortcut, ReLU (post-activation, He et al. 2016a)."""

    preactivation = False

    def __init__(self, in_channels: int, out_channels: int, stride: int, shortcut: str):
        super().__init__()
        self.conv1, self.bn1 = conv3x3(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels)
        self.conv2, self.bn2 = conv3x3(out_channels, out_channels), nn.BatchNorm2d(out_channels)
        self.shortcut = make_shortcut(shortcut, in_channels, out_channels, stride, batchnorm=True)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def check_depth(model: str, depth) -> int:
    if not is_whole_number(depth) or depth < 8 or (depth - 2) % 6:
        raise ConfigError(f"{option_key('depth')}={depth!r} is not a CIFAR ResNet depth; allowed: 6n+2 with n >= 1 "
                          f"(8, 14, 20, 32, 44, 56, 110, ...) ({model})")
    return depth


def build_cifar_resnet(model: str, block: type[nn.Module], input_shape, num_classes: int, depth: int,
                       width: float, shortcut: str) -> ZooModel:
    """The 6n+2 network with `block` (post- or pre-activation); `model` names it in error messages."""
    channels = image_input(model, input_shape)[0]
    blocks_per_stage = (check_depth(model, depth) - 2) // 6
    width = width_multiplier(model, width)
    one_of(model, "shortcut", shortcut, SHORTCUTS)
    widths = [scaled(c, width) for c in STAGE_CHANNELS]
    stem: list[nn.Module] = [conv3x3(channels, widths[0])]
    if not block.preactivation:
        stem += [nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)]
    layers = OrderedDict(stem=nn.Sequential(*stem))
    in_channels = widths[0]
    for stage, out_channels in enumerate(widths, start=1):
        stage_blocks = []
        for index in range(blocks_per_stage):
            stride = 2 if stage > 1 and index == 0 else 1
            stage_blocks.append(block(in_channels, out_channels, stride, shortcut))
            in_channels = out_channels
        layers[f"stage{stage}"] = nn.Sequential(*stage_blocks)
    if block.preactivation:  # the last unit's output is not yet normalised
        layers["final_act"] = nn.Sequential(nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True))
    layers["pool"], layers["flatten"] = nn.AdaptiveAvgPool2d(1), nn.Flatten()
    features = nn.Sequential(layers)
    init_conv_like_torchvision(features)
    return ZooModel(features, nn.Linear(in_channels, num_classes))


def register_depth_presets(prefix: str, depths, block: type[nn.Module]) -> None:
    """`{prefix}{depth}` for each preset depth, and `{prefix}_cifar` with a `depth` option."""

    def generic(input_shape, num_classes: int, depth: int = 20, width: float = 1.0, shortcut: str = "A"):
        return build_cifar_resnet(f"{prefix}_cifar", block, input_shape, num_classes, depth, width, shortcut)

    register_model(f"{prefix}_cifar")(generic)

    def preset(depth: int):
        def build(input_shape, num_classes: int, width: float = 1.0, shortcut: str = "A"):
            return build_cifar_resnet(f"{prefix}{depth}", block, input_shape, num_classes, depth, width, shortcut)

        return build

    for depth in depths:
        register_model(f"{prefix}{depth}")(preset(depth))

register_depth_presets("resnet", (20, 32, 44, 56, 110), BasicBlock)
